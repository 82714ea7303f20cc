"""What the model is told about one statement: normalised text and schema facts, nothing else.

The statement is re-printed by the parser without comments or constants (auditor.llm.sanitize); each table
is described by its columns and types, its indexes (their constants masked too), its estimated row count and
size; the plan is the outline of node types, relations and indexes, without conditions (which would carry the
sampled values). Column statistics add only ``n_distinct`` and ``null_frac`` unless
``llm.share_column_stats`` is on, when the most common values (real data) are added too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from pg_architect.auditor.catalog import Snapshot, TableInfo
from pg_architect.auditor.llm.sanitize import NotShareable, statement_for_model
from pg_architect.auditor.measure import Plan

_QUOTED_VALUE = re.compile(r"'(?:[^']|'')*'")
_DOUBLE_QUOTED = re.compile(r'"([^"]*)"')
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def scrub_note(text: str, limit: int = 300) -> str:
    """One of our own notes (which may quote a server message holding a value) with quoted values masked."""
    masked = _QUOTED_VALUE.sub("'?'", text)
    masked = _DOUBLE_QUOTED.sub(lambda m: m.group(0) if _IDENTIFIER.match(m.group(1)) else '"?"', masked)
    return masked[:limit]


@dataclasses.dataclass(frozen=True, slots=True)
class StatementContext:
    statement: str  # re-printed: no comments, no constants
    kind: str
    tables: tuple[dict[str, Any], ...]
    plan: str | None
    calls: int
    mean_ms: float
    parse_explanation: str
    advisor: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Columns described per table; a wider table is described by its first ones (the count says how many).
MAX_COLUMNS = 80


def _table_facts(catalog: Snapshot, table: TableInfo, share_stats: bool) -> dict[str, Any]:
    columns: list[dict[str, Any]] = []
    for name, type_name in list(zip(table.columns, table.column_types, strict=False))[:MAX_COLUMNS]:
        column: dict[str, Any] = {"name": name, "type": type_name}
        stats = catalog.column_stats(table.schema, table.name, name)
        if stats is not None:
            column["n_distinct"] = stats.n_distinct
            column["null_frac"] = round(stats.null_frac, 4)
            if share_stats and stats.most_common_vals:
                column["most_common_values"] = list(stats.most_common_vals[:5])
        columns.append(column)
    indexes = []
    for index in catalog.indexes([table.oid]):
        try:
            definition = statement_for_model(index.definition)
        except NotShareable:
            definition = f"{index.name} ({index.method} on {', '.join(str(k) for k in index.key_columns)})"
        indexes.append({"name": index.name, "definition": definition, "valid": index.valid, "scans": index.scans})
    return {
        "table": table.qualified,
        "kind": {"r": "table", "p": "partitioned table", "m": "materialized view"}.get(table.relkind, table.relkind),
        "estimated_rows": int(table.reltuples),
        "total_bytes": table.total_bytes,
        "columns": columns,
        "column_count": len(table.columns),
        "indexes": indexes,
        "write_share": round(table.write_share, 3),
    }


def plan_outline(plan: Plan | None) -> str | None:
    """The plan's node types, relations and indexes, with the top estimates: no filter, no value."""
    if plan is None:
        return None
    return f"{plan.text} (estimated cost {plan.cost:.0f}, estimated rows {plan.rows:.0f})"


def build(
    catalog: Snapshot,
    *,
    text: str,
    kind: str,
    tables: Sequence[TableInfo],
    plan: Plan | None,
    calls: int,
    mean_ms: float,
    parse_explanation: str,
    advisor: dict[str, Any],
    share_stats: bool,
) -> StatementContext:
    """The context of one statement; NotShareable when its text cannot be stripped of comments and constants."""
    return StatementContext(
        statement=statement_for_model(text),
        kind=kind,
        tables=tuple(_table_facts(catalog, t, share_stats) for t in tables),
        plan=plan_outline(plan),
        calls=calls,
        mean_ms=round(mean_ms, 3),
        parse_explanation=scrub_note(parse_explanation),
        advisor=advisor,
    )
