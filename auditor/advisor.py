"""Candidate indexes for one statement, from its parse and the catalog as it is now.

Order of keys follows how a btree serves the statement: equality columns first (most distinct values
first), then one range column, or the ORDER BY columns when the statement sorts (pagination, work
queues). Expression predicates (``lower(email) = $1``) get expression indexes; ``IS NULL`` filters
(the normalised form of a work queue's "not processed yet") get partial indexes. A candidate whose
leading keys an existing valid index already has is dropped, and the report says which index covers it.
Which candidate wins is decided by measurement (auditor.measure), never by this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Sequence

from pglast import ast, parser
from pglast.parser import ParseError

from pg_architect.auditor.catalog import IndexInfo, Snapshot, TableInfo, normalise_expression
from pg_architect.auditor.parsing import ColumnUse, QueryShape, carried_equalities
from pg_architect.core import db

log = logging.getLogger(__name__)

MAX_CANDIDATES = 6
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; a truncated name could meet another one.
MAX_NAME_BYTES = 63


def _hashed(stem: str, what: str) -> str:
    """``<stem, cut>_<8 hex>_idx``, at most 63 bytes (cut on a character boundary)."""
    digest = hashlib.sha1(what.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(f"_{digest}_idx")
    cut = stem.encode()[:room].decode(errors="ignore")
    return f"{cut}_{digest}_idx"


def name_candidates(snapshot: Snapshot, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Give each candidate a name no relation of its schema has, nor another candidate: ``CREATE INDEX IF NOT
    EXISTS`` on a taken name silently does nothing, in a measurement and in a migration alike."""
    if not candidates:
        return []
    names = sorted({n for c in candidates for n in (c.natural_name(), *(c.alternative_name(i) for i in range(3)))})
    taken = snapshot.relations_named(sorted({c.table.schema for c in candidates}), names)
    out = []
    for cand in candidates:
        options = [cand.natural_name(), *(cand.alternative_name(i) for i in range(3))]
        chosen = next((n for n in options if (cand.table.schema, n) not in taken), None)
        if chosen is None:  # four taken names in a row: not a coincidence, leave this candidate out
            log.warning("no free index name for %s (tried %s)", cand.describe(), ", ".join(options))
            continue
        taken.add((cand.table.schema, chosen))
        out.append(dataclasses.replace(cand, chosen_name=chosen))
    return out


def matches_definition(candidate: Candidate, index: IndexInfo, table_oid: int | None = None) -> bool:
    """Whether ``index`` (from the catalog) is exactly the candidate: same table (``table_oid`` on another
    server, such as staging), keys and predicate."""
    have = [normalise_expression(d).removesuffix("desc").removesuffix("asc") for d in index.key_definitions]
    want = [k.normalised().removesuffix("desc") for k in candidate.keys]
    want_pred = normalise_expression(candidate.predicate) if candidate.predicate else None
    have_pred = normalise_expression(index.predicate) if index.predicate else None
    same_table = index.table_oid == (candidate.table.oid if table_oid is None else table_oid)
    return same_table and have == want and have_pred == want_pred


_EQUALITY = ("eq", "in", "is_null")


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One index key: a column, or an expression over columns."""

    column: str | None
    expression: str | None = None
    descending: bool = False

    def sql(self, conn: db.Connection) -> str:
        text = db.Identifier(self.column).as_string(conn) if self.column is not None else f"({self.expression})"
        return text + (" DESC" if self.descending else "")

    def normalised(self) -> str:
        return normalise_expression(self.column if self.column is not None else self.expression or "")


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    table: TableInfo
    keys: tuple[Key, ...]
    predicate: str | None
    reason: str
    # Set by ``generate`` once the catalog was checked: a name no relation of the schema has.
    chosen_name: str | None = None

    def signature(self) -> tuple[int, tuple[str, ...], str | None]:
        return (
            self.table.oid,
            tuple(k.normalised() for k in self.keys),
            normalise_expression(self.predicate) if self.predicate else None,
        )

    def name(self) -> str:
        """The index's name: the one ``generate`` chose against the catalog, else ``natural_name()``."""
        return self.chosen_name or self.natural_name()

    def natural_name(self) -> str:
        """``<table>_<keys>_idx``, shortened with a hash to PostgreSQL's 63 bytes."""
        # A descending key is another index than an ascending one (mixed directions): another name, or one
        # audit would recommend two different indexes under one name and IF NOT EXISTS would skip the second.
        parts = [
            (k.column or "_".join(re.findall(r"[a-z_][a-z0-9_]*", (k.expression or "expr").lower())))
            + ("_desc" if k.descending else "")
            for k in self.keys
        ]
        base = f"{self.table.name}_{'_'.join(parts)}{'_partial' if self.predicate else ''}_idx"
        if len(base.encode()) <= MAX_NAME_BYTES:
            return base
        return _hashed(base, base)

    def alternative_name(self, attempt: int) -> str:
        """A deterministic other name, for when the natural one is taken: a hash of the definition."""
        natural = self.natural_name()
        return _hashed(natural.removesuffix("_idx"), f"{self.signature()!r}/{attempt}")

    def ddl(self, conn: db.Connection, *, concurrently: bool = True, name: str | None = None) -> str:
        """``CREATE INDEX`` composed with quoted identifiers (expressions and predicates are parser output)."""
        statement = db.SQL("CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {table} ({keys}){where}").format(
            concurrently=db.SQL("CONCURRENTLY " if concurrently else ""),
            name=db.Identifier(name or self.name()),
            table=db.Identifier(self.table.schema, self.table.name),
            keys=db.SQL(", ".join(k.sql(conn) for k in self.keys)),
            where=db.SQL(f" WHERE {self.predicate}" if self.predicate else ""),
        )
        return statement.as_string(conn)

    def qualified_table(self, conn: db.Connection) -> str:
        """The table's quoted, schema-qualified name."""
        return db.Identifier(self.table.schema, self.table.name).as_string(conn)

    def rollback(self, conn: db.Connection, *, name: str | None = None) -> str:
        return (
            db.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
            .format(db.Identifier(self.table.schema, name or self.name()))
            .as_string(conn)
        )

    def describe(self) -> str:
        keys = ", ".join(k.column or f"({k.expression})" for k in self.keys)
        where = f" WHERE {self.predicate}" if self.predicate else ""
        return f"{self.table.qualified} ({keys}){where}"


#: Casts that keep a column's order (a timestamp truncated to its date sorts as the timestamp does).
_ORDER_KEEPING_CASTS = frozenset({"date", "timestamp", "timestamptz"})


def order_column(key: Key) -> str | None:
    """The column whose order ``key`` follows: the column itself, or the one column of an expression that only
    coarsens it (``date_trunc('day', at)``, ``at::date``); None when the expression reorders (``lower(email)``)."""
    if key.column is not None:
        return key.column
    try:
        statements = parser.parse_sql(f"SELECT {key.expression}")
    except ParseError:
        return None
    stmt = statements[0].stmt if len(statements) == 1 else None
    targets = stmt.targetList if isinstance(stmt, ast.SelectStmt) and stmt.targetList else ()
    node = targets[0].val if len(targets) == 1 else None
    if isinstance(node, ast.FuncCall) and [n.sval for n in node.funcname or ()][-1:] == ["date_trunc"]:
        args = node.args or ()
        unit = args[0] if args else None
        if isinstance(unit, ast.TypeCast):
            unit = unit.arg
        node = args[1] if len(args) == 2 and isinstance(unit, ast.A_Const) else None
    elif isinstance(node, ast.TypeCast) and node.typeName is not None:
        names = [n.sval for n in node.typeName.names or ()]
        node = node.arg if names[-1:] and names[-1] in _ORDER_KEEPING_CASTS else None
    if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[-1], ast.String):
        return str(node.fields[-1].sval)
    return None


def key_correlation(snapshot: Snapshot, cand: Candidate) -> float | None:
    """pg_stats' correlation of the candidate's leading key with its table's physical order, when known."""
    column = order_column(cand.keys[0]) if cand.keys else None
    if column is None:
        return None
    stats = snapshot.column_stats(cand.table.schema, cand.table.name, column)
    return stats.correlation if stats is not None else None


@dataclasses.dataclass(frozen=True, slots=True)
class Candidates:
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...]  # what was not proposed and why ("covered by index ...") for the report
    tables: dict[tuple[str | None, str], TableInfo]
    indexes: tuple[IndexInfo, ...]


def covering_index(candidate: Candidate, existing: Sequence[IndexInfo]) -> IndexInfo | None:
    """A valid btree index of the same table whose leading keys are the candidate's keys (and predicate)."""
    want = [k.normalised() for k in candidate.keys]
    want_pred = normalise_expression(candidate.predicate) if candidate.predicate else None
    for index in existing:
        if index.table_oid != candidate.table.oid or not index.valid or index.method != "btree":
            continue
        have = [normalise_expression(d) for d in index.key_definitions]
        # DESC matters only when directions are mixed; compare keys without direction words.
        have = [h.removesuffix("desc").removesuffix("asc") for h in have]
        if have[: len(want)] != [w.removesuffix("desc") for w in want]:
            continue
        have_pred = normalise_expression(index.predicate) if index.predicate else None
        if have_pred is None or have_pred == want_pred:
            return index
    return None


def _table_of(use: ColumnUse, tables: dict[tuple[str | None, str], TableInfo]) -> TableInfo | None:
    if use.table is None:
        return None
    return tables.get((use.table.schema, use.table.name))


def _key(use: ColumnUse, descending: bool = False) -> Key | None:
    if use.column is not None:
        return Key(column=use.column, descending=descending)
    if use.expression is not None and not use.parameterised:
        return Key(column=None, expression=use.expression, descending=descending)
    return None


def _distinct(snapshot: Snapshot, table: TableInfo, key: Key) -> float:
    """Estimated distinct values of a key (higher first in a composite); expressions count as selective."""
    if key.column is None:
        return float("inf")
    stats = snapshot.column_stats(table.schema, table.name, key.column)
    if stats is None:
        return 0.0
    return stats.n_distinct if stats.n_distinct >= 0 else -stats.n_distinct * max(table.reltuples, 1.0)


def generate(
    snapshot: Snapshot, shape: QueryShape, tables: dict[tuple[str | None, str], TableInfo]
) -> Candidates:
    """Candidate indexes for ``shape`` (already resolved against ``snapshot``, the audit's catalog)."""
    indexes = snapshot.indexes([t.oid for t in tables.values()])
    proposals: list[Candidate] = []
    all_uses = [*shape.columns, *carried_equalities(shape)]
    for table in {t.oid: t for t in tables.values()}.values():
        uses = [u for u in all_uses if (t := _table_of(u, tables)) is not None and t.oid == table.oid]
        proposals.extend(_for_table(snapshot, shape, table, uses))
    unique: dict[tuple[int, tuple[str, ...], str | None], Candidate] = {}
    notes: list[str] = [
        f"{use.expression}: pg_stat_statements replaced a constant inside this expression, so no index on it can "
        "be written from the statement's text; an expression index with the application's constant may help"
        for use in shape.columns
        if use.parameterised and use.role in ("eq", "range", "in", "order_by")
    ]
    for cand in proposals:
        if cand.signature() in unique:
            continue
        index = covering_index(cand, indexes)
        if index is not None:
            notes.append(f"{cand.describe()} is already covered by index {index.qualified}")
            continue
        unique[cand.signature()] = cand
    named = name_candidates(snapshot, _interleaved(list(unique.values()))[:MAX_CANDIDATES])
    return Candidates(tuple(named), tuple(dict.fromkeys(notes)), tables, tuple(indexes))


def _interleaved(candidates: list[Candidate]) -> list[Candidate]:
    """Each table's best candidate first, largest table first, then each table's second, and so on.

    Only the first few candidates are built and measured (measure.MAX_BUILDS): listed table by table, a join's
    first table would take them all, and a larger gain on another table would never be seen.
    """
    by_table: dict[int, list[Candidate]] = {}
    for cand in candidates:
        by_table.setdefault(cand.table.oid, []).append(cand)
    order = sorted(by_table.values(), key=lambda group: (-group[0].table.reltuples, group[0].table.qualified))
    out: list[Candidate] = []
    for rank in range(max((len(g) for g in order), default=0)):
        out.extend(group[rank] for group in order if rank < len(group))
    return out


def _for_table(snapshot: Snapshot, shape: QueryShape, table: TableInfo, uses: list[ColumnUse]) -> list[Candidate]:
    eq_uses = [u for u in uses if u.role in _EQUALITY and u.role != "is_null"]
    null_uses = [u for u in uses if u.role == "is_null" and u.operator in (None, "IS NULL")]
    range_uses = [u for u in uses if u.role == "range"]
    join_uses = [u for u in uses if u.role == "join"]
    order_uses = [u for u in shape.uses("order_by")]
    # ORDER BY helps only when every sort key is this table's (one index serves the whole sort).
    sorts_here = bool(order_uses) and all(
        (t := _table_of(u, {(table.schema, table.name): table, (None, table.name): table})) is not None
        and t.oid == table.oid
        for u in order_uses
    )
    eq_keys = _dedupe([k for u in eq_uses if (k := _key(u)) is not None])
    eq_keys.sort(key=lambda k: -_distinct(snapshot, table, k))
    range_keys = _dedupe([k for u in range_uses if (k := _key(u)) is not None])
    join_keys = _dedupe([k for u in join_uses if (k := _key(u)) is not None])
    mixed = sorts_here and len({u.descending for u in order_uses}) > 1
    order_keys = (
        _dedupe([k for u in order_uses if (k := _key(u, descending=mixed and u.descending)) is not None])
        if sorts_here
        else []
    )
    out: list[Candidate] = []

    def add(keys: Sequence[Key], reason: str, predicate: str | None = None) -> None:
        keys = _dedupe(list(keys))
        if keys and len(keys) <= 4:
            out.append(Candidate(table, tuple(keys), predicate, reason))

    sorted_first = bool(eq_keys and order_keys)
    ranged = bool(eq_keys and range_keys)
    if ranged and not shape.has_limit:
        # Without a LIMIT every matching row is read anyway: an index that reads only them (the range in the
        # index) beats one that returns them sorted but filters the range row by row; first, so that it wins
        # when the two measure alike.
        add(
            eq_keys + range_keys[:1],
            "equality columns first, then the range column, so one index range scan finds exactly the matching rows",
        )
    if sorted_first:
        add(
            eq_keys + order_keys,
            "equality columns first, then the ORDER BY columns, so the index returns rows "
            "already sorted and the LIMIT stops early"
            if shape.has_limit
            else "equality columns first, then the ORDER BY columns, so no sort is needed",
        )
    if ranged and shape.has_limit:
        add(
            eq_keys + range_keys[:1],
            "equality columns first, then the range column, so one index range scan finds exactly the matching rows",
        )
    if len(eq_keys) > 1:
        add(eq_keys, "all equality columns, most distinct first")
    for k in eq_keys:
        add(
            [k],
            "an index on the expression the statement filters on"
            if k.column is None
            else f"equality filter on {k.column}",
        )
    for null_use in null_uses:
        if null_use.column is None:
            continue
        predicate = f"{snapshot.quote(null_use.column)} IS NULL"
        rest = eq_keys + order_keys or range_keys[:1] or [Key(column=null_use.column)]
        add(
            rest,
            f"a partial index on the rows where {null_use.column} IS NULL: small, and exactly the rows "
            "this statement asks for",
            predicate,
        )
    if order_keys and shape.has_limit:
        add(order_keys, "the ORDER BY columns, so the LIMIT stops after the first rows of the index")

    for k in range_keys:
        add([k], f"range filter on {k.column or k.expression}")
    for k in join_keys:
        add([k], f"join column {k.column or k.expression}: lets a nested loop look rows up instead of scanning")
    return out


def _dedupe(keys: list[Key]) -> list[Key]:
    seen: set[str] = set()
    out = []
    for k in keys:
        if k.normalised() not in seen:
            seen.add(k.normalised())
            out.append(k)
    return out
