"""What the advisor reads from the audited database's catalog, as it is now."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from pg_architect.auditor.parsing import TableRef, view_projection
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
    readable: bool = True  # the auditor's role may SELECT from it

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

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


@dataclasses.dataclass(frozen=True, slots=True)
class _ColumnType:
    column_name: str
    type_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class _NotNull:
    column_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class _RelationName:
    schema: str
    name: str


class Snapshot:
    """The audited database's catalog as one audit sees it: each fact read once, then remembered.

    One per audit (the advisor, parameter inference and sampling all read through it), so a statement is
    resolved against one consistent view and no table, column or statistic is looked up twice.
    """

    def __init__(self, conn: db.Connection) -> None:
        self.conn = conn
        self._tables: dict[tuple[str | None, str], TableInfo | None] = {}
        self._indexes: dict[int, list[IndexInfo]] = {}
        self._stats: dict[tuple[str, str, str], ColumnStats | None] = {}
        self._relations: dict[tuple[str | None, str], Relation | None] = {}
        self._columns: dict[int, dict[str, str]] = {}
        self._not_null: dict[int, frozenset[str]] = {}
        self._type_names: dict[str, str] = {}
        self._views: dict[tuple[str, int], tuple[TableRef, dict[str, str] | None] | None] = {}

    def tables(self, refs: Iterable[TableRef]) -> dict[tuple[str | None, str], TableInfo]:
        """Tables by the (schema, name) the statement used; missing ones (CTEs, views) are left out."""
        wanted = [r for r in {(r.schema, r.name): r for r in refs}.values() if (r.schema, r.name) not in self._tables]
        if wanted:
            found = tables(self.conn, wanted)
            for r in wanted:
                self._tables[(r.schema, r.name)] = found.get((r.schema, r.name))
        return {
            key: info for r in refs if (info := self._tables.get(key := (r.schema, r.name))) is not None
        }

    def indexes(self, table_oids: Sequence[int]) -> list[IndexInfo]:
        missing = [oid for oid in dict.fromkeys(table_oids) if oid not in self._indexes]
        if missing:
            rows = indexes(self.conn, missing)
            for oid in missing:
                self._indexes[oid] = [i for i in rows if i.table_oid == oid]
        return [i for oid in dict.fromkeys(table_oids) for i in self._indexes[oid]]

    def column_stats(self, schema: str, table: str, column: str) -> ColumnStats | None:
        key = (schema, table, column)
        if key not in self._stats:
            self._stats[key] = column_stats(self.conn, schema, table, column)
        return self._stats[key]

    def relation(self, table: TableRef) -> Relation | None:
        key = (table.schema, table.name)
        if key not in self._relations:
            self._relations[key] = relation(self.conn, table.schema, table.name)
        return self._relations[key]

    def columns(self, table: TableRef) -> dict[str, str]:
        """Column name -> full type (format_type with its modifier: ``character(10)``) of ``table``; empty when
        it does not exist. A value bound as plain ``character`` would be ``char(1)``, and match nothing."""
        found = self.relation(table)
        if found is None:
            return {}
        if found.relid not in self._columns:
            sql = db.query(self.conn, QUERIES, "params_columns")
            rows = db.fetch(self.conn, sql, {"relid": found.relid}, _ColumnType)
            self._columns[found.relid] = {row.column_name: row.type_name for row in rows}
        return self._columns[found.relid]

    def not_null(self, table: TableRef) -> frozenset[str]:
        """The columns of ``table`` declared NOT NULL; empty when it does not exist."""
        found = self.relation(table)
        if found is None:
            return frozenset()
        if found.relid not in self._not_null:
            sql = db.query(self.conn, QUERIES, "catalog_not_null")
            rows = db.fetch(self.conn, sql, {"relid": found.relid}, _NotNull)
            self._not_null[found.relid] = frozenset(row.column_name for row in rows)
        return self._not_null[found.relid]

    def columns_by_table(self, tables: Sequence[TableRef]) -> dict[tuple[str, str], set[str]]:
        found: dict[tuple[str, str], set[str]] = {}
        for table in tables:
            rel = self.relation(table)
            if rel is not None:
                found[(rel.schema_name, rel.table_name)] = set(self.columns(table))
        return found

    def views(self, refs: Iterable[TableRef]) -> dict[tuple[str | None, str], tuple[TableRef, dict[str, str] | None]]:
        """The refs that are views the planner flattens into one base table: (schema, name) -> (base table,
        column map, None when the columns keep their names)."""
        found: dict[tuple[str | None, str], tuple[TableRef, dict[str, str] | None]] = {}
        for ref in refs:
            rel = self.relation(ref)
            if rel is None or rel.relkind != "v":
                continue
            key = ("view", rel.relid)
            if key not in self._views:
                definition = db.fetch_value(self.conn, db.query(self.conn, QUERIES, "view_definition"),
                                            {"relid": rel.relid})
                self._views[key] = view_projection(str(definition)) if definition else None
            flat = self._views[key]
            if flat is not None:
                base, mapping = flat
                found[(ref.schema, ref.name)] = (base, mapping)
        return found

    def type_name(self, name: str) -> str:
        """The catalog's spelling of a type name (``int4`` -> ``integer``); the input when unknown."""
        if name not in self._type_names:
            value = db.fetch_value(self.conn, db.query(self.conn, QUERIES, "type_name"), {"name": name})
            # A written modifier (``$1::char(10)``) is part of the type: the canonical name without it is not.
            self._type_names[name] = str(value) if value and "(" not in name else name
        return self._type_names[name]

    def role(self) -> str:
        """The role the audit connects as, quoted."""
        return self.quote(str(db.fetch_value(self.conn, "SELECT current_user /* pg-architect */")))

    def relations_named(self, schemas: Sequence[str], names: Sequence[str]) -> set[tuple[str, str]]:
        """(schema, name) of the relations of any kind (table, index, sequence, view...) with one of ``names``
        in one of ``schemas``: an index name must be none of them. Read now, not remembered: names change."""
        rows = db.fetch(
            self.conn,
            db.query(self.conn, QUERIES, "relation_names_taken"),
            {"schemas": list(schemas), "names": list(names)},
            _RelationName,
        )
        return {(r.schema, r.name) for r in rows}

    def quote(self, identifier: str) -> str:
        """``identifier`` quoted as this server would need it."""
        return db.Identifier(identifier).as_string(self.conn)


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


# A string constant's cast, which pg_get_indexdef adds to the constants an expression was written with
# (``date_trunc('day', at)`` comes back as ``date_trunc('day'::text, at)``).
_LITERAL_CAST = re.compile(r"('(?:[^']|'')*')::[a-z_0-9.]+(?:\([0-9,]*\))?(?:\[\])*")


def normalise_expression(text: str) -> str:
    """Compare index keys and predicates as text: no quotes, spacing, outer parentheses, case, or casts of
    string constants."""
    text = _SPACE.sub("", text.replace('"', "")).lower()
    text = _LITERAL_CAST.sub(r"\1", text)
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
