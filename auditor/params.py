"""Representative values for a normalised statement's placeholders, from the catalog and pg_stats.

A plan with NULL or generic parameters misjudges selectivity (a common value and a rare one want
different plans), so the advisor compares plans with real values: the column each ``$n`` meets gives its
type (pg_attribute) and its values (pg_stats most common values and histogram, or a small table sample
when the column has no statistics). Nothing here writes: no ANALYZE, no PREPARE. Values never come from
an LLM. Values are bound as quoted literals with an explicit cast, placed at the scanner's placeholder
positions, so a ``$1`` inside a string or a comment is left alone.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pglast import ast, parser
from pglast.parser import ParseError

from pg_architect.auditor.catalog import ColumnStats, Relation, Snapshot
from pg_architect.auditor.parsing import (
    ParamUse,
    QueryShape,
    TableRef,
    UnparseableQuery,
    carried_equalities,
    deparse,
    repair_placeholders,
)
from pg_architect.auditor.queries import QUERIES
from pg_architect.auditor.safety import check_readonly_select
from pg_architect.core import db
from pg_architect.core.errors import PgArchitectError, UnsafeSQLError
from pg_architect.core.sqlfiles import mark

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_OFFSET",
    "ColumnStats",
    "ParameterError",
    "bind_parameters",
    "infer_parameter_types",
    "sample_parameters",
    "sample_with_range",
    "server_parameter_types",
    "time_fits",
]

DEFAULT_LIMIT = "20"
DEFAULT_OFFSET = "0"
# Selectivities tried for range predicates, one per sample: typical, narrow, wide.
# Selective first (the usual case an index serves), then wide ones, so that the samples matching the
# rows pg_stat_statements records per call can be chosen (auditor.measure.representative).
_RANGE_SELECTIVITY = (0.05, 0.01, 0.25, 0.6, 0.95)
# Placeholders that stand for a normalised constant argument of a well-known function.
_FUNCTION_ARGUMENTS = {"date_trunc": "day", "date_part": "day", "to_char": "YYYY-MM-DD"}


class ParameterError(PgArchitectError):
    """Placeholders could not be bound (a value or type is missing, or a type name is not a type)."""


# -- type inference ----------------------------------------------------------------------------------


def _placeholders(text: str) -> list[int]:
    """Every ``$n`` the scanner finds (not inside strings or comments), ascending."""
    try:
        tokens = parser.scan(text)
    except ParseError:
        return []
    return sorted({int(text[t.start + 1 : t.end + 1]) for t in tokens if t.name == "PARAM"})


def _replace_placeholders(text: str, replacement: Callable[[int], str]) -> str:
    """``text`` with each ``$n`` token (per the scanner: not in strings or comments) replaced."""
    try:
        tokens = parser.scan(text)
    except ParseError as exc:
        raise UnparseableQuery(f"cannot scan statement: {exc}") from exc
    pieces: list[str] = []
    last = 0
    for tok in tokens:
        if tok.name != "PARAM":
            continue
        pieces.append(text[last : tok.start])
        pieces.append(replacement(int(text[tok.start + 1 : tok.end + 1])))
        last = tok.end + 1
    pieces.append(text[last:])
    return "".join(pieces)


def _expression_type(catalog: Snapshot, table: TableRef, expression: str) -> str | None:
    """Type of ``expression`` over ``table``, asked of the server without reading a single row.

    A LEFT JOIN LATERAL on ``LIMIT 0`` yields one NULL of the expression's type, so pg_typeof names the
    type while no row of the table is read and no function is called on data. The expression comes
    from the workload's own statement; it still passes the read-only allow-list first.
    """
    relation = catalog.relation(table)
    if relation is None:
        return None
    # Placeholders inside the expression (normalised constants, as in date_trunc($1, x)) become untyped
    # NULLs: the server resolves the functions as it would for the original constants.
    expression = _replace_placeholders(expression, lambda _number: "NULL")
    probe = db.SQL(
        "SELECT pg_catalog.format_type(pg_catalog.pg_typeof(s.x), NULL) FROM (VALUES (1)) AS d(one) "
        "LEFT JOIN LATERAL (SELECT {expression} AS x FROM {table} LIMIT 0) AS s ON true"
    ).format(
        expression=db.SQL(expression),  # parsed and deparsed by pglast: not user text
        table=db.Identifier(relation.schema_name, relation.table_name),
    )
    text = probe.as_string(catalog.conn)
    try:
        check_readonly_select(text, catalog.conn)
    except UnsafeSQLError:
        return None
    value = db.fetch_value(catalog.conn, text)
    return str(value) if value else None


def _param_type(catalog: Snapshot, use: ParamUse | None) -> str:
    if use is None:
        return "text"
    if use.cast_type:
        return catalog.type_name(use.cast_type)
    if use.context in ("limit", "offset"):
        return "bigint"
    if use.context == "like":
        return "text"
    found: str | None = None
    if use.table is not None and use.column is not None:
        found = catalog.columns(use.table).get(use.column)
    elif use.table is not None and use.expression is not None:
        found = _expression_type(catalog, use.table, use.expression)
    if found is None:
        return "text"
    if use.context == "any_array" and not found.endswith("[]"):
        return found + "[]"
    return found


def infer_parameter_types(catalog: Snapshot, shape: QueryShape) -> dict[int, str]:
    """The type of every ``$n`` of ``shape`` (resolved against ``catalog``), from the column or expression
    it meets (no PREPARE).

    Casts win (``$2::interval``), LIMIT/OFFSET are ``bigint``, LIKE patterns ``text``, ``col = ANY($n)``
    an array of the column's type; a placeholder meeting nothing known is ``text``.
    """
    numbers = sorted(set(_placeholders(shape.text)) | set(shape.parameters))
    return {n: _param_type(catalog, shape.parameters.get(n)) for n in numbers}


# -- value sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pool:
    """Real values of one column: the most common first, then rarer ones; and its histogram."""

    common: tuple[str, ...]
    rare: tuple[str, ...]
    histogram: tuple[str, ...]

    def values(self) -> list[str]:
        """A common value, a rare one, then the others, without repeats."""
        ordered = [*self.common[:1], *self.rare[:1], *self.common[1:], *self.rare[1:]]
        return list(dict.fromkeys(ordered))

    def quantile(self, q: float) -> str | None:
        if not self.histogram:
            return None
        index = round(max(0.0, min(1.0, q)) * (len(self.histogram) - 1))
        return self.histogram[index]


def _sampled_values(conn: db.Connection, relation: Relation, value: db.SQL | db.Identifier, limit: int) -> list[str]:
    """A few distinct non-NULL values of a column or expression, read from the table itself.

    Used when pg_stats has nothing (no ANALYZE yet, or an expression): TABLESAMPLE SYSTEM reads about
    1 % of the pages, the same pages on every run (a fixed seed: the same recommendations run after run);
    for tables too small for that to return rows, the first rows found.
    """
    table = db.Identifier(relation.schema_name, relation.table_name)
    queries = []
    if relation.relkind in ("r", "m", "p"):
        queries.append(
            db.SQL(
                "SELECT DISTINCT ({value})::text AS v FROM {table} TABLESAMPLE SYSTEM (1) REPEATABLE (20) "
                "WHERE ({value}) IS NOT NULL LIMIT {limit}"
            )
        )
    queries.append(
        db.SQL(
            "SELECT DISTINCT v FROM (SELECT ({value})::text AS v FROM {table} "
            "WHERE ({value}) IS NOT NULL LIMIT {scan}) AS s LIMIT {limit}"
        )
    )
    for query in queries:
        text = query.format(value=value, table=table, limit=db.Literal(limit), scan=db.Literal(limit * 50)).as_string(
            conn
        )
        # The expression comes from the workload's statement: it must pass the read-only allow-list.
        check_readonly_select(text, conn)
        values = [str(row["v"]) for row in db.fetch_dicts(conn, text) if row["v"] is not None]
        if values:
            return values
    return []


def _expression_pool(catalog: Snapshot, table: TableRef, expression: str, arguments: Mapping[int, str]) -> _Pool:
    """Real values of an expression (``lower(email)``, ``created_at::date``) sampled from its table."""
    relation = catalog.relation(table)
    if relation is None:
        return _Pool((), (), ())
    # A placeholder inside the expression is a normalised constant: its known value, else NULL.
    bound = _replace_placeholders(
        expression, lambda n: db.Literal(arguments[n]).as_string(catalog.conn) if n in arguments else "NULL"
    )
    try:
        sampled = _sampled_values(catalog.conn, relation, db.SQL(bound), 5)
    except UnsafeSQLError:
        return _Pool((), (), ())
    return _Pool(tuple(sampled[:1]), tuple(sampled[1:]), ())


def _pool(catalog: Snapshot, table: TableRef, column: str) -> _Pool:
    relation = catalog.relation(table)
    if relation is None or column not in catalog.columns(table):
        return _Pool((), (), ())
    stats = catalog.column_stats(relation.schema_name, relation.table_name, column)
    common: list[str] = []
    rare: list[str] = []
    histogram = tuple(stats.histogram_bounds or ()) if stats else ()
    if stats and stats.most_common_vals:
        pairs = sorted(
            zip(stats.most_common_vals, stats.most_common_freqs or [], strict=False), key=lambda pair: -pair[1]
        )
        common = [value for value, _ in pairs]
        # The least common MCV is still frequent; a histogram value (never an MCV) is rarer.
        rare = [pairs[-1][0]] if len(pairs) > 1 else []
    if histogram:
        middle = len(histogram) // 2
        rare = [histogram[middle], *rare, *histogram[1:middle], *histogram[middle + 1 :]]
    if not common and not rare:
        sampled = _sampled_values(catalog.conn, relation, db.Identifier(column), 5)
        common, rare = sampled[:1], sampled[1:]
    return _Pool(tuple(common), tuple(rare), histogram)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _array_literal(values: Sequence[str]) -> str:
    quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
    return "{" + ",".join(quoted) + "}"


def _default_value(type_name: str, sample: int) -> str:
    """A harmless, realistic value for a placeholder that meets no column."""
    lowered = type_name.lower()
    if lowered.endswith("[]"):
        return "{}"
    if lowered == "interval":
        return ("7 days", "1 day", "30 days")[sample % 3]
    if lowered.startswith("timestamp") or lowered.startswith("time"):
        return "now"  # PostgreSQL's special input: "recent" is what most time filters ask for
    if lowered == "date":
        return "today"
    if lowered == "boolean":
        return "true"
    if lowered in ("smallint", "integer", "bigint", "numeric", "real", "double precision", "oid"):
        return "1"
    if lowered == "uuid":
        return "00000000-0000-0000-0000-000000000000"
    if lowered in ("json", "jsonb"):
        return "{}"
    return ""


def _range_value(pool: _Pool, operator: str | None, selectivity: float, paired: bool) -> str | None:
    """A histogram bound giving ``col OP value`` about ``selectivity`` of the rows.

    A lower bound alone takes the top ``selectivity`` of the values (the "recent" end); paired with an
    upper bound, the upper bound is the largest value, so the pair selects the same slice.
    """
    if operator in (">", ">="):
        return pool.quantile(1.0 - selectivity)
    if operator in ("<", "<="):
        return pool.quantile(1.0) if paired else pool.quantile(selectivity)
    return None


_FALLBACK_TYPES = ("integer", "bigint", "numeric", "timestamp with time zone", "timestamp without time zone", "date")


def server_parameter_types(conn: db.Connection, text: str, known: Mapping[int, str] | None = None) -> dict[int, str]:
    """The types PostgreSQL infers for each ``$n`` (``attempts + $2`` is an integer) from PREPARE, which plans
    and never executes; only our own prepared statement is deallocated, by name.

    Placeholders of ``known`` type are declared; when the server still cannot resolve the rest
    (``col < $2 + interval $3``: unknown + interval), each of the statement's own types and a few common ones
    is tried for them in turn. Empty when nothing prepares.
    """
    count = max(_placeholders(text), default=0)
    if not count:
        return {}
    declared = {n: t for n, t in (known or {}).items() if t != "text"}
    unknown = [n for n in range(1, count + 1) if n not in declared]
    guesses: list[dict[int, str]] = (
        [{}] + [dict.fromkeys(unknown, guess) for guess in dict.fromkeys([*declared.values(), *_FALLBACK_TYPES])]
        if unknown
        else [{}]
    )
    for guess in guesses:
        types = [{**declared, **guess}.get(n, "unknown") for n in range(1, count + 1)]
        found = _prepared_types(conn, repair_placeholders(text), types)
        if found is not None:
            return {n: t for n, t in enumerate(found, 1) if t not in ("unknown", "text")}
    return {}


def _prepared_types(conn: db.Connection, text: str, types: Sequence[str]) -> list[str] | None:
    name = f"pgarch_probe_{secrets.token_hex(6)}"
    declared = db.SQL(", ").join(db.SQL(_checked_type(t)) if t != "unknown" else db.SQL("unknown") for t in types)
    try:
        db.execute(conn, db.SQL("PREPARE {} ({}) AS ").format(db.Identifier(name), declared) + db.SQL(mark(text)))
    except PgArchitectError:
        return None
    try:
        return list(db.fetch_value(conn, db.query(conn, QUERIES, "prepared_parameter_types"), (name,)) or [])
    finally:
        db.execute(conn, db.SQL("DEALLOCATE {}").format(db.Identifier(name)))


def sample_parameters(
    catalog: Snapshot,
    shape: QueryShape,
    types: Mapping[int, str],
    n_samples: int = 3,
    rows_per_call: float | None = None,
    range_scale: Mapping[int, float] | None = None,
) -> list[dict[int, str]]:
    """``n_samples`` sets of real values for the statement's placeholders.

    A ``LIMIT $n`` (pg_stat_statements normalises ``LIMIT 1000`` too) takes the rows each call returned when
    that is more than the default: a page of 1,000 rows wants another plan than a page of 20.

    Per placeholder: equality and IN take a common value first, then a rare one (pg_stats MCVs and
    histogram); ranges take histogram bounds for realistic selectivities; LIKE a real value's prefix plus
    ``%``; ``= ANY($n)`` an array of real values; LIMIT 20, OFFSET 0. A column without statistics is
    sampled with ``TABLESAMPLE SYSTEM (1)``. Read-only: nothing is analysed or written. ``shape`` is resolved
    against ``catalog``; ``types`` are its placeholders' types (inferred, and the server's where it knew better).
    """
    pools: dict[tuple[TableRef, str], _Pool] = {}

    arguments = {
        n: _FUNCTION_ARGUMENTS[u.function]
        for n, u in shape.parameters.items()
        if u.function in _FUNCTION_ARGUMENTS and u.column is None and u.expression is None
    }

    def pool_for(use: ParamUse) -> _Pool | None:
        if use.table is None or (use.column is None and use.expression is None):
            return None
        key = (use.table, use.column or use.expression or "")
        if key not in pools:
            pools[key] = (
                _pool(catalog, use.table, use.column)
                if use.column is not None
                else _expression_pool(catalog, use.table, use.expression or "", arguments)
            )
        return pools[key]

    # Placeholders of one IN list get different values; bounds of one column are paired.
    in_lists: dict[tuple[TableRef | None, str | None], list[int]] = {}
    bounded: dict[tuple[TableRef | None, str | None], set[str]] = {}
    for number, use in shape.parameters.items():
        key = (use.table, use.column)
        if use.context == "in_list":
            in_lists.setdefault(key, []).append(number)
        if use.context == "compare" and use.operator in (">", ">=", "<", "<="):
            bounded.setdefault(key, set()).add(use.operator[0])

    # Equality on several columns of one table: values drawn together from real rows, so the combination
    # exists (a common region with a rare city of another region matches nothing, and measures nothing).
    together: dict[TableRef, dict[str, list[int]]] = {}
    for number, use in shape.parameters.items():
        if use.table is not None and use.column is not None and use.context == "compare" and use.operator == "=":
            together.setdefault(use.table, {}).setdefault(use.column, []).append(number)
    # ... and through the joins that carry them: ``author.id = $1 AND publisher.id = $2`` joined to
    # ``book.author_id`` and ``book.publisher_id`` are drawn from one book's row. Drawn apart, an author and a
    # publisher of no common book match nothing, and a hash join over no rows skips its other side: such a
    # sample measures a plan that does not run what the workload runs.
    for carried in carried_equalities(shape):
        if carried.table is not None and carried.column is not None and carried.param in shape.parameters:
            numbers = together.setdefault(carried.table, {}).setdefault(carried.column, [])
            if carried.param not in numbers:
                numbers.append(carried.param)
    combos: dict[int, list[str]] = {}  # placeholder -> its value in each combination
    for table, by_column in together.items():
        if len(by_column) < 2:
            continue
        columns = sorted(by_column)
        rows = _combinations(catalog, table, columns)
        for position, column in enumerate(columns):
            for number in by_column[column]:
                combos[number] = [row[position] for row in rows]

    # A range that is the statement's only filter: the share of the table each call returned is its selectivity
    # (``id < $1`` returning 2 rows of 500,000 is no 1 % slice), tried first.
    recorded: tuple[float, ...] = ()
    ranges = {(u.table, u.column) for u in shape.parameters.values() if u.context == "compare" and u.operator in (
        ">", ">=", "<", "<=")}
    others = [u for u in shape.parameters.values() if u.context in ("compare", "in_list", "any_array", "like")
              and (u.table, u.column) not in ranges]
    # Rows per call are the filter's rows only when nothing aggregates, deduplicates or cuts them.
    plain = not (shape.aggregates or shape.distinct or shape.has_limit or shape.uses("group_by"))
    if rows_per_call is not None and plain and len(ranges) == 1 and not others:
        range_table = next(iter(ranges))[0]
        info = (
            catalog.tables([range_table]).get((range_table.schema, range_table.name))
            if range_table is not None
            else None
        )
        if info is not None and info.reltuples > 0:
            recorded = (min(max(rows_per_call / info.reltuples, 0.0), 1.0),)

    samples: list[dict[int, str]] = []
    for k in range(max(0, n_samples)):
        values: dict[int, str] = {}
        for number, type_name in types.items():
            param = shape.parameters.get(number)
            if combos.get(number):
                values[number] = combos[number][k % len(combos[number])]
                continue
            if param is not None and param.context == "limit":
                values[number] = limit_for(rows_per_call)
                continue
            values[number] = _sample_value(
                number,
                param,
                type_name,
                k,
                pool_for(param) if param else None,
                in_lists,
                bounded,
                recorded,
                (range_scale or {}).get(k, 1.0),
            )
        samples.append(values)
    return samples


def range_fits_rows(shape: QueryShape) -> bool:
    """Whether the rows each call returned measure the statement's range filter: one table, one range column,
    nothing that aggregates, deduplicates or cuts the rows. Then a range bound can be fitted to them."""
    ranges = {
        (u.table, u.column)
        for u in shape.parameters.values()
        if u.context == "compare" and u.operator in (">", ">=", "<", "<=")
    }
    plain = not (shape.aggregates or shape.distinct or shape.has_limit or shape.uses("group_by"))
    return plain and len(ranges) == 1 and len(shape.tables) == 1


def time_fits(shape: QueryShape) -> bool:
    """Whether a sample's range must be fitted to the statement's recorded mean time, its rows per call saying
    nothing of it: the statement has a range placeholder on a column or expression and aggregates, deduplicates
    or groups (a GROUP BY month returns one row per month whether its range keeps 3 % of the table or 94 %).

    Not with a LIMIT: its time depends on where the matching rows lie in the scan's order, not on how many
    match, and the rows it returns say how far it had to read. Not with equalities alone: a value has no share
    of the table to fit (its common and rare values are drawn already)."""
    ranged = any(
        u.context == "compare"
        and u.operator in (">", ">=", "<", "<=")
        and u.table is not None
        and (u.column is not None or u.expression is not None)
        for u in shape.parameters.values()
    )
    grouped = bool(shape.aggregates or shape.distinct or shape.uses("group_by"))
    return ranged and grouped and not shape.has_limit


def sample_with_range(
    catalog: Snapshot, shape: QueryShape, types: Mapping[int, str], selectivity: float
) -> dict[int, str]:
    """One set of values (the first ``sample_parameters`` draws: the common values of any equality) whose range
    placeholders each keep about ``selectivity`` of their column's rows: the time fit's draws (auditor.measure)."""
    # Without rows per call the first draw's range keeps the first of _RANGE_SELECTIVITY; scaled from there.
    scale = selectivity / _RANGE_SELECTIVITY[0]
    return sample_parameters(catalog, shape, types, 1, None, {0: scale})[0]


def _combinations(catalog: Snapshot, table: TableRef, columns: Sequence[str], limit: int = 6) -> list[tuple[str, ...]]:
    """Value combinations of ``columns`` that real rows of ``table`` have: the most common first, then the
    rarest seen, alternating. A fixed ``REPEATABLE`` seed: the same data gives the same samples."""
    relation = catalog.relation(table)
    if relation is None or any(c not in catalog.columns(table) for c in columns):
        return []
    idents = [db.Identifier(c) for c in columns]
    values = db.SQL(", ").join(db.SQL("({})::text").format(i) for i in idents)
    not_null = db.SQL(" AND ").join(db.SQL("{} IS NOT NULL").format(i) for i in idents)
    positions = db.SQL(", ").join(db.SQL(str(n + 1)) for n in range(len(columns)))
    name = db.Identifier(relation.schema_name, relation.table_name)
    sources = []
    if relation.relkind in ("r", "m", "p"):
        sources.append(db.SQL("{table} TABLESAMPLE SYSTEM (1) REPEATABLE (20)").format(table=name))
    sources.append(db.SQL("(SELECT * FROM {table} LIMIT 5000) AS s").format(table=name))
    for source in sources:
        text = db.SQL(
            "SELECT {values}, count(*) AS n FROM {source} WHERE {not_null} GROUP BY {positions} "
            "ORDER BY n DESC, {positions} LIMIT 200"
        ).format(values=values, source=source, not_null=not_null, positions=positions).as_string(catalog.conn)
        check_readonly_select(text, catalog.conn)
        rows = [tuple(str(v) for v in row[: len(columns)]) for row in db.fetch_tuples(catalog.conn, text)]
        if rows:
            ordered: list[tuple[str, ...]] = []
            low, high = 0, len(rows) - 1
            while low <= high and len(ordered) < limit:
                ordered.append(rows[low])
                if high != low and len(ordered) < limit:
                    ordered.append(rows[high])
                low, high = low + 1, high - 1
            return ordered
    return []


def limit_for(rows_per_call: float | None) -> str:
    """The value of a normalised ``LIMIT $n``: the rows each call returned, at least DEFAULT_LIMIT."""
    if rows_per_call is None or rows_per_call <= int(DEFAULT_LIMIT):
        return DEFAULT_LIMIT
    return str(math.ceil(rows_per_call))


def _sample_value(
    number: int,
    use: ParamUse | None,
    type_name: str,
    k: int,
    pool: _Pool | None,
    in_lists: Mapping[tuple[TableRef | None, str | None], list[int]],
    bounded: Mapping[tuple[TableRef | None, str | None], set[str]],
    selectivity_first: tuple[float, ...] = (),
    scale: float = 1.0,
) -> str:
    if use is None:
        return _default_value(type_name, k)
    if use.context == "limit":
        return DEFAULT_LIMIT
    if use.context == "offset":
        return DEFAULT_OFFSET
    if use.function in _FUNCTION_ARGUMENTS and use.column is None and use.expression is None:
        return _FUNCTION_ARGUMENTS[use.function]
    values = pool.values() if pool is not None else []
    if not values:
        return _default_value(type_name, k)
    key = (use.table, use.column)
    if use.context == "in_list":
        members = in_lists.get(key, [number])
        position = members.index(number) if number in members else 0
        return values[(k + position) % len(values)]
    if use.context == "any_array":
        return _array_literal([values[(k + i) % len(values)] for i in range(min(3, len(values)))])
    if use.context == "like":
        value = values[k % len(values)]
        return _escape_like(value[: max(1, min(3, len(value)))]) + "%"
    if use.context == "compare" and use.operator in (">", ">=", "<", "<=") and pool is not None:
        paired = len(bounded.get(key, set())) == 2
        tried = (*selectivity_first, *_RANGE_SELECTIVITY)
        ranged = _range_value(pool, use.operator, min(tried[k % len(tried)] * scale, 1.0), paired)
        if ranged is not None:
            return ranged
    return values[k % len(values)]


# -- binding -------------------------------------------------------------------------------------------


def _checked_type(type_name: str) -> str:
    """``type_name`` as canonical SQL, after proving it is one type name and nothing else."""
    try:
        statements = parser.parse_sql(f"SELECT NULL::{type_name}")
    except ParseError as exc:
        raise ParameterError(f"{type_name!r} is not a type name: {exc}") from exc
    stmt = statements[0].stmt if len(statements) == 1 else None
    target = stmt.targetList if isinstance(stmt, ast.SelectStmt) and stmt.targetList else ()
    cast = target[0].val if len(target) == 1 else None
    others = (
        "fromClause",
        "whereClause",
        "groupClause",
        "havingClause",
        "sortClause",
        "limitCount",
        "withClause",
        "intoClause",
        "lockingClause",
        "distinctClause",
        "windowClause",
    )
    if (
        not isinstance(cast, ast.TypeCast)
        or not isinstance(cast.arg, ast.A_Const)
        or not cast.arg.isnull
        or any(getattr(stmt, name, None) for name in others)
    ):
        raise ParameterError(f"{type_name!r} is not a type name")
    return deparse(cast.typeName)


def bind_parameters(text: str, values: Mapping[int, str | None], types: Mapping[int, str]) -> str:
    """Executable SQL: each ``$n`` replaced by ``(<quoted literal>::<type>)``.

    Literals are quoted by psycopg (``sql.Literal``), types are checked to be type names, and only the
    scanner's placeholder tokens are replaced: a ``$1`` inside a string or a comment stays as written.
    A value of None binds ``NULL``.
    """
    repaired = repair_placeholders(text)

    def literal(number: int) -> str:
        if number not in values:
            raise ParameterError(f"no value given for ${number}")
        if number not in types:
            raise ParameterError(f"no type given for ${number}")
        value = values[number]
        quoted = "NULL" if value is None else db.Literal(value).as_string(None)
        return f"({quoted}::{_checked_type(types[number])})"

    return _replace_placeholders(repaired, literal)
