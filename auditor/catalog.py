"""What the advisor reads from the audited database's catalog, as it is now."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from pg_architect.auditor.parsing import TableRef
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db


@dataclasses.dataclass(frozen=True, slots=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    relkind: str
    total_bytes: int
    heap_bytes: int
    reltuples: float
    n_live_tup: int
    writes: int
    seq_scan: int
    idx_scan: int
    columns: list[str]
    column_types: list[str]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column_type(self, column: str) -> str | None:
        try:
            return self.column_types[self.columns.index(column)]
        except ValueError:
            return None

    @property
    def write_share(self) -> float:
        """Writes against all reads and writes since statistics began: how much an index would cost."""
        total = self.writes + self.seq_scan + self.idx_scan
        return self.writes / total if total else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class IndexInfo:
    oid: int
    table_oid: int
    schema: str
    name: str
    method: str
    valid: bool
    unique: bool
    primary: bool
    key_columns: list[str | None]
    key_definitions: list[str]
    predicate: str | None
    definition: str
    size_bytes: int
    scans: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnStats:
    """One column's planner statistics (pg_stats), values in their text form."""

    null_frac: float
    n_distinct: float
    most_common_vals: list[str] | None
    most_common_freqs: list[float] | None
    histogram_bounds: list[str] | None
    correlation: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    schema_name: str
    table_name: str
    relkind: str


def tables(conn: db.Connection, refs: Iterable[TableRef]) -> dict[tuple[str | None, str], TableInfo]:
    """Tables by the (schema, name) the statement used; missing ones (CTEs, views) are left out."""
    keys = list({(r.schema, r.name) for r in refs})
    if not keys:
        return {}
    params = {"schemas": [k[0] for k in keys], "names": [k[1] for k in keys]}
    rows = db.fetch(conn, db.query(conn, QUERIES, "tables"), params, TableInfo)
    found: dict[tuple[str | None, str], TableInfo] = {}
    for ref in keys:
        for row in rows:
            if row.name == ref[1] and (ref[0] is None or ref[0] == row.schema):
                found[ref] = row
                break
    return found


def indexes(conn: db.Connection, table_oids: Sequence[int]) -> list[IndexInfo]:
    if not table_oids:
        return []
    return db.fetch(
        conn, db.query(conn, QUERIES, "indexes"), {"table_oids": list(table_oids)}, IndexInfo
    )


def column_stats(conn: db.Connection, schema: str, table: str, column: str) -> ColumnStats | None:
    return db.fetch_one(
        conn,
        db.query(conn, QUERIES, "column_stats"),
        {"schema": schema, "table": table, "column": column},
        ColumnStats,
    )


def relation(conn: db.Connection, schema: str | None, name: str) -> Relation | None:
    """The relation a statement means by ``schema.name`` (or ``name`` on the search_path), if any."""
    return db.fetch_one(
        conn, db.query(conn, QUERIES, "relation"), {"schema": schema, "name": name}, Relation
    )


_SPACE = re.compile(r"\s+")


def normalise_expression(text: str) -> str:
    """Compare index keys and predicates as text: no quotes, spacing, outer parentheses or case."""
    text = _SPACE.sub("", text.replace('"', "")).lower()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1]
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0
