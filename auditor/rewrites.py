"""Rewrites of a slow SELECT, found by rules over its parse tree and the audit's catalog snapshot.

Each rule looks for one cause of slowness in the tree (not for one statement's text), and either proposes the
statement rewritten, with the original's ``$n`` placeholders and no literal of its own, and a one-line reason,
or declines and says why (a nullable ``NOT IN`` is not an anti-join). Nothing here runs the statement or
decides anything: every proposal that claims the same rows goes through auditor.verify (the allow-list, a
rolled-back read-only transaction, multiset comparison on sampled parameter sets, timing) before anyone sees
it. Two rules change what the statement takes or returns (keyset pagination, a count's estimate): they are
``advisory``, never verified equal, and say so.

The rules (docs/rewrites.md):

- ``left_join_to_inner``: a LEFT JOIN whose right side a WHERE condition requires -> an inner join;
- ``not_in_to_not_exists``: ``x NOT IN (SELECT y ...)`` with ``x`` and ``y`` both NOT NULL -> ``NOT EXISTS``;
- ``or_to_union_all``: an OR across different columns -> UNION ALL of disjoint branches;
- ``sargable_predicate``: ``date(col) op v``, ``col + a op v``, ``col::text = v`` -> predicates on ``col``;
- ``distinct_to_exists``: SELECT DISTINCT over a join that only filters -> EXISTS;
- ``scalar_subquery_to_join``: a correlated aggregate in the select list -> a grouped LEFT JOIN;
- ``offset_to_keyset`` (advisory): large OFFSET pagination -> keyset pagination on the ORDER BY key;
- ``count_estimate`` (advisory): ``count(*)`` of a whole large table -> the catalog's estimate.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pglast import ast, enums, parser
from pglast.parser import ParseError

from pg_architect.auditor.catalog import IndexInfo, Snapshot, TableInfo
from pg_architect.auditor.parsing import TableRef, deparse, repair_placeholders, walk

#: count(*) of a table below this many rows is fast enough exact.
COUNT_ESTIMATE_MIN_ROWS = 100_000
_COMPARISONS = frozenset({"=", "<>", "!=", "<", "<=", ">", ">="})
_FLIPPED = {"=": "=", "<>": "<>", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_AGGREGATES = frozenset({"count", "sum", "avg", "min", "max"})
_INTEGERS = frozenset({"smallint", "integer", "bigint"})
_TEXT_TYPES = frozenset({"text", "varchar", "character varying"})


@dataclasses.dataclass(frozen=True, slots=True)
class Rewrite:
    rule: str
    sql: str  # the rewritten statement: the original's placeholders (advisory ones may add new ones)
    reason: str
    advisory: bool = False  # it changes what the statement takes or returns: shown, never verified equal


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    rewrites: tuple[Rewrite, ...]
    declined: tuple[str, ...]  # "rule: why not", for the report's rejected candidates


class _Declined(Exception):
    """A rule applies to the statement's form but the rewrite would not be equivalent (or not help)."""


# -- the tree --------------------------------------------------------------------------------------


def _own_nodes(node: Any) -> Iterator[Any]:
    """The nodes of ``node`` itself: a subquery (SubLink) is yielded but not entered."""
    return walk(node, into_sublinks=False)


def _is(node: Any, cls: type[Any] | tuple[type[Any], ...]) -> bool:
    """isinstance without narrowing: pglast's node attributes are read as Any here."""
    return isinstance(node, cls)


def _names(items: Iterable[Any] | None) -> list[str]:
    return [str(i.sval) for i in items or () if _is(i, ast.String)]


def _op(node: Any) -> str:
    names = _names(node.name)
    return names[-1] if names else ""


def _conjuncts(node: Any) -> list[Any]:
    if node is None:
        return []
    if _is(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in node.args for c in _conjuncts(arg)]
    return [node]


def _and(nodes: Sequence[Any]) -> Any:
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    return ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(nodes))


def _expr(text: str) -> Any:
    """The parse tree of one SQL expression we composed from deparsed pieces."""
    stmt: Any = parser.parse_sql("SELECT " + text)[0].stmt
    return stmt.targetList[0].val


def _column(*names: str) -> ast.ColumnRef:
    return ast.ColumnRef(fields=tuple(ast.String(sval=n) for n in names))


def _is_value(node: Any) -> bool:
    """A placeholder or constant (possibly cast): the same value wherever it is written twice."""
    while _is(node, ast.TypeCast):
        node = node.arg
    return _is(node, (ast.ParamRef, ast.A_Const))


def _base_type(type_name: str) -> str:
    return type_name.split("(")[0].strip()


def _max_param(stmt: Any) -> int:
    return max((int(n.number) for n in walk(stmt, into_sublinks=True) if _is(n, ast.ParamRef)), default=0)


def _has_aggregate_or_window(nodes: Any) -> bool:
    for n in _own_nodes(nodes):
        if _is(n, ast.FuncCall) and (
            n.over is not None or n.agg_star or bool(set(_names(n.funcname)[-1:]) & _AGGREGATES)
        ):
            return True
    return False


# -- relations in scope ----------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Rel:
    name: str  # how the statement refers to it: its alias, else its name
    ref: TableRef
    node: Any  # the RangeVar
    columns: dict[str, str]  # name -> type
    not_null: frozenset[str]
    nullable: bool  # on the nullable side of an outer join: even NOT NULL columns may read NULL
    info: TableInfo | None


class _Scope:
    def __init__(self, rels: list[_Rel], outer: _Scope | None = None) -> None:
        self.rels = rels
        self.outer = outer

    def resolve(self, ref: Any) -> tuple[_Rel, str] | None:
        """The relation and column a column reference means, here or in an enclosing scope."""
        fields = ref.fields or ()
        if any(not _is(f, ast.String) for f in fields):
            return None
        names = [str(f.sval) for f in fields]
        scope: _Scope | None = self
        while scope is not None:
            if len(names) == 2:
                found = [r for r in scope.rels if r.name == names[0] and names[1] in r.columns]
            elif len(names) == 1:
                found = [r for r in scope.rels if names[0] in r.columns]
            else:
                return None
            if len(found) == 1:
                return found[0], names[-1]
            if len(found) > 1:
                return None  # ambiguous: the server would say so
            scope = scope.outer
        return None

    def refs(self, node: Any) -> set[tuple[str, str]] | None:
        """(relation, column) pairs ``node`` reads; None when it holds a subquery or a name we cannot place."""
        found: set[tuple[str, str]] = set()
        for n in _own_nodes(node):
            if _is(n, ast.SubLink):
                return None
            if _is(n, ast.ColumnRef):
                hit = self.resolve(n)
                if hit is None:
                    return None
                found.add((hit[0].name, hit[1]))
        return found

    def own(self, name: str) -> _Rel | None:
        return next((r for r in self.rels if r.name == name), None)


def _rels(catalog: Snapshot, from_clause: Any) -> list[_Rel]:
    """The base tables of a FROM clause, with whether an outer join may null them; _Declined otherwise."""
    found: list[_Rel] = []

    def visit(item: Any, nullable: bool) -> None:
        if _is(item, ast.RangeVar):
            ref = TableRef(item.schemaname, item.relname, item.alias.aliasname if item.alias else None)
            columns = catalog.columns(ref)
            if not columns:
                raise _Declined(f"{ref.qualified} is not a table of this database")
            info = catalog.tables([ref]).get((ref.schema, ref.name))
            found.append(_Rel(ref.alias or ref.name, ref, item, columns, catalog.not_null(ref), nullable, info))
        elif _is(item, ast.JoinExpr):
            if item.isNatural or item.usingClause:
                raise _Declined("a NATURAL or USING join")
            kind = item.jointype
            visit(item.larg, nullable or kind in (enums.JoinType.JOIN_RIGHT, enums.JoinType.JOIN_FULL))
            visit(item.rarg, nullable or kind in (enums.JoinType.JOIN_LEFT, enums.JoinType.JOIN_FULL))
        else:
            raise _Declined("it reads a subquery or a function in FROM")

    for item in from_clause or ():
        visit(item, False)
    if len({r.name for r in found}) != len(found):
        raise _Declined("two relations share a name")
    return found


def _simple_select(stmt: Any) -> bool:
    return (
        _is(stmt, ast.SelectStmt)
        and stmt.op == enums.SetOperation.SETOP_NONE
        and stmt.withClause is None
        and not stmt.valuesLists
        and stmt.intoClause is None
        and not stmt.lockingClause
    )


@dataclasses.dataclass(slots=True)
class _Context:
    catalog: Snapshot
    stmt: Any  # the original SelectStmt: rules copy it, never change it
    scope: _Scope

    def index_leading(self, rel: _Rel, column: str) -> IndexInfo | None:
        """A valid btree index of ``rel`` whose first key is ``column``."""
        if rel.info is None:
            return None
        for index in self.catalog.indexes([rel.info.oid]):
            if index.valid and index.method == "btree" and index.key_columns[:1] == [column]:
                return index
        return None


# -- the rules -------------------------------------------------------------------------------------

Rule = Callable[[_Context], Rewrite | None]


def _strict_on(node: Any, rel: _Rel, scope: _Scope) -> bool:
    """``node`` is never true when ``rel``'s columns are all NULL (a NULL-extended row of an outer join)."""

    def on_rel(side: Any) -> bool:
        while _is(side, ast.TypeCast):
            side = side.arg
        if not _is(side, ast.ColumnRef):
            return False
        hit = scope.resolve(side)
        return hit is not None and hit[0] is rel

    if _is(node, ast.NullTest):
        return node.nulltesttype == enums.NullTestType.IS_NOT_NULL and on_rel(node.arg)
    if _is(node, ast.A_Expr):
        kind = node.kind
        if kind == enums.A_Expr_Kind.AEXPR_OP and _op(node) in _COMPARISONS:
            return on_rel(node.lexpr) or on_rel(node.rexpr)
        if kind in (
            enums.A_Expr_Kind.AEXPR_IN,
            enums.A_Expr_Kind.AEXPR_LIKE,
            enums.A_Expr_Kind.AEXPR_ILIKE,
            enums.A_Expr_Kind.AEXPR_BETWEEN,
            enums.A_Expr_Kind.AEXPR_NOT_BETWEEN,
        ):
            return on_rel(node.lexpr)
    return False


def left_join_to_inner(ctx: _Context) -> Rewrite | None:
    stmt = copy.deepcopy(ctx.stmt)
    scope = _Scope(_rels(ctx.catalog, stmt.fromClause))
    conjuncts = _conjuncts(stmt.whereClause)
    changed: list[str] = []
    for join in _own_nodes(stmt.fromClause):
        if not (_is(join, ast.JoinExpr) and join.jointype == enums.JoinType.JOIN_LEFT):
            continue
        if not _is(join.rarg, ast.RangeVar):
            continue
        name = join.rarg.alias.aliasname if join.rarg.alias else join.rarg.relname
        rel = scope.own(name)
        if rel is None:
            continue
        strict = next((c for c in conjuncts if _strict_on(c, rel, scope)), None)
        if strict is None:
            continue
        join.jointype = enums.JoinType.JOIN_INNER
        changed.append(f"{deparse(strict)} is never true for the rows the LEFT JOIN adds with {name}'s columns NULL")
    if not changed:
        return None
    return Rewrite(
        "left_join_to_inner",
        deparse(stmt),
        "; ".join(changed) + ": the outer join is an inner join, which the planner may reorder freely",
    )


def not_in_to_not_exists(ctx: _Context) -> Rewrite | None:
    stmt = copy.deepcopy(ctx.stmt)
    conjuncts = _conjuncts(stmt.whereClause)
    for i, conj in enumerate(conjuncts):
        if not (
            _is(conj, ast.BoolExpr)
            and conj.boolop == enums.BoolExprType.NOT_EXPR
            and len(conj.args) == 1
            and _is(conj.args[0], ast.SubLink)
            and conj.args[0].subLinkType == enums.SubLinkType.ANY_SUBLINK
            and _names(conj.args[0].operName) in ([], ["="])
        ):
            continue
        link = conj.args[0]
        sub = link.subselect
        what = f"{deparse(link.testexpr)} NOT IN (SELECT ...)"
        if not _simple_select(sub) or sub.groupClause or sub.havingClause or sub.distinctClause or \
                sub.limitCount is not None or sub.limitOffset is not None or len(sub.targetList or ()) != 1:
            raise _Declined(f"{what}: the subquery is not one plain SELECT of one column")
        if len(sub.fromClause or ()) != 1 or not _is(sub.fromClause[0], ast.RangeVar):
            raise _Declined(f"{what}: the subquery reads more than one table")
        inner = _Scope(_rels(ctx.catalog, sub.fromClause), ctx.scope)
        rel = inner.rels[0]
        if ctx.scope.own(rel.name) is not None:
            raise _Declined(f"{what}: the subquery's table has the same name as an outer one")
        target = sub.targetList[0].val
        outer = link.testexpr
        if not _is(outer, ast.ColumnRef):
            raise _Declined(f"{what}: the tested expression is not a column, so it may be NULL")
        if not _is(target, ast.ColumnRef):
            raise _Declined(f"{what}: the subquery's column is an expression, so it may be NULL")
        outer_hit, inner_hit = ctx.scope.resolve(outer), inner.resolve(target)
        if inner_hit is None or inner_hit[0] is not rel:
            raise _Declined(f"{what}: the subquery's column is not one of its table's")
        if outer_hit is None:
            raise _Declined(f"{what}: the tested column is not one of the outer tables'")
        nullable = [
            f"{r.name}.{c}" for (r, c) in (outer_hit, inner_hit) if r.nullable or c not in r.not_null
        ]
        if nullable:
            raise _Declined(
                f"{what}: a nullable NOT IN ({', '.join(nullable)} may be NULL): NOT IN over a NULL returns no "
                "row where NOT EXISTS would, so it is not rewritten"
            )
        correlation = ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP,
            name=(ast.String(sval="="),),
            lexpr=_column(rel.name, inner_hit[1]),
            rexpr=_column(outer_hit[0].name, outer_hit[1]),
        )
        sub.targetList = (ast.ResTarget(val=ast.A_Const(val=ast.Integer(ival=1))),)
        sub.whereClause = _and([*_conjuncts(sub.whereClause), correlation])
        exists = ast.SubLink(subLinkType=enums.SubLinkType.EXISTS_SUBLINK, subselect=sub)
        conjuncts[i] = ast.BoolExpr(boolop=enums.BoolExprType.NOT_EXPR, args=(exists,))
        stmt.whereClause = _and(conjuncts)
        return Rewrite(
            "not_in_to_not_exists",
            deparse(stmt),
            f"{what}: both columns are NOT NULL, so NOT EXISTS returns the same rows and the planner can run it as "
            "an anti-join instead of probing the subquery's result for every row",
        )
    return None


def or_to_union_all(ctx: _Context) -> Rewrite | None:
    stmt = ctx.stmt
    conjuncts = _conjuncts(stmt.whereClause)
    at = next(
        (i for i, c in enumerate(conjuncts) if _is(c, ast.BoolExpr) and c.boolop == enums.BoolExprType.OR_EXPR),
        None,
    )
    if at is None:
        return None
    arms = list(conjuncts[at].args)
    columns = [ctx.scope.refs(arm) for arm in arms]
    if any(c is None for c in columns):
        raise _Declined("an OR arm holds a subquery or a name that cannot be placed")
    if len({frozenset(c or ()) for c in columns}) == 1:
        return None  # one column's alternatives: an IN list, which one index serves already
    blockers = [
        what
        for what, present in (
            ("DISTINCT", stmt.distinctClause),
            ("GROUP BY", stmt.groupClause),
            ("HAVING", stmt.havingClause),
            ("ORDER BY", stmt.sortClause),
            ("LIMIT/OFFSET", stmt.limitCount is not None or stmt.limitOffset is not None),
            ("an aggregate or window function", _has_aggregate_or_window(stmt.targetList)),
        )
        if present
    ]
    if blockers:
        raise _Declined(f"the OR across columns is in a statement with {', '.join(blockers)}: not split")
    rest = conjuncts[:at] + conjuncts[at + 1 :]
    branches: list[Any] = []
    for i, arm in enumerate(arms):
        branch = copy.deepcopy(stmt)
        before = [copy.deepcopy(a) for a in arms[:i]]
        # Disjoint: a row the earlier arms already returned is excluded here, so no row comes twice (and a
        # row for which an earlier arm is NULL, not true, is still returned once).
        exclude = (
            [ast.BooleanTest(arg=_or(before), booltesttype=enums.BoolTestType.IS_NOT_TRUE)] if before else []
        )
        branch.whereClause = _and([*copy.deepcopy(rest), copy.deepcopy(arm), *exclude])
        branches.append(branch)
    union = branches[0]
    for branch in branches[1:]:
        union = ast.SelectStmt(op=enums.SetOperation.SETOP_UNION, all=True, larg=union, rarg=branch)
    return Rewrite(
        "or_to_union_all",
        deparse(union),
        f"{deparse(conjuncts[at])} spans different columns, so no one index serves it; UNION ALL lets each "
        "branch use its own, and each later branch excludes the earlier ones' rows (IS NOT TRUE), so none repeats",
    )


def _or(nodes: Sequence[Any]) -> Any:
    return nodes[0] if len(nodes) == 1 else ast.BoolExpr(boolop=enums.BoolExprType.OR_EXPR, args=tuple(nodes))


def _date_of_column(node: Any) -> Any:
    """The column of ``date(col)`` or ``col::date``, else None."""
    if _is(node, ast.FuncCall) and _names(node.funcname) in (["date"], ["pg_catalog", "date"]):
        args: Any = node.args or ()
        if len(args) == 1 and _is(args[0], ast.ColumnRef) and not node.agg_star:
            return args[0]
    if (
        _is(node, ast.TypeCast)
        and _is(node.arg, ast.ColumnRef)
        and _names(node.typeName.names)[-1:] == ["date"]
    ):
        return node.arg
    return None


def _sargable(conj: Any, ctx: _Context) -> tuple[str, str] | None:
    """(new predicate text, what it fixed) for a predicate that hides an indexed column, else None."""
    if not (_is(conj, ast.A_Expr) and conj.kind == enums.A_Expr_Kind.AEXPR_OP and _op(conj) in _COMPARISONS):
        return None
    op = _op(conj)
    for side, other, operator in ((conj.lexpr, conj.rexpr, op), (conj.rexpr, conj.lexpr, _FLIPPED[op])):
        if not _is_value(other):
            continue
        value = deparse(other)
        # date(col) op v, col::date op v on a timestamp column: a half-open range of the column itself.
        column = _date_of_column(side)
        if column is not None and operator in ("=", "<", "<=", ">", ">="):
            hit = ctx.scope.resolve(column)
            if hit is None or not hit[0].columns[hit[1]].startswith("timestamp"):
                continue
            if ctx.index_leading(hit[0], hit[1]) is None:
                continue
            c, d = deparse(column), f"({value})::date"
            new = {
                "=": f"{c} >= {d} AND {c} < {d} + 1",
                ">=": f"{c} >= {d}",
                ">": f"{c} >= {d} + 1",
                "<": f"{c} < {d}",
                "<=": f"{c} < {d} + 1",
            }[operator]
            return new, f"{deparse(conj)} hides {c} from its index"
        # col + a op v, col - a op v on an exact numeric column: the arithmetic moves to the value's side.
        if (
            _is(side, ast.A_Expr)
            and side.kind == enums.A_Expr_Kind.AEXPR_OP
            and _op(side) in ("+", "-")
            and operator in _COMPARISONS
        ):
            column, amount = side.lexpr, side.rexpr
            if _op(side) == "+" and not _is(column, ast.ColumnRef):
                column, amount = amount, column
            if not _is(column, ast.ColumnRef) or not _is_value(amount):
                continue
            hit = ctx.scope.resolve(column)
            if hit is None:
                continue
            base = _base_type(hit[0].columns[hit[1]])
            if base not in _INTEGERS and base != "numeric":
                continue
            if ctx.index_leading(hit[0], hit[1]) is None:
                continue
            inverse = "-" if _op(side) == "+" else "+"
            new = f"{deparse(column)} {operator} ({value})::{base} {inverse} ({deparse(amount)})::{base}"
            return new, f"{deparse(conj)} hides {deparse(column)} from its index"
        # col::text = v on an integer column: compare the column with the value as its own type.
        if _is(side, ast.TypeCast) and _is(side.arg, ast.ColumnRef) and operator == "=":
            if " ".join(_names(side.typeName.names)[-1:]) not in _TEXT_TYPES:
                continue
            hit = ctx.scope.resolve(side.arg)
            if hit is None:
                continue
            base = _base_type(hit[0].columns[hit[1]])
            if base not in _INTEGERS or ctx.index_leading(hit[0], hit[1]) is None:
                continue
            new = f"{deparse(side.arg)} = ({value})::{base}"
            return new, (
                f"{deparse(conj)} casts {deparse(side.arg)} to text, hiding it from its index (the value must be an "
                f"integer's text: another text, such as '007', would match nothing before and fail after)"
            )
    return None


def sargable_predicate(ctx: _Context) -> Rewrite | None:
    stmt = copy.deepcopy(ctx.stmt)
    conjuncts = _conjuncts(stmt.whereClause)
    fixed: list[str] = []
    for i, conj in enumerate(conjuncts):
        found = _sargable(conj, ctx)
        if found is not None:
            conjuncts[i] = _expr(found[0])
            fixed.append(found[1])
    if not fixed:
        return None
    stmt.whereClause = _and(conjuncts)
    return Rewrite(
        "sargable_predicate",
        deparse(stmt),
        "; ".join(fixed) + ": the predicate on the column itself returns the same rows and can use the index",
    )


def distinct_to_exists(ctx: _Context) -> Rewrite | None:
    stmt = ctx.stmt
    if stmt.distinctClause is None or len(ctx.scope.rels) < 2:
        return None
    if stmt.distinctClause != (None,):
        raise _Declined("SELECT DISTINCT ON: not rewritten")
    if stmt.groupClause or stmt.havingClause or _has_aggregate_or_window(stmt.targetList):
        raise _Declined("SELECT DISTINCT with grouping or aggregates: not rewritten")
    for join in _own_nodes(stmt.fromClause):
        if _is(join, ast.JoinExpr) and join.jointype != enums.JoinType.JOIN_INNER:
            raise _Declined("SELECT DISTINCT over an outer join: not rewritten")
    shown = ctx.scope.refs([stmt.targetList, stmt.sortClause])
    if not shown or any(_is(n, ast.A_Star) for n in _own_nodes(stmt.targetList)):
        raise _Declined("SELECT DISTINCT: the select list holds a subquery, a * or a name that cannot be placed")
    kept_names = {name for name, _ in shown}
    if len(kept_names) != 1:
        return None  # the output needs more than one table: the join is not only a filter
    kept = ctx.scope.own(next(iter(kept_names)))
    assert kept is not None
    conditions = [c for j in _own_nodes(stmt.fromClause) if _is(j, ast.JoinExpr) for c in _conjuncts(j.quals)]
    conditions += _conjuncts(stmt.whereClause)
    own: list[Any] = []
    moved: list[Any] = []
    for c in conditions:
        refs = ctx.scope.refs(c)
        if refs is None:
            raise _Declined("SELECT DISTINCT: a join condition holds a subquery or a name that cannot be placed")
        (own if {n for n, _ in refs} <= {kept.name} else moved).append(copy.deepcopy(c))
    others = [copy.deepcopy(r.node) for r in ctx.scope.rels if r is not kept]
    sub = ast.SelectStmt(
        targetList=(ast.ResTarget(val=ast.A_Const(val=ast.Integer(ival=1))),),
        fromClause=tuple(others),
        whereClause=_and(moved),
        op=enums.SetOperation.SETOP_NONE,
        limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT,
    )
    out = copy.deepcopy(stmt)
    out.fromClause = (copy.deepcopy(kept.node),)
    out.whereClause = _and([*own, ast.SubLink(subLinkType=enums.SubLinkType.EXISTS_SUBLINK, subselect=sub)])
    unique = _unique_key_shown(ctx, kept, {c for n, c in shown if n == kept.name}, stmt.targetList)
    if unique:
        out.distinctClause = None
    names = ", ".join(r.name for r in ctx.scope.rels if r is not kept)
    return Rewrite(
        "distinct_to_exists",
        deparse(out),
        f"SELECT DISTINCT removes the duplicates the join with {names} makes, and the output reads only "
        f"{kept.name}: EXISTS filters {kept.name}'s rows without making them"
        + (f" (and {unique} is a unique key of {kept.name} in the output, so DISTINCT goes too)" if unique else ""),
    )


def _unique_key_shown(ctx: _Context, rel: _Rel, shown: set[str], targets: Any) -> str | None:
    """A unique, NOT NULL key of ``rel`` output as plain columns, so its rows are distinct already."""
    plain = {
        hit[1]
        for t in targets or ()
        if _is(t.val, ast.ColumnRef) and (hit := ctx.scope.resolve(t.val)) is not None and hit[0] is rel
    }
    if rel.info is None:
        return None
    for index in ctx.catalog.indexes([rel.info.oid]):
        keys = index.key_columns
        if (
            index.unique
            and index.valid
            and index.predicate is None
            and all(k is not None and k in rel.not_null for k in keys)
            and {k for k in keys if k is not None} <= plain & shown
        ):
            return "(" + ", ".join(k for k in keys if k is not None) + ")"
    return None


def scalar_subquery_to_join(ctx: _Context) -> Rewrite | None:
    stmt = copy.deepcopy(ctx.stmt)
    targets = list(stmt.targetList or ())
    found = [
        i
        for i, t in enumerate(targets)
        if _is(t.val, ast.SubLink) and t.val.subLinkType == enums.SubLinkType.EXPR_SUBLINK
    ]
    if not found:
        return None
    if stmt.groupClause or stmt.distinctClause or _has_aggregate_or_window(
        [t.val for t in targets if not _is(t.val, ast.SubLink)]
    ):
        raise _Declined("a scalar subquery in a grouped or DISTINCT select list: not rewritten")
    if len(stmt.fromClause or ()) != 1:
        raise _Declined("a scalar subquery over a FROM list of several items: not rewritten")
    taken = {r.name for r in ctx.scope.rels}
    item = stmt.fromClause[0]
    why: list[str] = []
    for n, i in enumerate(found, 1):
        link = targets[i].val
        sub = link.subselect
        if not _simple_select(sub) or sub.groupClause or sub.havingClause or sub.distinctClause or \
                sub.sortClause or sub.limitCount is not None or len(sub.targetList or ()) != 1:
            raise _Declined("a scalar subquery that is not one plain aggregate: not rewritten")
        agg = sub.targetList[0].val
        fname = _names(agg.funcname)[-1] if _is(agg, ast.FuncCall) else ""
        if fname not in _AGGREGATES or agg.over is not None or agg.agg_filter is not None or agg.agg_order:
            raise _Declined("a scalar subquery whose value is not count, sum, avg, min or max: not rewritten")
        if len(sub.fromClause or ()) != 1 or not _is(sub.fromClause[0], ast.RangeVar):
            raise _Declined("a scalar subquery over more than one table: not rewritten")
        inner = _Scope(_rels(ctx.catalog, sub.fromClause), None)
        rel = inner.rels[0]
        with_outer = _Scope(inner.rels, ctx.scope)
        if inner.refs(agg) is None:
            raise _Declined("a scalar subquery whose aggregate reads the outer row: not rewritten")
        keys: list[tuple[str, Any]] = []  # (inner column, outer column reference)
        local: list[Any] = []
        for c in _conjuncts(sub.whereClause):
            own = inner.refs(c)
            if own is not None:
                local.append(c)
                continue
            pair = _correlation(c, inner, with_outer, rel)
            if pair is None:
                raise _Declined(f"a scalar subquery correlated by {deparse(c)}, not by equalities: not rewritten")
            keys.append(pair)
        if not keys:
            return None
        alias = next(a for k in range(n, n + 100) if (a := f"sq{k}") not in taken)
        taken.add(alias)
        # Names of the derived table's own, so no unqualified name of the outer statement becomes ambiguous.
        names = [f"{alias}_key{j}" for j in range(1, len(keys) + 1)]
        value = f"{alias}_value"
        grouped = ast.SelectStmt(
            targetList=tuple(
                [ast.ResTarget(name=name, val=_column(rel.name, k)) for name, (k, _) in zip(names, keys, strict=True)]
                + [ast.ResTarget(name=value, val=agg)]
            ),
            fromClause=sub.fromClause,
            whereClause=_and(local),
            groupClause=tuple(_column(rel.name, k) for k, _ in keys),
            op=enums.SetOperation.SETOP_NONE,
            limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT,
        )
        on = _and(
            [
                ast.A_Expr(
                    kind=enums.A_Expr_Kind.AEXPR_OP,
                    name=(ast.String(sval="="),),
                    lexpr=_column(alias, name),
                    rexpr=outer,
                )
                for name, (_, outer) in zip(names, keys, strict=True)
            ]
        )
        item = ast.JoinExpr(
            jointype=enums.JoinType.JOIN_LEFT,
            larg=item,
            rarg=ast.RangeSubselect(subquery=grouped, alias=ast.Alias(aliasname=alias)),
            quals=on,
        )
        # No matching row: the subquery's count is 0 and the other aggregates NULL; the join's row is NULL.
        column: Any = _column(alias, value)
        if fname == "count":
            column = ast.CoalesceExpr(args=(column, ast.A_Const(val=ast.Integer(ival=0))))
        targets[i] = ast.ResTarget(name=targets[i].name or fname, val=column)
        why.append(f"({deparse(link.subselect)}) runs once per row")
    stmt.fromClause = (item,)
    stmt.targetList = tuple(targets)
    return Rewrite(
        "scalar_subquery_to_join",
        deparse(stmt),
        "; ".join(why) + ": one grouped LEFT JOIN computes it for every row at once",
    )


def _correlation(node: Any, inner: _Scope, both: _Scope, rel: _Rel) -> tuple[str, Any] | None:
    """(inner column, outer column reference) of ``inner.col = outer.col``, else None."""
    if not (_is(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP and _op(node) == "="):
        return None
    for a, b in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
        if not (_is(a, ast.ColumnRef) and _is(b, ast.ColumnRef)):
            continue
        mine, theirs = inner.resolve(a), inner.resolve(b)
        if mine is None or mine[0] is not rel or theirs is not None:
            continue
        outer = both.resolve(b)
        if outer is None or outer[0] is rel:
            continue
        return mine[1], _column(outer[0].name, outer[1])
    return None


def offset_to_keyset(ctx: _Context) -> Rewrite | None:
    stmt = copy.deepcopy(ctx.stmt)
    if stmt.limitOffset is None:
        return None
    advice = "keyset pagination is not proposed"
    if not stmt.sortClause:
        raise _Declined(f"OFFSET without ORDER BY: pages are not stable; {advice}")
    keys: list[tuple[_Rel, str, Any]] = []
    directions = set()
    for sort in stmt.sortClause:
        hit = ctx.scope.resolve(sort.node) if _is(sort.node, ast.ColumnRef) else None
        if hit is None:
            raise _Declined(f"OFFSET ordered by an expression: {advice}")
        keys.append((hit[0], hit[1], sort))
        directions.add(sort.sortby_dir == enums.SortByDir.SORTBY_DESC)
    if len(directions) != 1 or len({k[0].name for k in keys}) != 1:
        raise _Declined(f"OFFSET ordered in mixed directions or by several tables: {advice}")
    rel, descending = keys[0][0], directions.pop()
    columns = [c for _, c, _ in keys]
    if rel.info is None:
        return None
    unique = [
        i for i in ctx.catalog.indexes([rel.info.oid])
        if i.unique and i.valid and i.predicate is None and None not in i.key_columns
    ]
    if not any({k for k in i.key_columns if k is not None} <= set(columns) for i in unique):
        primary = next((i for i in unique if i.primary), None)
        if primary is None:
            raise _Declined(f"OFFSET ordered by a key that is not unique, and {rel.name} has no primary key: {advice}")
        for k in primary.key_columns:
            if k is not None and k not in columns:
                columns.append(k)
                stmt.sortClause = (*stmt.sortClause, ast.SortBy(
                    node=_column(rel.name, k), sortby_dir=keys[0][2].sortby_dir, sortby_nulls=keys[0][2].sortby_nulls
                ))
    nullable = [c for c in columns if c not in rel.not_null or rel.nullable]
    if nullable:
        raise _Declined(f"OFFSET ordered by nullable {', '.join(nullable)}: {advice}")
    first = _max_param(ctx.stmt) + 1
    last = [f"${first + n}" for n in range(len(columns))]
    row = ", ".join(deparse(_column(rel.name, c)) for c in columns)
    cond = f"({row}) {'<' if descending else '>'} ({', '.join(last)})" if len(columns) > 1 else \
        f"{row} {'<' if descending else '>'} {last[0]}"
    stmt.whereClause = _and([*_conjuncts(stmt.whereClause), _expr(cond)])
    stmt.limitOffset = None
    return Rewrite(
        "offset_to_keyset",
        deparse(stmt),
        f"OFFSET reads and discards every row before the page; keyset pagination starts after the previous page's "
        f"last ({', '.join(columns)}), passed as {', '.join(last)} instead of the offset. It changes the "
        "statement's parameters, so the caller changes too: advisory, not verified equal",
        advisory=True,
    )


def count_estimate(ctx: _Context) -> Rewrite | None:
    stmt = ctx.stmt
    targets: Any = stmt.targetList or ()
    if not (
        len(targets) == 1
        and _is(targets[0].val, ast.FuncCall)
        and _names(targets[0].val.funcname)[-1:] == ["count"]
        and targets[0].val.agg_star
        and stmt.whereClause is None
        and not stmt.groupClause
        and len(ctx.scope.rels) == 1
        and _is(stmt.fromClause[0], ast.RangeVar)
    ):
        return None
    rel = ctx.scope.rels[0]
    if rel.info is None:
        return None
    if rel.info.reltuples < COUNT_ESTIMATE_MIN_ROWS:
        raise _Declined(
            f"count(*) of {rel.info.qualified}: about {max(rel.info.reltuples, 0):.0f} rows, fast enough to count "
            "exactly"
        )
    qualified = f"{ctx.catalog.quote(rel.info.schema)}.{ctx.catalog.quote(rel.info.name)}"
    estimate = ast.SelectStmt(
        targetList=(
            ast.ResTarget(
                name=targets[0].name or "count",
                val=_expr("pg_catalog.greatest(c.reltuples, 0)::bigint"),
            ),
        ),
        fromClause=(
            ast.RangeVar(schemaname="pg_catalog", relname="pg_class", inh=True, alias=ast.Alias(aliasname="c")),
        ),
        whereClause=ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_OP,
            name=(ast.String(sval="="),),
            lexpr=_column("c", "oid"),
            rexpr=ast.TypeCast(
                arg=ast.A_Const(val=ast.String(sval=qualified)),
                typeName=ast.TypeName(names=(ast.String(sval="regclass"),), typemod=-1),
            ),
        ),
        op=enums.SetOperation.SETOP_NONE,
        limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT,
    )
    return Rewrite(
        "count_estimate",
        deparse(estimate),
        f"count(*) reads all of {rel.info.qualified} (about {rel.info.reltuples:,.0f} rows) every time; where an "
        "approximate number is enough (a dashboard), the planner's estimate, kept by ANALYZE and autovacuum, costs "
        "one catalog row. It returns an estimate, not the count: advisory, not verified equal",
        advisory=True,
    )


RULES: tuple[Rule, ...] = (
    left_join_to_inner,
    not_in_to_not_exists,
    or_to_union_all,
    sargable_predicate,
    distinct_to_exists,
    scalar_subquery_to_join,
    offset_to_keyset,
    count_estimate,
)


def propose(catalog: Snapshot, text: str) -> Found:
    """Every rule's rewrite of the statement ``text`` (normalised, ``$n`` placeholders), or why it declined."""
    try:
        statements = parser.parse_sql(repair_placeholders(text))
    except ParseError:
        return Found((), ())
    if len(statements) != 1 or not _simple_select(statements[0].stmt):
        return Found((), ())
    stmt: Any = statements[0].stmt
    try:
        scope = _Scope(_rels(catalog, stmt.fromClause))
    except _Declined as exc:
        return Found((), (f"rewrite rules: not applied: {exc}",))
    ctx = _Context(catalog, stmt, scope)
    rewrites: list[Rewrite] = []
    declined: list[str] = []
    for rule in RULES:
        try:
            found = rule(ctx)
        except _Declined as exc:
            declined.append(f"rewrite {rule.__name__}: declined: {exc}")
            continue
        if found is None:
            continue
        # What we print must parse back to one SELECT: the deparser is trusted, but checked.
        try:
            again = parser.parse_sql(found.sql)
        except ParseError as exc:
            declined.append(f"rewrite {rule.__name__}: declined: the rewritten text does not parse ({exc})")
            continue
        if len(again) == 1 and _is(again[0].stmt, ast.SelectStmt):
            rewrites.append(found)
    return Found(tuple(rewrites), tuple(declined))
