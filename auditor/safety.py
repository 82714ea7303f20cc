"""The allow-list for SQL that pg-architect did not write itself (LLM output, user input, workload text).

Such SQL is parsed with pglast (PostgreSQL's own grammar), never pattern-matched, and accepted only when
every node of its tree is on an allow-list; anything else is refused with a one-line reason
(UnsafeSQLError) before it reaches the database. Three doors:

- :func:`check_index_ddl` (+ :func:`check_index_target`): one ``CREATE INDEX`` on an existing table of
  the audited database, with immutable expressions, for the measured build step;
- :func:`check_readonly_select`: one ``SELECT``/``VALUES`` that reads and calls only non-volatile
  functions, for ``EXPLAIN ANALYZE``;
- :func:`check_explain_only_dml`: one ``INSERT``/``UPDATE``/``DELETE`` that will only be planned.
- both refuse user-defined functions declared IMMUTABLE or STABLE whose body cannot be checked: the planner
  runs such functions while planning (constant folding), so a function that lies about its volatility
  would have side effects even under a plain EXPLAIN.

Defence in depth, not the only guard: callers still run measurements in a transaction they roll back,
under statement and lock timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums, parser
from pglast.parser import ParseError
from pglast.stream import RawStream

from pg_architect.auditor import catalog
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.errors import UnsafeSQLError

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_PREFIXES",
    "INDEX_METHODS",
    "IndexDDL",
    "IndexElement",
    "check_explain_only_dml",
    "check_index_ddl",
    "check_index_target",
    "check_readonly_select",
]

INDEX_METHODS = frozenset({"btree", "hash", "gin", "gist", "brin"})

#: Refused by name whatever pg_proc says: side effects outside the transaction, other sessions, files,
#: sequences, sleeping, or running SQL given as a string.
DENIED_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "pg_notify",
        "pg_switch_wal",
        "pg_promote",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "ts_stat",
        "txid_current",
        "pg_current_xact_id",
        "hypopg_create_index",
        "hypopg_reset",
        "hypopg_drop_index",
        "pg_stat_statements_reset",
        "pg_qualstats_reset",
        "pg_prewarm",
        "pg_partition_tree",
    }
)
DENIED_PREFIXES = (
    "lo_",
    "dblink",
    "pg_advisory",
    "pg_try_advisory",
    "pg_stat_reset",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_wal_replay_",
    "pg_ls_",
    "pg_file_",
    "pg_read_",
    "pg_sleep",
    "pg_stat_statements_reset",
)

# Node types a read-only SELECT may contain; anything else (INTO, locking, DML, utility) is refused.
_SELECT_NODES: frozenset[type[Any]] = frozenset(
    {
        ast.SelectStmt,
        ast.ResTarget,
        ast.ColumnRef,
        ast.A_Star,
        ast.A_Const,
        ast.String,
        ast.Integer,
        ast.Float,
        ast.Boolean,
        ast.BitString,
        ast.ParamRef,
        ast.A_Expr,
        ast.BoolExpr,
        ast.NullTest,
        ast.BooleanTest,
        ast.SubLink,
        ast.FuncCall,
        ast.TypeCast,
        ast.TypeName,
        ast.RangeVar,
        ast.Alias,
        ast.RangeSubselect,
        ast.RangeFunction,
        ast.JoinExpr,
        ast.SortBy,
        ast.WindowDef,
        ast.CaseExpr,
        ast.CaseWhen,
        ast.CoalesceExpr,
        ast.MinMaxExpr,
        ast.A_ArrayExpr,
        ast.A_Indirection,
        ast.A_Indices,
        ast.CollateClause,
        ast.RowExpr,
        ast.SQLValueFunction,
        ast.GroupingSet,
        ast.GroupingFunc,
        ast.RangeTableSample,
        ast.WithClause,
        ast.CommonTableExpr,
        ast.CTESearchClause,
        ast.CTECycleClause,
        ast.NamedArgExpr,
        ast.ColumnDef,
        ast.XmlExpr,
        ast.XmlSerialize,
        ast.RangeTableFunc,
        ast.RangeTableFuncCol,
        ast.JsonValueExpr,
        ast.JsonOutput,
        ast.JsonFormat,
        ast.JsonReturning,
        ast.JsonObjectConstructor,
        ast.JsonArrayConstructor,
        ast.JsonArrayQueryConstructor,
        ast.JsonKeyValue,
        ast.JsonIsPredicate,
        ast.JsonFuncExpr,
        ast.JsonAggConstructor,
        ast.JsonObjectAgg,
        ast.JsonArrayAgg,
        ast.JsonParseExpr,
        ast.JsonScalarExpr,
        ast.JsonSerializeExpr,
        ast.JsonArgument,
        ast.JsonBehavior,
        ast.JsonTable,
        ast.JsonTablePathSpec,
        ast.JsonTableColumn,
        ast.ReturningClause,
    }
)
# Plain EXPLAIN (never executed) of a DML statement may also contain these.
_DML_NODES: frozenset[type[Any]] = _SELECT_NODES | frozenset(
    {
        ast.InsertStmt,
        ast.UpdateStmt,
        ast.DeleteStmt,
        ast.OnConflictClause,
        ast.InferClause,
        ast.IndexElem,
        ast.MultiAssignRef,
        ast.ReturningOption,
    }
)
# Index expressions and predicates: scalar, deterministic building blocks only.
_INDEX_EXPR_NODES: frozenset[type[Any]] = frozenset(
    {
        ast.ColumnRef,
        ast.A_Const,
        ast.String,
        ast.Integer,
        ast.Float,
        ast.Boolean,
        ast.BitString,
        ast.TypeCast,
        ast.TypeName,
        ast.FuncCall,
        ast.A_Expr,
        ast.BoolExpr,
        ast.NullTest,
        ast.BooleanTest,
        ast.CoalesceExpr,
        ast.MinMaxExpr,
        ast.CaseExpr,
        ast.CaseWhen,
        ast.A_ArrayExpr,
        ast.CollateClause,
        ast.A_Indirection,
        ast.A_Indices,
        ast.NamedArgExpr,
        ast.RowExpr,
    }
)
_NOT_IMMUTABLE_NODES = {
    ast.SQLValueFunction: "CURRENT_DATE/CURRENT_TIMESTAMP/CURRENT_USER ... change over time",
    ast.SubLink: "subqueries are not allowed in an index",
    ast.ParamRef: "placeholders ($n) are not allowed in an index",
}


# -- models --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexElement:
    """One key of an index: a column or an expression, with its operator class and sort order."""

    column: str | None
    expression: str | None
    opclass: str | None = None
    descending: bool = False
    nulls_first: bool | None = None
    collation: str | None = None


@dataclass(frozen=True, slots=True)
class IndexDDL:
    """A ``CREATE INDEX`` that passed the allow-list.

    ``sql`` is the statement re-printed from its parse tree (comments and odd spacing gone), which is the
    text to run. ``schema`` is None when the statement did not qualify the table;
    :func:`check_index_target` returns a copy with the schema the catalog resolved.
    """

    schema: str | None
    table: str
    name: str
    method: str
    elements: tuple[IndexElement, ...]
    include: tuple[str, ...]
    where: str | None
    concurrently: bool
    if_not_exists: bool
    unique: bool
    sql: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns the index reads: keys, INCLUDE, and those inside expressions and the predicate."""
        found: list[str] = []
        for text in [*(e.expression for e in self.elements if e.expression), self.where or ""]:
            found.extend(_expression_columns(text))
        found.extend(e.column for e in self.elements if e.column)
        found.extend(self.include)
        return tuple(dict.fromkeys(found))


# -- parsing helpers -------------------------------------------------------------------------------


def _deparse(node: Any) -> str:
    return str(RawStream()(node))


def _one_statement(sql: str) -> Any:
    """The single statement in ``sql``; UnsafeSQLError for syntax errors, none, or several."""
    if not sql or not sql.strip():
        raise UnsafeSQLError("refused: empty SQL")
    try:
        statements = parser.parse_sql(sql)
    except ParseError as exc:
        raise UnsafeSQLError(f"refused: not valid SQL ({exc})") from exc
    if len(statements) != 1:
        kinds = ", ".join(_statement_name(s.stmt) for s in statements) or "none"
        raise UnsafeSQLError(f"refused: exactly one statement allowed, found {len(statements)} ({kinds})")
    return statements[0].stmt


def _statement_name(stmt: Any) -> str:
    names = {
        "SelectStmt": "SELECT",
        "InsertStmt": "INSERT",
        "UpdateStmt": "UPDATE",
        "DeleteStmt": "DELETE",
        "MergeStmt": "MERGE",
        "IndexStmt": "CREATE INDEX",
        "DropStmt": "DROP",
        "CreateStmt": "CREATE TABLE",
        "AlterTableStmt": "ALTER TABLE",
        "TransactionStmt": "transaction control",
        "VariableSetStmt": "SET",
        "LockStmt": "LOCK",
        "TruncateStmt": "TRUNCATE",
        "CopyStmt": "COPY",
        "ExplainStmt": "EXPLAIN",
        "DoStmt": "DO",
        "CallStmt": "CALL",
        "CreateTableAsStmt": "CREATE TABLE AS",
    }
    return names.get(type(stmt).__name__, type(stmt).__name__)


def _walk(node: Any) -> Iterator[Any]:
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, list | tuple):
            stack.extend(current)
        elif isinstance(current, ast.Node):
            yield current
            stack.extend(getattr(current, name) for name in current)


def _names(items: Sequence[Any] | None) -> list[str]:
    return [str(item.sval) for item in items or () if isinstance(item, ast.String)]


def _function_name(call: Any) -> tuple[str | None, str]:
    names = _names(call.funcname)
    return (names[-2] if len(names) > 1 else None), names[-1]


def _denied(name: str) -> bool:
    lowered = name.lower()
    return lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_PREFIXES)


def _check_nodes(tree: Any, allowed: frozenset[type[Any]], what: str) -> None:
    """Refuse any node outside ``allowed``, with the most telling reason for the common dangers."""
    for node in _walk(tree):
        if isinstance(node, ast.IntoClause):
            raise UnsafeSQLError("refused: SELECT ... INTO creates a table")
        if isinstance(node, ast.LockingClause):
            raise UnsafeSQLError("refused: FOR UPDATE/SHARE locks rows")
        if isinstance(node, ast.CommonTableExpr) and not isinstance(node.ctequery, ast.SelectStmt) and what == "SELECT":
            raise UnsafeSQLError(
                f"refused: data-modifying CTE {node.ctename!r} ({_statement_name(node.ctequery)} inside WITH)"
            )
        if type(node) not in allowed:
            raise UnsafeSQLError(f"refused: {_statement_name(node)} is not allowed in a {what} statement")
        if isinstance(node, ast.FuncCall):
            _, name = _function_name(node)
            if _denied(name):
                raise UnsafeSQLError(f"refused: function {name}() is on the deny-list (side effects)")


# -- CREATE INDEX ------------------------------------------------------------------------------------


def _index_expression(node: Any, where: str) -> None:
    for sub in _walk(node):
        reason = _NOT_IMMUTABLE_NODES.get(type(sub))
        if reason is not None:
            raise UnsafeSQLError(f"refused: {where}: {reason}")
        if type(sub) not in _INDEX_EXPR_NODES:
            raise UnsafeSQLError(f"refused: {where}: {type(sub).__name__} is not allowed in an index")
        if isinstance(sub, ast.ColumnRef):
            fields = sub.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise UnsafeSQLError(f"refused: {where}: columns must be plain, unqualified names")
        if isinstance(sub, ast.FuncCall):
            if (
                sub.agg_star
                or sub.agg_distinct
                or sub.agg_order
                or sub.agg_filter
                or sub.over is not None
                or sub.agg_within_group
            ):
                raise UnsafeSQLError(f"refused: {where}: aggregates and window functions are not allowed")
            _, name = _function_name(sub)
            if _denied(name):
                raise UnsafeSQLError(f"refused: {where}: function {name}() is on the deny-list")


def check_index_ddl(sql: str, *, allow_unique: bool = False) -> IndexDDL:
    """Accept exactly one plain ``CREATE INDEX``; UnsafeSQLError with the reason otherwise.

    Accepted: ``CREATE INDEX [CONCURRENTLY] [IF NOT EXISTS] name ON [schema.]table [USING
    btree|hash|gin|gist|brin] (columns or expressions [opclass] [ASC|DESC] [NULLS ...]) [INCLUDE (...)]
    [WHERE predicate]``. UNIQUE is refused unless ``allow_unique``: a unique index changes which rows
    the table accepts (inserts start failing), so it is a schema decision, not a performance one, and it
    fails to build on duplicates. Storage parameters, TABLESPACE and ``ON ONLY`` are refused too.
    """
    stmt = _one_statement(sql)
    if not isinstance(stmt, ast.IndexStmt):
        raise UnsafeSQLError(f"refused: expected CREATE INDEX, got {_statement_name(stmt)}")
    if stmt.unique and not allow_unique:
        raise UnsafeSQLError("refused: UNIQUE changes what the table accepts; only plain indexes are proposed")
    if stmt.primary or stmt.isconstraint or stmt.deferrable:
        raise UnsafeSQLError("refused: constraint indexes are not allowed")
    if not stmt.idxname:
        raise UnsafeSQLError("refused: the index needs a name, so that it can be rolled back by name")
    if stmt.options:
        raise UnsafeSQLError("refused: storage parameters (WITH ...) are not allowed")
    if stmt.tableSpace:
        raise UnsafeSQLError("refused: TABLESPACE is not allowed")
    relation = stmt.relation
    if relation is None or not relation.inh:
        raise UnsafeSQLError("refused: ON ONLY builds an invalid index on a partitioned table")
    if relation.catalogname:
        raise UnsafeSQLError("refused: cross-database table references are not allowed")
    if relation.relpersistence == "t":
        raise UnsafeSQLError("refused: temporary tables are not audited")
    method = (stmt.accessMethod or "btree").lower()
    if method not in INDEX_METHODS:
        raise UnsafeSQLError(f"refused: index method {method!r} is not one of {', '.join(sorted(INDEX_METHODS))}")
    elements: list[IndexElement] = []
    for elem in stmt.indexParams or ():
        if not isinstance(elem, ast.IndexElem):
            raise UnsafeSQLError("refused: unexpected index element")
        if elem.opclassopts:
            raise UnsafeSQLError("refused: operator class parameters are not allowed")
        expression = None
        if elem.expr is not None:
            _index_expression(elem.expr, "index expression")
            expression = _deparse(elem.expr)
        elif not elem.name:
            raise UnsafeSQLError("refused: an index element must be a column or an expression")
        opclass = ".".join(_names(elem.opclass)) or None
        collation = ".".join(_names(elem.collation)) or None
        nulls: dict[Any, bool] = {
            enums.SortByNulls.SORTBY_NULLS_FIRST: True,
            enums.SortByNulls.SORTBY_NULLS_LAST: False,
        }
        if elem.ordering == enums.SortByDir.SORTBY_USING:
            raise UnsafeSQLError("refused: ORDER BY ... USING is not allowed in an index")
        elements.append(
            IndexElement(
                column=str(elem.name) if elem.name and elem.expr is None else None,
                expression=expression,
                opclass=opclass,
                descending=elem.ordering == enums.SortByDir.SORTBY_DESC,
                nulls_first=nulls.get(elem.nulls_ordering),
                collation=collation,
            )
        )
    if not elements:
        raise UnsafeSQLError("refused: the index has no key columns")
    include: list[str] = []
    for elem in stmt.indexIncludingParams or ():
        if not isinstance(elem, ast.IndexElem) or elem.expr is not None or not elem.name:
            raise UnsafeSQLError("refused: INCLUDE takes plain columns only")
        include.append(str(elem.name))
    where = None
    if stmt.whereClause is not None:
        _index_expression(stmt.whereClause, "index predicate")
        where = _deparse(stmt.whereClause)
    return IndexDDL(
        schema=str(relation.schemaname) if relation.schemaname else None,
        table=str(relation.relname),
        name=str(stmt.idxname),
        method=method,
        elements=tuple(elements),
        include=tuple(include),
        where=where,
        concurrently=bool(stmt.concurrent),
        if_not_exists=bool(stmt.if_not_exists),
        unique=bool(stmt.unique),
        sql=_deparse(stmt),
    )


def _expression_columns(text: str) -> list[str]:
    try:
        tree = parser.parse_sql(f"SELECT {text}")
    except ParseError:
        return []
    return [
        str(node.fields[-1].sval)
        for node in _walk(tree)
        if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[-1], ast.String)
    ]


# -- catalog checks ------------------------------------------------------------------------------------

_PROTECTED_SCHEMAS = ("pg_catalog", "information_schema", "pgarch")


@dataclass(frozen=True, slots=True)
class _Column:
    column_name: str
    type_oid: int


@dataclass(frozen=True, slots=True)
class _Routine:
    oid: int
    schema_name: str
    volatility: str
    nargs: int
    ndefaults: int
    variadic: bool
    argtypes: list[int]
    kind: str
    builtin: bool
    language: str
    extension: str | None
    body: str | None
    name: str


# Extensions whose non-volatile functions, operators and types compute from their arguments only. A
# function of any other extension (or of none) is trusted only when its body can be read and checked.
TRUSTED_EXTENSIONS = frozenset(
    {
        "vector", "pg_trgm", "citext", "hstore", "ltree", "cube", "earthdistance", "fuzzystrmatch", "unaccent",
        "intarray", "btree_gin", "btree_gist", "isn", "seg", "tablefunc", "pg_stat_statements", "postgis",
        "uuid-ossp", "pgcrypto", "hypopg",
    }
)
# Extensions that reach other servers: nothing of theirs is planned, whatever its declared volatility.
DENIED_EXTENSIONS = frozenset({"dblink", "postgres_fdw"})


# Functions a value of the type may run when cast: its input function and any cast function into it.


_VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
_UNKNOWN = 0  # a type the check cannot tell from the text (an untyped literal, a nested expression)


def _type_oid(conn: db.Connection, type_name: Any) -> int:
    oid = db.fetch_value(conn, db.query(conn, QUERIES, "type_oid"), {"name": _deparse(type_name)})
    return int(oid) if oid else _UNKNOWN


def _routines(conn: db.Connection, sql: db.Query, schema: str | None, name: str) -> list[_Routine]:
    return db.fetch(conn, sql, {"schema": schema, "name": name}, _Routine)


def _arity_matches(routine: _Routine, nargs: int) -> bool:
    if routine.kind == "o":
        return True
    low = routine.nargs - routine.ndefaults
    return low <= nargs <= routine.nargs or (routine.variadic and nargs >= routine.nargs - 1)


class _Types:
    """Argument types of an index expression, as far as the text and the table's columns tell."""

    def __init__(self, conn: db.Connection, columns: dict[str, int]) -> None:
        self.conn = conn
        self.columns = columns

    def of(self, node: Any) -> int:
        if isinstance(node, ast.ColumnRef):
            names = _names(node.fields)
            return self.columns.get(names[-1], _UNKNOWN) if names else _UNKNOWN
        if isinstance(node, ast.TypeCast):
            return _type_oid(self.conn, node.typeName)
        if isinstance(node, ast.A_Const) and not node.isnull:
            literal_types = {ast.Integer: "integer", ast.Float: "numeric", ast.Boolean: "boolean"}
            name = literal_types.get(type(node.val))
            return (
                int(db.fetch_value(self.conn, db.query(self.conn, QUERIES, "type_oid"), {"name": name}) or 0)
                if name
                else _UNKNOWN
            )
        return _UNKNOWN


def _narrow(candidates: list[_Routine], argtypes: Sequence[int]) -> list[_Routine]:
    """The candidates PostgreSQL could pick, as far as the argument types known from the text tell.

    Exact matches on every known argument first; failing that, on each single known argument (an
    implicit cast on the other one, as in ``numeric_col > 0``); failing that, all candidates.
    """

    def matching(positions: Sequence[int]) -> list[_Routine]:
        return [r for r in candidates if all(i < len(r.argtypes) and r.argtypes[i] == argtypes[i] for i in positions)]

    known = [i for i, t in enumerate(argtypes) if t != _UNKNOWN]
    if not known:
        return candidates
    exact = matching(known)
    if exact:
        return exact
    for position in known:
        partial = matching([position])
        if partial:
            return partial
    return candidates


def _require_immutable(what: str, candidates: list[_Routine], where: str) -> None:
    if not candidates:
        raise UnsafeSQLError(f"refused: {where}: {what} does not exist")
    volatilities = {r.volatility for r in candidates}
    if volatilities == {"i"}:
        return
    if "i" not in volatilities:
        found = "/".join(sorted(_VOLATILITY.get(v, v) for v in volatilities))
        raise UnsafeSQLError(f"refused: {where}: {what} is {found}, an index needs IMMUTABLE")
    raise UnsafeSQLError(
        f"refused: {where}: cannot tell which {what} is meant and not all are IMMUTABLE; add explicit casts"
    )


def _check_immutable(conn: db.Connection, node: Any, types: _Types, where: str) -> None:
    # Functions and casts first: their verdicts are precise, an operator's may only be "ambiguous".
    nodes = list(_walk(node))
    nodes.sort(key=lambda sub: isinstance(sub, ast.A_Expr))
    for sub in nodes:
        if isinstance(sub, ast.FuncCall):
            schema, name = _function_name(sub)
            args = list(sub.args or ())
            candidates = [
                r
                for r in _routines(conn, db.query(conn, QUERIES, "safety_functions"), schema, name)
                if r.kind == "f" and _arity_matches(r, len(args))
            ]
            _require_immutable(f"function {name}()", _narrow(candidates, [types.of(a) for a in args]), where)
        elif isinstance(sub, ast.A_Expr) and sub.kind in (
            enums.A_Expr_Kind.AEXPR_OP,
            enums.A_Expr_Kind.AEXPR_OP_ANY,
            enums.A_Expr_Kind.AEXPR_OP_ALL,
        ):
            names = _names(sub.name)
            if not names:
                continue
            schema = names[-2] if len(names) > 1 else None
            left = types.of(sub.lexpr) if sub.lexpr is not None else _UNKNOWN
            right = types.of(sub.rexpr) if sub.kind == enums.A_Expr_Kind.AEXPR_OP else _UNKNOWN
            # An untyped literal takes the other operand's type, as PostgreSQL resolves it.
            if left == _UNKNOWN and isinstance(sub.lexpr, ast.A_Const):
                left = right
            if right == _UNKNOWN and isinstance(sub.rexpr, ast.A_Const):
                right = left
            candidates = _routines(conn, db.query(conn, QUERIES, "safety_operators"), schema, names[-1])
            if sub.lexpr is None:
                candidates = [r for r in candidates if r.argtypes[0] == 0]
            _require_immutable(f"operator {names[-1]}", _narrow(candidates, [left, right]), where)
        elif isinstance(sub, ast.TypeCast):
            source, target = types.of(sub.arg), _type_oid(conn, sub.typeName)
            if target == _UNKNOWN:
                raise UnsafeSQLError(f"refused: {where}: type {_deparse(sub.typeName)} does not exist")
            if source in (_UNKNOWN, target):
                continue
            row = db.fetch_dicts(conn, db.query(conn, QUERIES, "safety_cast"), {"source": source, "target": target})
            if row:
                cast = row[0]
                volatility = (
                    cast["volatility"]
                    if cast["method"] == "f"
                    else (cast["input_volatility"] if cast["method"] == "i" else "i")
                )
                if volatility and volatility != "i":
                    raise UnsafeSQLError(
                        f"refused: {where}: the cast to {_deparse(sub.typeName)} is "
                        f"{_VOLATILITY.get(volatility, volatility)}, an index needs IMMUTABLE"
                    )


def check_index_target(conn: db.Connection, ddl: IndexDDL) -> IndexDDL:
    """Check ``ddl`` against the audited database; return it with the resolved schema.

    The table must exist and be a regular or partitioned table outside the catalogs and our ``pgarch``
    schema; every column must exist; every function, operator and cast in expressions and the predicate
    must be IMMUTABLE (PostgreSQL re-checks this when it builds the index).
    """
    relation = catalog.relation(conn, ddl.schema, ddl.table)
    target = f"{ddl.schema}.{ddl.table}" if ddl.schema else ddl.table
    if relation is None:
        raise UnsafeSQLError(f"refused: table {target} does not exist in this database")
    if relation.schema_name in _PROTECTED_SCHEMAS or relation.schema_name.startswith(("pg_toast", "pg_temp")):
        raise UnsafeSQLError(f"refused: {relation.schema_name}.{relation.table_name} is a system or pg-architect table")
    if relation.relkind not in ("r", "p"):
        kinds = {
            "v": "a view",
            "m": "a materialized view",
            "f": "a foreign table",
            "S": "a sequence",
            "i": "an index",
            "I": "a partitioned index",
            "c": "a composite type",
            "t": "a TOAST table",
        }
        raise UnsafeSQLError(f"refused: {target} is {kinds.get(relation.relkind, 'not a table')}, not a table")
    rows = db.fetch(conn, db.query(conn, QUERIES, "safety_columns"), {"relid": relation.relid}, _Column)
    columns = {row.column_name: row.type_oid for row in rows}
    missing = [c for c in ddl.columns if c not in columns]
    if missing:
        raise UnsafeSQLError(
            f"refused: column {', '.join(missing)} does not exist in {relation.schema_name}.{relation.table_name}"
        )
    types = _Types(conn, columns)
    tree: Any = parser.parse_sql(ddl.sql)[0].stmt
    for elem in tree.indexParams or ():
        if elem.expr is not None:
            _check_immutable(conn, elem.expr, types, "index expression")
    if tree.whereClause is not None:
        _check_immutable(conn, tree.whereClause, types, "index predicate")
    return IndexDDL(
        schema=relation.schema_name,
        table=ddl.table,
        name=ddl.name,
        method=ddl.method,
        elements=ddl.elements,
        include=ddl.include,
        where=ddl.where,
        concurrently=ddl.concurrently,
        if_not_exists=ddl.if_not_exists,
        unique=ddl.unique,
        sql=ddl.sql,
    )


# -- read-only SELECT --------------------------------------------------------------------------------


def _require_trusted(conn: db.Connection, routine: _Routine, what: str, depth: int) -> None:
    """Refuse a non-volatile routine that planning might run with side effects.

    The planner folds IMMUTABLE calls with constant arguments, and may evaluate STABLE ones to estimate
    selectivity, even for a plain EXPLAIN: a function that lies about its volatility then runs. Trusted:
    built-ins, the functions of well-known computational extensions, and SQL functions whose body is one
    read-only SELECT (checked like the statement itself). Everything else is refused before planning.
    """
    if routine.extension in DENIED_EXTENSIONS:
        raise UnsafeSQLError(
            f"refused: {what} belongs to extension {routine.extension}, which connects to other servers"
        )
    if routine.builtin or routine.extension in TRUSTED_EXTENSIONS:
        return
    declared = _VOLATILITY.get(routine.volatility, routine.volatility)
    if routine.language == "sql" and routine.body and routine.body.strip():
        if depth >= 4:
            raise UnsafeSQLError(f"refused: {what} nests SQL functions too deeply to check")
        try:
            check_readonly_select(routine.body.strip().rstrip(";"), conn, _depth=depth + 1)
        except UnsafeSQLError as exc:
            raise UnsafeSQLError(
                f"refused: {what} is declared {declared} but its SQL body is not a read-only SELECT ({exc})"
            ) from exc
        return
    raise UnsafeSQLError(
        f"refused: {what} is a user-defined {routine.language} function declared {declared}; planning may run "
        "it (constant folding), and its body cannot be checked for side effects"
    )


def _check_routines(
    conn: db.Connection, routines: Sequence[_Routine], what: str, depth: int, *, volatile_runs: bool
) -> None:
    """Every routine the statement may call: no VOLATILE one where it would run, none untrusted at all."""
    for routine in routines:
        if routine.volatility == "v":
            if volatile_runs:
                raise UnsafeSQLError(f"refused: {what} is VOLATILE (it may change data or have side effects)")
            if routine.extension in DENIED_EXTENSIONS:
                raise UnsafeSQLError(
                    f"refused: {what} belongs to extension {routine.extension}, which connects to other servers"
                )
            continue
        _require_trusted(conn, routine, what, depth)


def _check_volatility(conn: db.Connection, tree: Any, depth: int, *, volatile_runs: bool = True) -> None:
    """Refuse what running or planning the statement could do beyond reading: volatile routines (when the
    statement executes), untrusted routines of any volatility (planning may run them), foreign tables, and
    views that would do any of it."""
    ctes = {str(node.ctename) for node in _walk(tree) if isinstance(node, ast.CommonTableExpr)}
    for node in _walk(tree):
        if isinstance(node, ast.FuncCall):
            schema, name = _function_name(node)
            nargs = len(node.args or ())
            candidates = [
                r
                for r in _routines(conn, db.query(conn, QUERIES, "safety_functions"), schema, name)
                if _arity_matches(r, nargs)
            ]
            if not candidates:
                raise UnsafeSQLError(f"refused: function {name}() does not exist")
            if any(r.kind == "p" for r in candidates):
                raise UnsafeSQLError(f"refused: {name} is a procedure")
            _check_routines(conn, candidates, f"function {name}()", depth, volatile_runs=volatile_runs)
        elif isinstance(node, ast.A_Expr):
            names = _names(node.name)
            if names and node.kind not in (
                enums.A_Expr_Kind.AEXPR_BETWEEN,
                enums.A_Expr_Kind.AEXPR_NOT_BETWEEN,
                enums.A_Expr_Kind.AEXPR_BETWEEN_SYM,
                enums.A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM,
            ):
                schema = names[-2] if len(names) > 1 else None
                operators = _routines(conn, db.query(conn, QUERIES, "safety_operators"), schema, names[-1])
                what = f"operator {names[-1]}"
                if any(r.volatility == "v" for r in operators) and volatile_runs:
                    raise UnsafeSQLError(f"refused: {what} runs a VOLATILE function")
                _check_routines(conn, operators, what, depth, volatile_runs=volatile_runs)
        elif isinstance(node, ast.TypeCast):
            type_oid = _type_oid(conn, node.typeName)
            sql = db.query(conn, QUERIES, "safety_type_routines")
            routines = db.fetch(conn, sql, {"type": type_oid}, _Routine) if type_oid else []
            for routine in routines:
                what = f"casting to {_deparse(node.typeName)} runs {routine.name}()"
                if routine.volatility == "v" and volatile_runs:
                    raise UnsafeSQLError(
                        f"refused: casting to {_deparse(node.typeName)} runs VOLATILE {routine.name}()"
                    )
                _check_routines(conn, [routine], what, depth, volatile_runs=volatile_runs)
        elif isinstance(node, ast.RangeVar):
            if not node.schemaname and node.relname in ctes:
                continue
            relation = catalog.relation(conn, node.schemaname, str(node.relname))
            if relation is None:
                raise UnsafeSQLError(f"refused: relation {node.relname} does not exist")
            if relation.relkind == "f":
                raise UnsafeSQLError(f"refused: {relation.table_name} is a foreign table (reads another server)")
            if relation.relkind == "v":
                if depth >= 4:
                    raise UnsafeSQLError(f"refused: view {relation.table_name} nests views too deeply to check")
                definition = db.fetch_value(conn, db.query(conn, QUERIES, "view_definition"), {"relid": relation.relid})
                try:
                    check_readonly_select(str(definition), conn, _depth=depth + 1)
                except UnsafeSQLError as exc:
                    raise UnsafeSQLError(f"{exc} (inside view {relation.table_name})") from exc


def check_readonly_select(sql: str, conn: db.Connection, *, _depth: int = 0) -> None:
    """Accept one SELECT (or VALUES) that is safe to EXPLAIN ANALYZE; UnsafeSQLError otherwise.

    Refused: several statements, anything but SELECT, SELECT ... INTO, FOR UPDATE/SHARE, writable CTEs,
    deny-listed functions (set_config, pg_sleep, nextval, lo_*, dblink*, pg_advisory* ...), and every
    function, operator or cast that pg_proc marks VOLATILE; views are checked through their definition.
    PostgreSQL forbids writes inside STABLE and IMMUTABLE functions, which is why volatility is the
    line. Run it in a READ ONLY transaction too: a STABLE function could still call a VOLATILE one.
    """
    stmt = _one_statement(sql)
    if not isinstance(stmt, ast.SelectStmt):
        raise UnsafeSQLError(f"refused: expected SELECT, got {_statement_name(stmt)}")
    _check_nodes(stmt, _SELECT_NODES, "SELECT")
    _check_volatility(conn, stmt, _depth)


def check_explain_only_dml(sql: str, conn: db.Connection) -> None:
    """Accept one INSERT, UPDATE or DELETE that will only be planned (plain EXPLAIN, never executed).

    Planning runs no volatile code, but it does fold IMMUTABLE calls and may evaluate STABLE ones: every
    non-volatile routine must be trusted (see _require_trusted). Also refused: several statements, other
    statement kinds, SELECT ... INTO, locking clauses, deny-listed functions anywhere, foreign tables.
    """
    stmt = _one_statement(sql)
    if not isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        raise UnsafeSQLError(f"refused: expected INSERT, UPDATE or DELETE, got {_statement_name(stmt)}")
    _check_nodes(stmt, _DML_NODES, "DML")
    _check_volatility(conn, stmt, 0, volatile_runs=False)
