"""What one pg_stat_statements statement does, read from its parse tree (pglast) without an LLM.

pg_stat_statements stores normalised text: every constant became ``$n``. Some of that text is not valid
SQL any more (``interval $2``), so :func:`repair_placeholders` rewrites typed placeholders first. The
analysis then walks the tree scope by scope (CTEs, subqueries, joins) and records where each column is
used (equality, range, join, sort ...) and what each ``$n`` is compared with: the inputs of the index
advisor, of parameter sampling and of the structural embedding.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pglast import ast, enums, parser
from pglast.parser import ParseError
from pglast.stream import RawStream

from pg_architect.core.errors import PgArchitectError
from pg_architect.core.sqlfiles import MARKER

__all__ = [
    "INTERNAL_MARKER",
    "INTERNAL_SCHEMAS",
    "ColumnUse",
    "Complexity",
    "Kind",
    "ParamContext",
    "ParamUse",
    "QueryShape",
    "Role",
    "TableRef",
    "UnparseableQuery",
    "deparse",
    "is_internal",
    "parse_query",
    "repair_placeholders",
    "resolve_columns",
    "skip_reason",
]

Kind = Literal["select", "insert", "update", "delete", "merge", "utility"]
Role = Literal["eq", "range", "in", "like", "is_null", "neq", "join", "order_by", "group_by", "select", "other"]
ParamContext = Literal["compare", "limit", "offset", "in_list", "any_array", "like", "other"]
Complexity = Literal["low", "medium", "high"]

#: Comment our own statements carry, so the auditor never audits itself.
INTERNAL_MARKER = MARKER
#: Schemas whose relations are catalogs or ours; a statement touching only these is internal.
INTERNAL_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pgarch"})


class UnparseableQuery(PgArchitectError):
    """The statement text cannot be parsed (even after placeholder repair) or holds several statements."""


# -- models --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRef:
    """A base table as the statement names it (``schema`` is None when unqualified)."""

    schema: str | None
    name: str
    alias: str | None = None

    @property
    def qualified(self) -> str:
        """``schema.name``, or just ``name`` when the statement did not qualify it."""
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class ColumnUse:
    """One place a column (or an expression over columns) is used.

    ``column`` is set for a plain column; for an expression (``lower(email)``, ``created_at::date``)
    ``column`` is None and ``expression`` is its SQL with table qualifications removed, ready for an
    expression index. ``columns`` lists every column either form reads. ``table`` is None when the
    column could not be attributed to one table from the text alone (see :func:`resolve_columns`);
    ``candidates`` are then the base tables in scope, innermost first.
    """

    table: TableRef | None
    column: str | None
    expression: str | None
    role: Role
    operator: str | None = None
    param: int | None = None
    constant: str | None = None
    descending: bool = False
    nulls_first: bool | None = None
    columns: tuple[str, ...] = ()
    candidates: tuple[TableRef, ...] = ()
    # ``ORDER BY 1`` over ``SELECT *``: the table's column at this position, which only the catalog knows
    # (see :func:`resolve_ordinals`); ``column`` is None until then.
    ordinal: int | None = None

    @property
    def parameterised(self) -> bool:
        """True when the expression holds a placeholder: pg_stat_statements replaced a constant inside it
        (``date_trunc($1, created_at)``), so it cannot become an index expression as written."""
        return self.expression is not None and any(tok.name == "PARAM" for tok in _tokens(self.expression))


@dataclass(frozen=True, slots=True)
class ParamUse:
    """What placeholder ``$n`` meets: the column or expression, the operator and the syntactic context.

    ``operator`` is normalised to "column OP $n" (``$1 < col`` is recorded as ``>``); a BETWEEN's bounds
    are ``>=`` and ``<=``. ``function`` names the call a placeholder is a direct argument of (a
    normalised constant such as the unit in ``date_trunc($1, created_at)``).
    """

    table: TableRef | None
    column: str | None
    operator: str | None
    context: ParamContext
    cast_type: str | None = None
    expression: str | None = None
    function: str | None = None


@dataclass(frozen=True, slots=True)
class QueryShape:
    """The structure of one statement, as the advisor, parameter sampling and the embedding need it."""

    text: str
    kind: Kind
    tables: tuple[TableRef, ...] = ()
    columns: tuple[ColumnUse, ...] = ()
    parameters: dict[int, ParamUse] = field(default_factory=dict, hash=False)
    limit: int | None = None
    limit_param: int | None = None
    offset: int | None = None
    offset_param: int | None = None
    joins: int = 0
    aggregates: tuple[str, ...] = ()
    window_functions: tuple[str, ...] = ()
    distinct: bool = False
    subqueries: int = 0
    ctes: int = 0
    or_predicates: bool = False
    intent: str = ""
    complexity: Complexity = "low"
    utility_command: str | None = None
    # DML: the table it writes, and the columns an UPDATE sets (what a new index must maintain).
    target: TableRef | None = None
    updated_columns: tuple[str, ...] = ()
    # ``a.x = b.y`` join equalities, as positions in ``columns`` (kept 1:1 by every resolution step): what
    # the planner's equivalence classes carry across (``b.y = $1`` filters ``a.x`` too).
    join_pairs: tuple[tuple[int, int], ...] = ()

    @property
    def is_utility(self) -> bool:
        """SET, SHOW, transaction control, DDL, VACUUM, EXPLAIN ...: nothing an index can speed up."""
        return self.kind == "utility"

    @property
    def has_limit(self) -> bool:
        return self.limit is not None or self.limit_param is not None

    def uses(self, *roles: Role) -> tuple[ColumnUse, ...]:
        """The column uses in any of ``roles``, in statement order."""
        return tuple(use for use in self.columns if use.role in roles)


# -- placeholder repair --------------------------------------------------------------------------------

_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_OPEN, _CLOSE = "ASCII_40", "ASCII_41"
_INTERVAL_FIELDS = frozenset({"YEAR_P", "MONTH_P", "DAY_P", "HOUR_P", "MINUTE_P", "SECOND_P"})


def _tokens(text: str) -> list[parser.Token]:
    """The scanner's tokens without comments; empty when the text cannot even be scanned."""
    try:
        return [tok for tok in parser.scan(text) if tok.name not in _COMMENTS]
    except ParseError:
        return []


def _interval_qualifier_end(tokens: Sequence[parser.Token], param: int) -> int:
    """Last token of an interval qualifier after ``interval $n`` (``day``, ``hour to second(3)``)."""
    end = param
    j = param + 1
    for _ in range(2):
        if j >= len(tokens) or tokens[j].name not in _INTERVAL_FIELDS:
            break
        end = j
        if (tokens[j].name == "SECOND_P" and j + 3 < len(tokens) and tokens[j + 1].name == _OPEN
                and tokens[j + 3].name == _CLOSE):
            end = j + 3
        if end + 2 < len(tokens) and tokens[end + 1].name == "TO":
            j = end + 2
        else:
            break
    return end


def repair_placeholders(text: str) -> str:
    """Make pg_stat_statements text valid SQL for PostgreSQL: ``interval $2`` becomes ``$2::interval``.

    pg_stat_statements replaces the string inside a typed literal (``timestamp '2024-01-01'``,
    ``interval '3 days'``, ``date '...'``) with ``$n``, leaving ``<type> $n``, which the server rejects.
    pglast's parser (libpg_query) accepts that form, so the parse tree tells where each one is: a cast of a
    placeholder whose type name comes *before* it. Everything else, including ``$1::text``,
    ``CAST($1 AS int)``, ``IN ($1, $2)``, ``= ANY($1)`` and ``LIMIT $3 OFFSET $4``, is left as written.
    Text that cannot be parsed is returned unchanged (``parse_query`` reports it).
    """
    try:
        statements = parser.parse_sql(text)
    except ParseError:
        return text
    tokens = _tokens(text)
    param_at = {tok.start: i for i, tok in enumerate(tokens) if tok.name == "PARAM"}
    edits: list[tuple[int, int, str]] = []
    for node in walk(statements):
        if not (isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.ParamRef)):
            continue
        type_name: Any = node.typeName
        type_start, param_start = type_name.location, node.arg.location
        if type_start is None or param_start is None or type_start >= param_start or param_start not in param_at:
            continue
        index = param_at[param_start]
        type_text = " ".join(text[type_start:param_start].split())
        is_interval = _names(type_name.names)[-1:] == ["interval"]
        end = _interval_qualifier_end(tokens, index) if is_interval else index
        qualifier = " " + " ".join(text[tokens[index + 1].start : tokens[end].end + 1].split()) if end > index else ""
        param_text = text[tokens[index].start : tokens[index].end + 1]
        edits.append((type_start, tokens[end].end + 1, f"{param_text}::{type_text}{qualifier}"))
    for begin, finish, replacement in sorted(edits, reverse=True):
        text = text[:begin] + replacement + text[finish:]
    return text


# -- parse tree helpers ----------------------------------------------------------------------------

_STREAM = RawStream


def deparse(node: Any) -> str:
    """SQL text of a parse tree node (pglast's deparser)."""
    return str(_STREAM()(node))


def walk(node: Any, *, into_sublinks: bool = True) -> Iterator[Any]:
    """Every node under ``node`` (pre-order); a SubLink is yielded but not entered unless asked."""
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, list | tuple):
            stack.extend(reversed(current))
            continue
        if not isinstance(current, ast.Node):
            continue
        yield current
        if isinstance(current, ast.SubLink) and not into_sublinks:
            continue
        children = [getattr(current, name) for name in current]
        stack.extend(reversed(children))


def _names(items: Iterable[Any] | None) -> list[str]:
    return [str(item.sval) for item in items or () if isinstance(item, ast.String)]


def _op_name(name: Iterable[Any] | None) -> str:
    names = _names(name)
    return names[-1] if names else ""


def _strip_qualifiers(node: Any) -> Any:
    """A copy of ``node`` whose column references keep only the column name (for index expressions)."""
    clone = copy.deepcopy(node)
    for sub in walk(clone, into_sublinks=False):
        if isinstance(sub, ast.ColumnRef) and sub.fields and len(sub.fields) > 1:
            sub.fields = (sub.fields[-1],)
    return clone


def _const_text(node: Any) -> str | None:
    if not isinstance(node, ast.A_Const):
        return None
    if node.isnull:
        return "NULL"
    val = node.val
    if isinstance(val, ast.String):
        return str(val.sval)
    if isinstance(val, ast.Integer):
        return str(val.ival)
    if isinstance(val, ast.Float):
        return str(val.fval)
    if isinstance(val, ast.Boolean):
        return "true" if val.boolval else "false"
    if isinstance(val, ast.BitString):
        return str(val.bsval)
    return None


_COMMUTE = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "<>": "<>", "!=": "<>"}
_RANGE_OPS = frozenset({"<", ">", "<=", ">="})
_REGEX_OPS = frozenset({"~", "~*", "!~", "!~*"})
_AGGREGATES = frozenset({
    "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every",
    "bit_and", "bit_or", "bit_xor", "json_agg", "jsonb_agg", "json_agg_strict", "jsonb_agg_strict",
    "json_object_agg", "jsonb_object_agg", "xmlagg", "stddev", "stddev_pop", "stddev_samp", "variance",
    "var_pop", "var_samp", "covar_pop", "covar_samp", "corr", "regr_avgx", "regr_avgy", "regr_count",
    "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "percentile_cont",
    "percentile_disc", "mode", "any_value", "range_agg", "range_intersect_agg",
})
_TIME_HINTS = ("created", "updated", "_at", "date", "time", "ts", "when")


def _role_for(op: str, negated: bool) -> tuple[Role, str]:
    """Role and (possibly negated) operator of ``column OP value``."""
    if op == "!=":
        op = "<>"
    if negated:
        flipped = {"=": "<>", "<>": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
        if op in flipped:
            op = flipped[op]
        else:
            return "neq", f"NOT {op}"
    if op == "=":
        return "eq", op
    if op == "<>":
        return "neq", op
    if op in _RANGE_OPS:
        return "range", op
    if op in _REGEX_OPS:
        return ("neq", op) if op.startswith("!") else ("like", op)
    return "other", op


# -- analysis ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Rel:
    table: TableRef | None  # None: a derived relation (subquery, CTE, function, VALUES)
    # A derived relation the planner flattens into its one base table (an inlinable CTE, a subquery in FROM
    # that only projects columns): its column names -> the base table's; None when it is the table itself
    # (or ``SELECT *`` of it). Filters on it are filters on the base table, which an index serves.
    columns: dict[str, str] | None = None

    def base_column(self, column: str) -> str | None:
        if self.columns is None:
            return column
        return self.columns.get(column)


def projection(node: Any) -> tuple[TableRef, dict[str, str] | None] | None:
    """(base table, column map) when ``node`` is a SELECT the planner pulls up into its one table: a plain
    projection of columns (or ``*``) with at most a WHERE, no grouping, DISTINCT, LIMIT, window or set
    operation, reading one table; None otherwise."""
    if not isinstance(node, ast.SelectStmt) or node.op != enums.SetOperation.SETOP_NONE:
        return None
    if any(
        getattr(node, name, None)
        for name in ("withClause", "groupClause", "havingClause", "distinctClause", "limitCount", "limitOffset",
                     "windowClause", "lockingClause", "valuesLists", "intoClause")
    ):
        return None
    if not node.fromClause or len(node.fromClause) != 1 or not isinstance(node.fromClause[0], ast.RangeVar):
        return None
    rangevar = node.fromClause[0]
    table = TableRef(str(rangevar.schemaname) if rangevar.schemaname else None, str(rangevar.relname), None)
    mapping: dict[str, str] = {}
    star = False
    for target in node.targetList or ():
        value = target.val
        if not isinstance(value, ast.ColumnRef):
            return None  # an expression or aggregate: not a plain projection (the column is derived)
        fields = value.fields or ()
        if any(isinstance(f, ast.A_Star) for f in fields):
            star = True
            continue
        names = _names(fields)
        if not names:
            return None
        mapping[str(target.name) if target.name else names[-1]] = names[-1]
    if star and mapping:
        return None  # ``*`` next to renamed columns: keep it simple, treat as derived
    return table, (None if star else mapping)


def _references(node: Any, name: str) -> int:
    """How many times ``name`` is used as a relation in ``node`` (a CTE referenced twice is not inlined)."""
    return sum(
        1 for n in walk(node) if isinstance(n, ast.RangeVar) and not n.schemaname and str(n.relname) == name
    )


class _Scope:
    """The relations one query level can see; lookups fall through to the enclosing levels."""

    __slots__ = ("ctes", "inlined", "parent", "rels")

    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.rels: dict[str, _Rel] = {}
        self.ctes: set[str] = set()
        self.inlined: dict[str, _Rel] = {}  # CTEs the planner inlines into their one base table

    def add(self, key: str, rel: _Rel) -> None:
        self.rels.setdefault(key, rel)

    def lookup(self, key: str) -> _Rel | None:
        scope: _Scope | None = self
        while scope is not None:
            if key in scope.rels:
                return scope.rels[key]
            scope = scope.parent
        return None

    def inlined_cte(self, name: str) -> _Rel | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.inlined.get(name)
            scope = scope.parent
        return None

    def is_cte(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return True
            scope = scope.parent
        return False

    def candidates(self) -> tuple[TableRef, ...]:
        found: list[TableRef] = []
        scope: _Scope | None = self
        while scope is not None:
            found.extend(rel.table for rel in scope.rels.values() if rel.table is not None)
            scope = scope.parent
        return tuple(found)


class _Side(NamedTuple):
    """The column side of a comparison: a plain column or an expression over columns."""

    table: TableRef | None
    column: str | None
    expression: str | None
    columns: tuple[str, ...]
    candidates: tuple[TableRef, ...]


class _Value(NamedTuple):
    """The other side: a placeholder, a constant, or something else (expression, subquery)."""

    param: int | None
    constant: str | None
    cast: str | None


_DERIVED = object()  # a column of a subquery / CTE / function: no base table to index


class _Analyzer:
    def __init__(self) -> None:
        self.tables: list[TableRef] = []
        self.main_tables: list[TableRef] = []
        self.uses: list[ColumnUse] = []
        self.params: dict[int, ParamUse] = {}
        self.joins = 0
        self.subqueries = 0
        self.ctes = 0
        self.aggregates: list[str] = []
        self.windows: list[str] = []
        self.distinct = False
        self.or_predicates = False
        self.limit: int | None = None
        self.limit_param: int | None = None
        self.offset: int | None = None
        self.offset_param: int | None = None
        self.target: TableRef | None = None
        self.updated: list[str] = []
        self.join_pairs: list[tuple[int, int]] = []

    # statements

    def statement(self, node: Any, parent: _Scope | None, main: bool) -> None:
        if isinstance(node, ast.SelectStmt):
            self._select(node, parent, main)
        elif isinstance(node, ast.InsertStmt):
            self._insert(node, parent, main)
        elif isinstance(node, ast.UpdateStmt):
            self._update(node, parent, main)
        elif isinstance(node, ast.DeleteStmt):
            self._delete(node, parent, main)
        elif isinstance(node, ast.MergeStmt):
            self._merge(node, parent, main)
        elif node is not None:
            self.expr(node, parent or _Scope(None))

    def _with(self, clause: Any, scope: _Scope, body: Any = None) -> None:
        if clause is None:
            return
        for cte in clause.ctes or ():
            scope.ctes.add(str(cte.ctename))
            # PostgreSQL inlines a non-recursive CTE used once unless it is MATERIALIZED (or NOT MATERIALIZED).
            inlinable = not clause.recursive and (
                cte.ctematerialized == enums.CTEMaterialize.CTEMaterializeNever
                or (
                    cte.ctematerialized == enums.CTEMaterialize.CTEMaterializeDefault
                    and body is not None
                    and _references(body, str(cte.ctename)) == 1
                )
            )
            flat = projection(cte.ctequery) if inlinable else None
            if flat is not None and not scope.is_cte(flat[0].name):
                scope.inlined[str(cte.ctename)] = _Rel(flat[0], flat[1])
        for cte in clause.ctes or ():
            self.ctes += 1
            self.statement(cte.ctequery, scope, False)

    def _select(self, node: Any, parent: _Scope | None, main: bool) -> None:
        scope = _Scope(parent)
        self._with(node.withClause, scope, node)
        if node.op != enums.SetOperation.SETOP_NONE:
            self._select(node.larg, scope, main)
            self._select(node.rarg, scope, main)
            for sort in node.sortClause or ():
                self.expr(sort.node, scope)
            self._limit(node, scope, main)
            return
        for row in node.valuesLists or ():
            self.expr(row, scope)
        for item in node.fromClause or ():
            self._from_item(item, scope, main)
        if node.fromClause and len(node.fromClause) > 1:
            self.joins += len(node.fromClause) - 1
        if node.whereClause is not None:
            self.predicate(node.whereClause, scope, top=main)
        targets: list[Any] = []
        for target in node.targetList or ():
            targets.append(target)
            self._target(target.val, scope)
        for item in node.groupClause or ():
            self._group(item, scope, targets)
        if node.havingClause is not None:
            self.expr(node.havingClause, scope)
        for window in node.windowClause or ():
            self.expr(window, scope)
        for sort in node.sortClause or ():
            self._sort(sort, scope, targets)
        self._limit(node, scope, main)
        if main and node.distinctClause is not None:
            self.distinct = True

    def _insert(self, node: Any, parent: _Scope | None, main: bool) -> None:
        scope = _Scope(parent)
        self._with(node.withClause, scope)
        target = self._add_table(node.relation, scope, main)
        if main and self.target is None:
            self.target = target
        columns = [str(col.name) for col in node.cols or ()]
        source = node.selectStmt
        if isinstance(source, ast.SelectStmt) and source.valuesLists:
            for row in source.valuesLists:
                for index, value in enumerate(row):
                    column = columns[index] if index < len(columns) else None
                    self._assign(target, column, value, scope)
        elif source is not None:
            self.statement(source, scope, False)
        conflict = node.onConflictClause
        if conflict is not None:
            scope.add("excluded", _Rel(None))
            for assignment in conflict.targetList or ():
                self._assign(target, assignment.name, assignment.val, scope)
            if conflict.whereClause is not None:
                self.expr(conflict.whereClause, scope)
        self._returning(node, scope)

    def _update(self, node: Any, parent: _Scope | None, main: bool) -> None:
        scope = _Scope(parent)
        self._with(node.withClause, scope)
        target = self._add_table(node.relation, scope, main)
        if main and self.target is None:
            self.target = target
            self.updated = [str(a.name) for a in node.targetList or () if a.name]
        for item in node.fromClause or ():
            self._from_item(item, scope, main)
        self.joins += len(node.fromClause or ())
        for assignment in node.targetList or ():
            self._assign(target, assignment.name, assignment.val, scope)
        if node.whereClause is not None:
            self.predicate(node.whereClause, scope, top=main)
        self._returning(node, scope)

    def _delete(self, node: Any, parent: _Scope | None, main: bool) -> None:
        scope = _Scope(parent)
        self._with(node.withClause, scope)
        target = self._add_table(node.relation, scope, main)
        if main and self.target is None:
            self.target = target
        for item in node.usingClause or ():
            self._from_item(item, scope, main)
        self.joins += len(node.usingClause or ())
        if node.whereClause is not None:
            self.predicate(node.whereClause, scope, top=main)
        self._returning(node, scope)

    def _merge(self, node: Any, parent: _Scope | None, main: bool) -> None:
        scope = _Scope(parent)
        self._with(node.withClause, scope)
        target = self._add_table(node.relation, scope, main)
        self._from_item(node.sourceRelation, scope, main)
        self.joins += 1
        if node.joinCondition is not None:
            self.predicate(node.joinCondition, scope)
        for clause in node.mergeWhenClauses or ():
            if clause.condition is not None:
                self.predicate(clause.condition, scope)
            names = [str(t.name) for t in clause.targetList or ()]
            if clause.values:
                for index, value in enumerate(clause.values):
                    self._assign(target, names[index] if index < len(names) else None, value, scope)
            else:
                for assignment in clause.targetList or ():
                    if assignment.val is not None:
                        self._assign(target, assignment.name, assignment.val, scope)
        self._returning(node, scope)

    def _returning(self, node: Any, scope: _Scope) -> None:
        # pglast 8 (PostgreSQL 18 grammar) wraps RETURNING in a ReturningClause; older ones had a list.
        clause = getattr(node, "returningClause", None)
        items = clause.exprs if clause is not None else getattr(node, "returningList", None)
        for item in items or ():
            self.expr(item, scope)

    def _assign(self, table: TableRef | None, column: str | None, value: Any, scope: _Scope) -> None:
        """``column = value`` in SET / VALUES: a placeholder here takes the column's type."""
        inner, cast = _unwrap_cast(value)
        if isinstance(inner, ast.ParamRef) and column:
            self._param(_number(inner), ParamUse(table, str(column), None, "other", cast))
        self.expr(value, scope)

    def _limit(self, node: Any, scope: _Scope, main: bool) -> None:
        for clause, context in ((node.limitCount, "limit"), (node.limitOffset, "offset")):
            if clause is None:
                continue
            inner, cast = _unwrap_cast(clause)
            param = _number(inner) if isinstance(inner, ast.ParamRef) else None
            constant = _const_text(inner)
            if param is not None:
                self._param(param, ParamUse(None, None, None, "limit" if context == "limit" else "offset", cast))
            else:
                self.expr(clause, scope)
            if not main:
                continue
            value = int(constant) if constant is not None and constant.lstrip("-").isdigit() else None
            if context == "limit":
                self.limit, self.limit_param = value, param
            else:
                self.offset, self.offset_param = value, param

    # FROM

    def _add_table(self, rangevar: Any, scope: _Scope, main: bool) -> TableRef | None:
        name = str(rangevar.relname)
        alias = str(rangevar.alias.aliasname) if rangevar.alias is not None else None
        if not rangevar.schemaname and scope.is_cte(name):
            scope.add(alias or name, scope.inlined_cte(name) or _Rel(None))
            return None
        table = TableRef(str(rangevar.schemaname) if rangevar.schemaname else None, name, alias)
        if table not in self.tables:
            self.tables.append(table)
        if main and table not in self.main_tables:
            self.main_tables.append(table)
        scope.add(alias or name, _Rel(table))
        return table

    def _from_item(self, item: Any, scope: _Scope, main: bool) -> None:
        if isinstance(item, ast.RangeVar):
            self._add_table(item, scope, main)
        elif isinstance(item, ast.JoinExpr):
            self._from_item(item.larg, scope, main)
            self._from_item(item.rarg, scope, main)
            self.joins += 1
            left, right = _side_table(item.larg, scope), _side_table(item.rarg, scope)
            for name in _names(item.usingClause):
                for table in (left, right):
                    self.uses.append(ColumnUse(table, name, None, "join", "=", columns=(name,),
                                               candidates=() if table else scope.candidates()))
            if item.quals is not None:
                self.predicate(item.quals, scope)
            if item.alias is not None:
                scope.add(str(item.alias.aliasname), _Rel(None))
        elif isinstance(item, ast.RangeSubselect):
            self.subqueries += 1
            self.statement(item.subquery, scope, False)
            if item.alias is not None:
                flat = None if item.lateral else projection(item.subquery)
                rel = _Rel(flat[0], flat[1]) if flat is not None and not scope.is_cte(flat[0].name) else _Rel(None)
                scope.add(str(item.alias.aliasname), rel)
        elif isinstance(item, ast.RangeTableSample):
            self._from_item(item.relation, scope, main)
            self.expr(item.args, scope)
            self.expr(item.repeatable, scope)
        else:
            # Functions in FROM, XMLTABLE, JSON_TABLE: no base table, but they may hold placeholders.
            self.expr(item, scope)
            alias = getattr(item, "alias", None)
            if alias is not None:
                scope.add(str(alias.aliasname), _Rel(None))
            elif isinstance(item, ast.RangeFunction):
                for function in item.functions or ():
                    call = function[0] if isinstance(function, list | tuple) else function
                    if isinstance(call, ast.FuncCall):
                        scope.add(_op_name(call.funcname), _Rel(None))

    # column resolution

    def _resolve(self, ref: Any, scope: _Scope) -> tuple[TableRef | None, str, tuple[TableRef, ...]] | object:
        """(table, column, candidates) for a column reference, or _DERIVED for a derived relation's column."""
        fields = ref.fields or ()
        if any(isinstance(f, ast.A_Star) for f in fields):
            return _DERIVED
        names = _names(fields)
        if not names:
            return _DERIVED
        column = names[-1]
        if len(names) >= 2:
            qualifier = names[-2]
            rel = scope.lookup(qualifier)
            if rel is None and len(names) >= 3:
                rel = next((r for r in _all_rels(scope) if r.table and r.table.name == qualifier), None)
            if rel is None:
                return (None, column, scope.candidates())
            base = rel.base_column(column) if rel.table is not None else None
            return _DERIVED if rel.table is None or base is None else (rel.table, base, ())
        if len(scope.rels) == 1:
            only = next(iter(scope.rels.values()))
            base = only.base_column(column) if only.table is not None else None
            return _DERIVED if only.table is None or base is None else (only.table, base, ())
        if scope.rels and all(rel.table is None for rel in scope.rels.values()):
            return _DERIVED
        return (None, column, scope.candidates())

    def side(self, node: Any, scope: _Scope) -> _Side | None:
        """The column side of a comparison, or None when ``node`` reads no base-table column."""
        if isinstance(node, ast.ColumnRef):
            resolved = self._resolve(node, scope)
            if not isinstance(resolved, tuple):
                return None
            table, column, owners = resolved
            return _Side(table, column, None, (column,), owners)
        if isinstance(node, ast.SubLink | ast.ParamRef | ast.A_Const):
            return None
        refs = [sub for sub in walk(node, into_sublinks=False) if isinstance(sub, ast.ColumnRef)]
        if not refs or any(isinstance(sub, ast.SubLink) for sub in walk(node, into_sublinks=False)):
            return None
        if any(isinstance(sub, ast.FuncCall) and _is_aggregate(sub) for sub in walk(node, into_sublinks=False)):
            return None
        tables: set[TableRef | None] = set()
        columns: list[str] = []
        candidates: tuple[TableRef, ...] = ()
        for ref in refs:
            resolved = self._resolve(ref, scope)
            if not isinstance(resolved, tuple):
                return None
            table, column, cands = resolved
            tables.add(table)
            candidates = candidates or cands
            if column not in columns:
                columns.append(column)
        table = next(iter(tables)) if len(tables) == 1 else None
        return _Side(table, None, deparse(_strip_qualifiers(node)), tuple(columns),
                     candidates if table is None else ())

    # predicates

    def predicate(self, node: Any, scope: _Scope, *, negated: bool = False, top: bool = False) -> None:
        """Walk a WHERE / ON / HAVING-like boolean expression, recording column uses by role."""
        if isinstance(node, ast.BoolExpr):
            if node.boolop == enums.BoolExprType.NOT_EXPR:
                for arg in node.args or ():
                    self.predicate(arg, scope, negated=not negated, top=top)
                return
            conjunctive = (node.boolop == enums.BoolExprType.AND_EXPR) != negated
            if top and not conjunctive:
                self.or_predicates = True
            for arg in node.args or ():
                self.predicate(arg, scope, negated=negated, top=top and conjunctive)
        elif isinstance(node, ast.A_Expr):
            self._a_expr(node, scope, negated)
        elif isinstance(node, ast.NullTest):
            side = self.side(node.arg, scope)
            is_null = (node.nulltesttype == enums.NullTestType.IS_NULL) != negated
            if side is not None:
                self._use(side, "is_null", "IS NULL" if is_null else "IS NOT NULL")
            self.expr(node.arg, scope)
        elif isinstance(node, ast.BooleanTest):
            side = self.side(node.arg, scope)
            test = node.booltesttype
            if side is not None and test in (enums.BoolTestType.IS_TRUE, enums.BoolTestType.IS_FALSE):
                value = (test == enums.BoolTestType.IS_TRUE) != negated
                self._use(side, "eq", "=", constant="true" if value else "false")
            self.expr(node.arg, scope)
        elif isinstance(node, ast.SubLink):
            self._sublink(node, scope, negated)
        elif isinstance(node, ast.ColumnRef):
            side = self.side(node, scope)
            if side is not None:
                # "WHERE active": an equality with true, a classic partial-index predicate.
                self._use(side, "eq", "=", constant="false" if negated else "true")
        else:
            self.expr(node, scope)

    def _a_expr(self, node: Any, scope: _Scope, negated: bool) -> None:
        kind = node.kind
        op = _op_name(node.name)
        kinds = enums.A_Expr_Kind
        if kind == kinds.AEXPR_OP and node.lexpr is not None:
            self._binary(node.lexpr, node.rexpr, op, scope, negated)
        elif kind in (kinds.AEXPR_OP_ANY, kinds.AEXPR_OP_ALL):
            is_any = kind == kinds.AEXPR_OP_ANY
            side = self.side(node.lexpr, scope)
            if side is not None:
                role, operator = self._quantified_role(op, is_any, negated)
                inner, cast = _unwrap_cast(node.rexpr)
                if isinstance(inner, ast.ParamRef):
                    self._use(side, role, operator, param=_number(inner))
                    self._param(_number(inner), self._param_use(side, operator, "any_array", cast))
                elif isinstance(inner, ast.A_ArrayExpr):
                    self._list(side, role, operator, inner.elements or (), scope)
                else:
                    self._use(side, role, operator)
            self.expr(node.lexpr, scope)
            self.expr(node.rexpr, scope)
        elif kind == kinds.AEXPR_IN:
            side = self.side(node.lexpr, scope)
            if side is not None:
                positive = (op == "=") != negated
                self._list(side, "in" if positive else "neq", "IN" if positive else "NOT IN", node.rexpr, scope)
            self.expr(node.lexpr, scope)
            self.expr(node.rexpr, scope)
        elif kind in (kinds.AEXPR_LIKE, kinds.AEXPR_ILIKE, kinds.AEXPR_SIMILAR):
            word = {kinds.AEXPR_LIKE: "LIKE", kinds.AEXPR_ILIKE: "ILIKE"}.get(kind, "SIMILAR TO")
            positive = (not op.startswith("!")) != negated
            side = self.side(node.lexpr, scope)
            pattern = node.rexpr
            if kind == kinds.AEXPR_SIMILAR and isinstance(pattern, ast.FuncCall) and pattern.args:
                pattern = pattern.args[0]  # the grammar wraps the pattern in similar_to_escape()
            if side is not None:
                operator = word if positive else f"NOT {word}"
                value = _value(pattern)
                self._use(side, "like" if positive else "neq", operator, param=value.param,
                          constant=value.constant)
                if value.param is not None:
                    self._param(value.param, self._param_use(side, operator, "like", value.cast))
            self.expr(node.lexpr, scope)
            self.expr(node.rexpr, scope)
        elif kind in (kinds.AEXPR_BETWEEN, kinds.AEXPR_BETWEEN_SYM, kinds.AEXPR_NOT_BETWEEN,
                      kinds.AEXPR_NOT_BETWEEN_SYM):
            inside = kind in (kinds.AEXPR_BETWEEN, kinds.AEXPR_BETWEEN_SYM)
            side = self.side(node.lexpr, scope)
            bounds = list(node.rexpr or ())
            if side is not None and len(bounds) == 2:
                if inside != negated:
                    # BETWEEN is a >= and a <= on the same column: record it exactly so.
                    for bound, operator in zip(bounds, (">=", "<="), strict=True):
                        value = _value(bound)
                        self._use(side, "range", operator, param=value.param, constant=value.constant)
                        if value.param is not None:
                            self._param(value.param, self._param_use(side, operator, "compare", value.cast))
                else:
                    self._use(side, "neq", "NOT BETWEEN")
            self.expr(node.lexpr, scope)
            self.expr(node.rexpr, scope)
        elif kind in (kinds.AEXPR_DISTINCT, kinds.AEXPR_NOT_DISTINCT):
            equal = (kind == kinds.AEXPR_NOT_DISTINCT) != negated
            self._binary(node.lexpr, node.rexpr, "=" if equal else "<>", scope, False,
                         label="IS NOT DISTINCT FROM" if equal else "IS DISTINCT FROM")
        else:
            self.expr(node, scope)

    @staticmethod
    def _quantified_role(op: str, is_any: bool, negated: bool) -> tuple[Role, str]:
        if op == "=" and is_any and not negated:
            return "in", "= ANY"
        if op in ("<>", "!=") and not is_any and not negated:
            return "neq", "<> ALL"
        if op in ("~~", "~~*") and is_any and not negated:
            return "like", "LIKE ANY" if op == "~~" else "ILIKE ANY"
        if op in _RANGE_OPS and not negated:
            return "range", f"{op} {'ANY' if is_any else 'ALL'}"
        return "neq" if negated else "other", f"{'NOT ' if negated else ''}{op} {'ANY' if is_any else 'ALL'}"

    def _list(self, side: _Side, role: Role, operator: str, items: Iterable[Any], scope: _Scope) -> None:
        params: list[int] = []
        constants: list[str] = []
        for item in items or ():
            value = _value(item)
            if value.param is not None:
                params.append(value.param)
                self._param(value.param, self._param_use(side, operator, "in_list", value.cast))
            elif value.constant is not None:
                constants.append(value.constant)
        constant = constants[0] if len(constants) == 1 and not params else None
        self._use(side, role, operator, param=params[0] if params else None, constant=constant)

    def _binary(self, left: Any, right: Any, op: str, scope: _Scope, negated: bool, *,
                label: str | None = None) -> None:
        left_side, right_side = self.side(left, scope), self.side(right, scope)
        if left_side is not None and right_side is not None:
            operator = label or op
            self._use(left_side, "join", operator)
            self._use(right_side, "join", _COMMUTE.get(operator, operator))
            if operator == "=" and not negated and left_side.column is not None and right_side.column is not None:
                self.join_pairs.append((len(self.uses) - 2, len(self.uses) - 1))
        elif left_side is not None or right_side is not None:
            if left_side is not None:
                side, value_node, oriented = left_side, right, op
            else:
                assert right_side is not None
                side, value_node, oriented = right_side, left, _COMMUTE.get(op, op)
            role, operator = _role_for(oriented, negated)
            if label is not None:
                operator = label
            if _reads_columns(value_node):
                # Compared with a column of a subquery/CTE (or an outer query): a join, not a filter.
                self._use(side, "join", operator)
                self.expr(left, scope)
                self.expr(right, scope)
                return
            value = _value(value_node)
            self._use(side, role, operator, param=value.param, constant=value.constant)
            if value.param is not None:
                self._param(value.param, self._param_use(side, operator, "compare", value.cast))
        self.expr(left, scope)
        self.expr(right, scope)

    def _sublink(self, node: Any, scope: _Scope, negated: bool) -> None:
        kind = node.subLinkType
        types = enums.SubLinkType
        if kind in (types.ANY_SUBLINK, types.ALL_SUBLINK) and node.testexpr is not None:
            side = self.side(node.testexpr, scope)
            if side is not None:
                positive = (kind == types.ANY_SUBLINK and _op_name(node.operName) in ("", "=")) != negated
                self._use(side, "in" if positive else "neq", "IN" if positive else "NOT IN")
        self.expr(node, scope)

    def _use(self, side: _Side, role: Role, operator: str | None, *, param: int | None = None,
             constant: str | None = None, descending: bool = False, nulls_first: bool | None = None) -> None:
        self.uses.append(ColumnUse(side.table, side.column, side.expression, role, operator, param, constant,
                                   descending, nulls_first, side.columns, side.candidates))

    @staticmethod
    def _param_use(side: _Side, operator: str | None, context: ParamContext, cast: str | None) -> ParamUse:
        return ParamUse(side.table, side.column, operator, context, cast, side.expression)

    def _param(self, number: int, use: ParamUse) -> None:
        """Keep the most informative use of ``$number``: a column beats none, a context beats 'other'."""
        old = self.params.get(number)
        if old is None:
            self.params[number] = use
            return
        def score(u: ParamUse) -> int:
            return 4 * (u.column is not None or u.expression is not None) + 2 * (u.context != "other")
        best, other = (use, old) if score(use) > score(old) else (old, use)
        self.params[number] = dataclasses.replace(best, cast_type=best.cast_type or other.cast_type,
                                                  function=best.function or other.function)

    # select list, GROUP BY, ORDER BY

    def _target(self, node: Any, scope: _Scope) -> None:
        if isinstance(node, ast.ColumnRef):
            side = self.side(node, scope)
            if side is not None:
                self._use(side, "select", None)
        self.expr(node, scope)

    def _output_expression(self, node: Any, targets: Sequence[Any]) -> Any:
        """Map ``ORDER BY 2`` / ``ORDER BY alias`` to the select-list expression they name."""
        constant = _const_text(node)
        if constant is not None and constant.isdigit() and 0 < int(constant) <= len(targets):
            return targets[int(constant) - 1].val
        if isinstance(node, ast.ColumnRef) and node.fields and len(node.fields) == 1:
            name = _names(node.fields)
            for target in targets:
                if name and target.name == name[0]:
                    return target.val
        return node

    def _group(self, item: Any, scope: _Scope, targets: Sequence[Any]) -> None:
        if isinstance(item, ast.GroupingSet):
            for sub in item.content or ():
                self._group(sub, scope, targets)
            return
        if isinstance(item, list | tuple):  # a row in GROUPING SETS ((a, b))
            for sub in item:
                self._group(sub, scope, targets)
            return
        node = self._output_expression(item, targets)
        side = self.side(node, scope)
        if side is not None:
            self._use(side, "group_by", None)
        if node is item:
            self.expr(item, scope)

    def _sort(self, sort: Any, scope: _Scope, targets: Sequence[Any]) -> None:
        node = self._output_expression(sort.node, targets)
        constant = _const_text(sort.node)
        star = (
            len(targets) == 1
            and isinstance(node, ast.ColumnRef)
            and any(isinstance(f, ast.A_Star) for f in node.fields or ())
        )
        if star and constant is not None and constant.isdigit() and len(scope.rels) == 1:
            only = next(iter(scope.rels.values()))
            if only.table is not None and only.columns is None:
                self.uses.append(ColumnUse(only.table, None, None, "order_by",
                                           descending=sort.sortby_dir == enums.SortByDir.SORTBY_DESC,
                                           ordinal=int(constant)))
                return
        side = self.side(node, scope)
        if side is not None:
            nulls = {enums.SortByNulls.SORTBY_NULLS_FIRST: True, enums.SortByNulls.SORTBY_NULLS_LAST: False}
            self._use(side, "order_by", None, descending=sort.sortby_dir == enums.SortByDir.SORTBY_DESC,
                      nulls_first=nulls.get(sort.sortby_nulls))
        if node is sort.node:
            self.expr(sort.node, scope)

    # everything else

    def expr(self, node: Any, scope: _Scope | None) -> None:
        """Find placeholders, subqueries, aggregates and window functions inside any expression."""
        if node is None:
            return
        scope = scope or _Scope(None)
        for sub in walk(node, into_sublinks=False):
            if isinstance(sub, ast.SubLink):
                self.subqueries += 1
                if sub.testexpr is not None:
                    self.expr(sub.testexpr, scope)
                self.statement(sub.subselect, scope, False)
            elif isinstance(sub, ast.TypeCast) and isinstance(sub.arg, ast.ParamRef):
                self._param(_number(sub.arg), ParamUse(None, None, None, "other", _type_text(sub.typeName)))
            elif isinstance(sub, ast.ParamRef):
                self._param(_number(sub), ParamUse(None, None, None, "other"))
            elif isinstance(sub, ast.FuncCall):
                name = _op_name(sub.funcname)
                for arg in sub.args or ():
                    inner, cast = _unwrap_cast(arg)
                    if isinstance(inner, ast.ParamRef):
                        self._param(_number(inner), ParamUse(None, None, None, "other", cast, function=name))
                if sub.over is not None:
                    self.windows.append(name)
                elif _is_aggregate(sub):
                    self.aggregates.append(name)
            elif isinstance(sub, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
                self.statement(sub, scope, False)


def _all_rels(scope: _Scope) -> Iterator[_Rel]:
    current: _Scope | None = scope
    while current is not None:
        yield from current.rels.values()
        current = current.parent


def _reads_columns(node: Any) -> bool:
    return any(isinstance(sub, ast.ColumnRef) for sub in walk(node, into_sublinks=False))


def _side_table(node: Any, scope: _Scope) -> TableRef | None:
    """The base table of one side of a join, when that side is a single table."""
    if isinstance(node, ast.RangeVar):
        rel = scope.lookup(str(node.alias.aliasname) if node.alias is not None else str(node.relname))
        return rel.table if rel is not None else None
    return None


def _is_aggregate(call: Any) -> bool:
    if call.over is not None:
        return False
    return bool(call.agg_star or call.agg_distinct or call.agg_order or call.agg_filter
                or call.agg_within_group or _op_name(call.funcname) in _AGGREGATES)


def _type_text(type_name: Any) -> str:
    return deparse(type_name)


def _unwrap_cast(node: Any) -> tuple[Any, str | None]:
    """(inner node, outermost cast type) of ``x::type``; casts on casts keep the outermost type."""
    cast: str | None = None
    while isinstance(node, ast.TypeCast):
        cast = cast or _type_text(node.typeName)
        node = node.arg
    return node, cast


def _number(ref: Any) -> int:
    return int(ref.number or 0)


def _value(node: Any) -> _Value:
    inner, cast = _unwrap_cast(node)
    if isinstance(inner, ast.ParamRef):
        return _Value(_number(inner), None, cast)
    return _Value(None, _const_text(inner), cast)


# -- describing the statement ------------------------------------------------------------------------


def _is_time_column(name: str) -> bool:
    lowered = name.lower()
    return any(hint in lowered for hint in _TIME_HINTS)


def _list_words(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _label(use: ColumnUse) -> str:
    return use.column or use.expression or "?"


def _filter_phrase(use: ColumnUse) -> str | None:
    label = _label(use)
    if use.role == "eq":
        if use.constant is not None and use.param is None:
            return f"with {label} = {use.constant!r}" if use.constant not in ("true", "false") else (
                f"where {label} is {use.constant}")
        if use.column and use.column.endswith("_id") and len(use.column) > 3:
            return f"of one {use.column[:-3].replace('_', ' ')}"
        return f"by {label}"
    if use.role == "range":
        return f"in a range of {label}"
    if use.role == "in":
        return f"for a list of {label} values"
    if use.role == "like":
        return f"matching a pattern on {label}"
    if use.role == "is_null":
        return f"where {label} {(use.operator or 'IS NULL').lower()}"
    if use.role == "neq":
        return f"excluding some {label} values"
    return None


def _describe(shape: QueryShape, main_tables: Sequence[TableRef]) -> str:
    """One plain-language sentence, e.g. "Reads orders of one customer, newest first, 20 at a time"."""
    if shape.is_utility:
        return f"Runs a {shape.utility_command or 'utility'} statement (not a query an index can speed up)"
    names = list(dict.fromkeys(t.name for t in (main_tables or shape.tables)))
    subject = _list_words(names[:1]) if names else "computed values"
    aggregates = set(shape.aggregates)
    verb = {"select": "Reads", "insert": "Inserts rows into", "update": "Updates", "delete": "Deletes from",
            "merge": "Merges rows into"}[shape.kind]
    if shape.kind == "select" and aggregates:
        verb = "Counts" if aggregates == {"count"} else "Aggregates"
    clauses: list[str] = []
    if len(names) > 1:
        clauses.append(f"joined with {_list_words(names[1:])}")
    seen: set[str] = set()
    filters: list[str] = []
    for use in shape.columns:
        if use.role in ("join", "order_by", "group_by", "select"):
            continue
        phrase = _filter_phrase(use)
        if phrase and phrase not in seen:
            seen.add(phrase)
            filters.append(phrase)
    head = f"{verb} {subject}"
    if clauses:
        head += " " + clauses[0]
    elif shape.kind == "insert" and len(shape.tables) > 1:
        sources = [t.name for t in shape.tables if t.name not in names]
        head += f" from {_list_words(list(dict.fromkeys(sources)))}"
    if filters:
        head += " " + " and ".join(filters[:3])
    parts = [head]
    groups = [_label(u) for u in shape.uses("group_by")]
    if groups:
        parts.append(f"grouped by {_list_words(list(dict.fromkeys(groups)))}")
    orders = shape.uses("order_by")
    if orders:
        first = orders[0]
        label = _label(first)
        if _is_time_column(label):
            parts.append("newest first" if first.descending else "oldest first")
        else:
            parts.append(f"ordered by {label}{' descending' if first.descending else ''}")
    if shape.limit is not None:
        parts.append("only the first row" if shape.limit == 1 else f"{shape.limit} at a time")
    elif shape.limit_param is not None:
        parts.append("one page at a time" if shape.offset_param is not None or shape.offset else
                     "a limited number at a time")
    return ", ".join(parts)


def _complexity(shape: QueryShape) -> Complexity:
    """Grade from structure: joins and CTEs count 1, subqueries 2, window functions 2, aggregates,
    DISTINCT and a top-level OR 1 each; 0-1 is low, 2-4 medium, 5 or more high."""
    score = (shape.joins + shape.ctes + 2 * shape.subqueries + (2 if shape.window_functions else 0)
             + (1 if shape.aggregates else 0) + (1 if shape.distinct else 0) + (1 if shape.or_predicates else 0))
    if score <= 1:
        return "low"
    return "medium" if score <= 4 else "high"


# -- public entry points -------------------------------------------------------------------------------

_UTILITY_WORDS = {
    "ABORT_P": "ABORT", "ALTER": "ALTER", "ANALYSE": "ANALYZE", "ANALYZE": "ANALYZE", "BEGIN_P": "BEGIN",
    "CALL": "CALL", "CHECKPOINT": "CHECKPOINT", "CLOSE": "CLOSE", "CLUSTER": "CLUSTER", "COMMENT": "COMMENT",
    "COMMIT": "COMMIT", "COPY": "COPY", "CREATE": "CREATE", "DEALLOCATE": "DEALLOCATE", "DECLARE": "DECLARE",
    "DISCARD": "DISCARD", "DO": "DO", "DROP": "DROP", "END_P": "END", "EXECUTE": "EXECUTE",
    "EXPLAIN": "EXPLAIN", "FETCH": "FETCH", "GRANT": "GRANT", "IMPORT_P": "IMPORT", "LISTEN": "LISTEN",
    "LOAD": "LOAD", "LOCK_P": "LOCK", "MOVE": "MOVE", "NOTIFY": "NOTIFY", "PREPARE": "PREPARE",
    "REASSIGN": "REASSIGN", "REFRESH": "REFRESH", "REINDEX": "REINDEX", "RELEASE": "RELEASE",
    "RESET": "RESET", "REVOKE": "REVOKE", "ROLLBACK": "ROLLBACK", "SAVEPOINT": "SAVEPOINT",
    "SECURITY": "SECURITY LABEL", "SET": "SET", "SHOW": "SHOW", "START": "START TRANSACTION",
    "TRUNCATE": "TRUNCATE", "UNLISTEN": "UNLISTEN", "VACUUM": "VACUUM",
}


def _utility_command(stmt: Any) -> str:
    """A short name for a utility statement, e.g. "SET", "CREATE INDEX", "VACUUM"."""
    name = type(stmt).__name__
    known = {
        "VariableSetStmt": "SET", "VariableShowStmt": "SHOW", "TransactionStmt": "transaction control",
        "VacuumStmt": "VACUUM/ANALYZE", "ExplainStmt": "EXPLAIN", "IndexStmt": "CREATE INDEX",
        "CreateStmt": "CREATE TABLE", "CreateTableAsStmt": "CREATE TABLE AS", "CopyStmt": "COPY",
        "LockStmt": "LOCK", "TruncateStmt": "TRUNCATE", "DropStmt": "DROP", "AlterTableStmt": "ALTER TABLE",
        "DeallocateStmt": "DEALLOCATE", "PrepareStmt": "PREPARE", "ExecuteStmt": "EXECUTE",
        "DeclareCursorStmt": "DECLARE CURSOR", "FetchStmt": "FETCH", "DoStmt": "DO", "CallStmt": "CALL",
    }
    if name in known:
        return known[name]
    return name.removesuffix("Stmt")


def _utility_from_tokens(text: str) -> str | None:
    tokens = _tokens(text)
    if not tokens:
        return None
    return _UTILITY_WORDS.get(tokens[0].name)


def parse_query(text: str) -> QueryShape:
    """The structure of one normalised statement; UnparseableQuery when it cannot be understood.

    Utility statements (SET, BEGIN, VACUUM, CREATE ..., EXPLAIN ...) come back with ``kind == "utility"``,
    even when pg_stat_statements' normalisation made them unparseable (``SET x = $1``).
    """
    repaired = repair_placeholders(text)
    try:
        statements = parser.parse_sql(repaired)
    except ParseError as exc:
        command = _utility_from_tokens(text)
        if command is not None:
            shape = QueryShape(text=text, kind="utility", utility_command=command)
            return dataclasses.replace(shape, intent=_describe(shape, ()))
        raise UnparseableQuery(f"cannot parse statement: {exc}") from exc
    if not statements:
        raise UnparseableQuery("the text holds no statement (only comments or whitespace)")
    if len(statements) > 1:
        raise UnparseableQuery(f"the text holds {len(statements)} statements; exactly one was expected")
    stmt = statements[0].stmt
    kinds: dict[type[Any], Kind] = {ast.SelectStmt: "select", ast.InsertStmt: "insert",
                                    ast.UpdateStmt: "update", ast.DeleteStmt: "delete", ast.MergeStmt: "merge"}
    kind = kinds.get(type(stmt))
    if kind is None:
        shape = QueryShape(text=repaired, kind="utility", utility_command=_utility_command(stmt))
        return dataclasses.replace(shape, intent=_describe(shape, ()))
    analyzer = _Analyzer()
    analyzer.statement(stmt, None, True)
    shape = QueryShape(
        text=repaired,
        kind=kind,
        tables=tuple(analyzer.tables),
        columns=tuple(analyzer.uses),
        parameters=dict(sorted(analyzer.params.items())),
        limit=analyzer.limit,
        limit_param=analyzer.limit_param,
        offset=analyzer.offset,
        offset_param=analyzer.offset_param,
        joins=analyzer.joins,
        aggregates=tuple(analyzer.aggregates),
        window_functions=tuple(analyzer.windows),
        distinct=analyzer.distinct,
        subqueries=analyzer.subqueries,
        ctes=analyzer.ctes,
        or_predicates=analyzer.or_predicates,
        target=analyzer.target,
        updated_columns=tuple(analyzer.updated),
        join_pairs=tuple(analyzer.join_pairs),
    )
    return dataclasses.replace(shape, intent=_describe(shape, analyzer.main_tables),
                               complexity=_complexity(shape))


def _table_columns(table: TableRef, columns_by_table: Mapping[tuple[str, str], set[str]]) -> set[str] | None:
    if table.schema is not None:
        return columns_by_table.get((table.schema, table.name))
    # Unqualified: the catalog's search_path decides; prefer public, then any schema with that table.
    if ("public", table.name) in columns_by_table:
        return columns_by_table[("public", table.name)]
    return next((cols for (_, name), cols in columns_by_table.items() if name == table.name), None)


def resolve_columns(shape: QueryShape, columns_by_table: Mapping[tuple[str, str], set[str]]) -> QueryShape:
    """Attribute unresolved column uses (``table is None``) to the one candidate table that has them.

    ``columns_by_table`` maps ``(schema, table)`` to its column names, from the catalog. A use stays
    unresolved when no candidate or more than one candidate of the innermost scope has every column.
    """
    def resolve(use: ColumnUse) -> ColumnUse:
        if use.table is not None or not use.columns or not use.candidates:
            return use
        # Candidates are ordered innermost scope first, so the first owner is the one PostgreSQL picks
        # (two owners in one scope would have made the statement fail as ambiguous).
        for table in use.candidates:
            cols = _table_columns(table, columns_by_table)
            if cols is not None and set(use.columns) <= cols:
                return dataclasses.replace(use, table=table, candidates=())
        return use

    columns = tuple(resolve(use) for use in shape.columns)
    parameters = dict(shape.parameters)
    for use in columns:
        if use.param is None or use.table is None:
            continue
        current = parameters.get(use.param)
        if current is not None and current.table is None and (current.column, current.expression) == (
                use.column, use.expression):
            parameters[use.param] = dataclasses.replace(current, table=use.table)
    return dataclasses.replace(shape, columns=columns, parameters=parameters)


def view_projection(definition: str) -> tuple[TableRef, dict[str, str] | None] | None:
    """The base table and column map of a view whose definition (``pg_get_viewdef``) only projects one table's
    columns: the planner flattens it, so an index on the table serves filters on the view."""
    try:
        statements = parser.parse_sql(definition)
    except ParseError:
        return None
    if len(statements) != 1:
        return None
    return projection(statements[0].stmt)


def carried_equalities(shape: QueryShape) -> tuple[ColumnUse, ...]:
    """Equality filters the join equalities carry to the other side: with ``b.y = a.x`` and ``a.x = $1`` the
    planner also filters ``b.y = $1``, and an index on ``b.y`` serves it (the peers' ``author.id = $1``
    joined to ``book.author_id``)."""
    carried: list[ColumnUse] = []
    eq = [u for u in shape.columns if u.role == "eq" and u.operator == "=" and u.column and u.table is not None]
    for i, j in shape.join_pairs:
        if max(i, j) >= len(shape.columns):
            continue
        for here, there in ((shape.columns[i], shape.columns[j]), (shape.columns[j], shape.columns[i])):
            if here.table is None or there.table is None or there.column is None:
                continue
            for use in eq:
                if (use.table, use.column) == (here.table, here.column) and (there.table, there.column) != (
                    use.table, use.column
                ):
                    carried.append(ColumnUse(there.table, there.column, None, "eq", "=", use.param, use.constant,
                                             columns=(there.column,)))
    known = {(u.table, u.column) for u in eq}
    return tuple(u for u in dict.fromkeys(carried) if (u.table, u.column) not in known)


def resolve_ordinals(shape: QueryShape, ordered_columns: Callable[[TableRef], Sequence[str]]) -> QueryShape:
    """``ORDER BY n`` over ``SELECT *`` resolved to the table's n-th column (``ordered_columns``: the catalog's
    columns in attribute order); dropped when the table has no such column."""
    if not any(use.ordinal is not None for use in shape.columns):
        return shape
    columns = []
    for use in shape.columns:
        if use.ordinal is not None and use.table is not None:
            names = list(ordered_columns(use.table))
            if not 0 < use.ordinal <= len(names):
                columns.append(dataclasses.replace(use, table=None))  # kept in place: join_pairs are positions
                continue
            name = names[use.ordinal - 1]
            use = dataclasses.replace(use, column=name, columns=(name,), ordinal=None)
        columns.append(use)
    return dataclasses.replace(shape, columns=tuple(columns))


def through_views(
    shape: QueryShape, views: Mapping[tuple[str | None, str], tuple[TableRef, dict[str, str] | None]]
) -> QueryShape:
    """``shape`` with every use of a flattenable view (``views``: the statement's (schema, name) -> base table
    and column map) moved onto the base table, so candidates are proposed where an index can be built."""

    def moved(table: TableRef | None, column: str | None, expression: str | None) -> tuple[
        TableRef | None, str | None, bool
    ]:
        if table is None or (table.schema, table.name) not in views:
            return table, column, True
        base, mapping = views[(table.schema, table.name)]
        if column is not None:
            target = column if mapping is None else mapping.get(column)
            return (base, target, True) if target is not None else (None, None, False)
        # An expression keeps its column names: only when the view does not rename them.
        return (base, None, True) if mapping is None and expression is not None else (None, None, False)

    columns = []
    for use in shape.columns:
        table, column, ok = moved(use.table, use.column, use.expression)
        if not ok:  # kept in place (join_pairs are positions), attributed to nothing
            columns.append(dataclasses.replace(use, table=None, column=None, expression=None, candidates=()))
            continue
        columns.append(dataclasses.replace(
            use, table=table, column=column, columns=(column,) if column is not None else use.columns,
            candidates=tuple(views[(c.schema, c.name)][0] if (c.schema, c.name) in views else c
                             for c in use.candidates),
        ))
    parameters = {}
    for number, param in shape.parameters.items():
        table, column, ok = moved(param.table, param.column, param.expression)
        parameters[number] = (
            dataclasses.replace(param, table=table, column=column)
            if ok
            else dataclasses.replace(param, table=None, column=None, expression=None)
        )
    tables = tuple(dict.fromkeys(
        views[(t.schema, t.name)][0] if (t.schema, t.name) in views else t for t in shape.tables
    ))
    return dataclasses.replace(shape, tables=tables, columns=tuple(columns), parameters=parameters)


def _is_internal_table(table: TableRef) -> bool:
    # Statistics views live in pg_catalog, but extensions put theirs (pg_stat_statements, pg_qualstats)
    # in any schema: the name decides for those.
    if table.name.startswith(("pg_stat", "pg_qualstats", "hypopg_")):
        return True
    if table.schema is not None:
        return table.schema in INTERNAL_SCHEMAS or table.schema.startswith(("pg_toast", "pg_temp"))
    # Unqualified pg_* names are catalogs (pg_class) or statistics views.
    return table.name.startswith("pg_")


def is_internal(text: str) -> bool:
    """True for statements the auditor must never audit: pg-architect's own (they carry
    :data:`INTERNAL_MARKER`) and those reading only catalogs, ``pg_stat_*`` views or our ``pgarch`` schema."""
    try:
        comments = [text[t.start : t.end + 1] for t in parser.scan(text) if t.name in _COMMENTS]
    except ParseError:
        comments = []
    if any(_marker_in(comment) for comment in comments):
        return True
    try:
        shape = parse_query(text)
    except UnparseableQuery:
        return False
    return bool(shape.tables) and all(_is_internal_table(t) for t in shape.tables)


def _marker_in(comment: str) -> bool:
    return " ".join(comment.split()) == INTERNAL_MARKER or INTERNAL_MARKER in comment


def skip_reason(text: str) -> str | None:
    """Why the auditor should not audit ``text`` (internal, utility, unparseable), or None to audit it."""
    if is_internal(text):
        return "internal: pg-architect's own statement or one reading only catalogs"
    try:
        shape = parse_query(text)
    except UnparseableQuery as exc:
        return f"unparseable: {exc}"
    if shape.is_utility:
        return f"utility statement ({shape.utility_command}): no index can speed it up"
    return None
