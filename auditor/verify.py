"""Checking a proposal, whoever made it (the rewrite rules, a model): allow-list first, then measurement.

- ``index``: the parser's index allow-list (auditor.safety), on a table the statement reads, not already
  covered, then measured by the audit's Measurer (hypopg, a rolled-back build or staging) like any candidate.
- ``rewrite``: one read-only SELECT (the same allow-list as EXPLAIN ANALYZE) using only the original's
  placeholders; for each sampled parameter set, the original and the rewrite run in one READ ONLY transaction
  that is rolled back, and their rows must be equal as multisets; then both are timed.
- ``settings``: one ``SET`` of a planner or memory setting on a short allow-list, with one constant value;
  the statement is timed with and without it (``SET LOCAL``) in one READ ONLY transaction that is rolled back.
- anything else (partition, cache) cannot be measured here and is refused with that reason.

Nothing the model wrote is executed as written: index DDL is re-composed from its parse, rewrites are re-printed
by the parser and bound by auditor.params.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

from pglast import ast, enums, parser
from pglast.parser import ParseError

from pg_architect.auditor import params, safety
from pg_architect.auditor.advisor import Candidate, Key, covering_index
from pg_architect.auditor.catalog import Snapshot, TableInfo
from pg_architect.auditor.decision import worth_applying
from pg_architect.auditor.measure import CannotMeasure, Measurer, Outcome, Plan, explain, rolled_back
from pg_architect.auditor.models import Measurement, MeasurementMethod
from pg_architect.auditor.parsing import QueryShape, deparse, repair_placeholders
from pg_architect.core import db
from pg_architect.core.errors import DatabaseError, PgArchitectError, UnsafeSQLError
from pg_architect.core.sqlfiles import mark

#: Settings a model may propose: they change plans and memory of one transaction, nothing else.
SETTINGS = frozenset(
    {"work_mem", "hash_mem_multiplier", "random_page_cost", "seq_page_cost", "effective_cache_size", "jit"}
)
#: The most work_mem (or effective_cache_size) a measurement may set: more could exhaust the server's memory.
MAX_MEMORY_BYTES = 1 << 30

#: Rows compared per sample; a statement returning more is not compared (and the rewrite refused).
MAX_COMPARED_ROWS = 100_000
REPEATS = 2


class Refused(PgArchitectError):
    """The proposal failed a check; the message is the reason stored with it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    sql: str  # what would be applied: composed or re-printed by us
    rollback_sql: str | None
    measurement: Measurement
    outcome: Outcome | None  # index proposals: the Measurer's outcome (for the shared confidence score)
    table: TableInfo | None
    consistent: bool
    worth: bool
    rows: tuple[int, ...] = ()  # rewrites: the rows both forms returned, per compared parameter set


def _table_for(ddl: safety.IndexDDL, tables: Mapping[tuple[str | None, str], TableInfo]) -> TableInfo | None:
    for table in tables.values():
        if table.schema == ddl.schema and table.name == ddl.table:
            return table
    return None


def index(
    conn: db.Connection,
    catalog: Snapshot,
    measurer: Measurer,
    sql: str,
    *,
    kind: str,
    samples: Sequence[str],
    tables: Mapping[tuple[str | None, str], TableInfo],
    min_gain_percent: float,
) -> Verified:
    try:
        ddl = safety.check_index_target(conn, safety.check_index_ddl(sql))
    except UnsafeSQLError as exc:
        raise Refused(str(exc)) from None
    table = _table_for(ddl, tables)
    if table is None:
        raise Refused(
            f"refused: the index is on {ddl.schema}.{ddl.table}, a table this statement does not read "
            f"({', '.join(sorted(t.qualified for t in tables.values()))})"
        )
    plain = (
        ddl.method == "btree"
        and not ddl.include
        and all(e.opclass is None and e.collation is None and e.nulls_first is None for e in ddl.elements)
    )
    if not plain:
        raise Refused(
            "refused: only plain btree keys (no INCLUDE, operator class, collation or NULLS order) are measured"
        )
    keys = tuple(Key(column=e.column, expression=e.expression, descending=e.descending) for e in ddl.elements)
    cand = Candidate(table, keys, ddl.where, "proposed by the model")
    covered = covering_index(cand, catalog.indexes([table.oid]))
    if covered is not None:
        raise Refused(f"refused: {cand.describe()} is already covered by index {covered.qualified}")
    try:
        method, outcomes = measurer.measure(kind, samples, [cand], list(tables.values()))
    except CannotMeasure as exc:
        raise Refused(f"not measured: {exc}") from None
    except UnsafeSQLError as exc:
        raise Refused(str(exc)) from None
    outcome = outcomes[0]
    if outcome.measurement is None:
        raise Refused(f"not measured ({method}): {outcome.error}")
    return Verified(
        sql=cand.ddl(conn) + ";",
        rollback_sql=cand.rollback(conn) + ";",
        measurement=outcome.measurement,
        outcome=outcome,
        table=table,
        consistent=outcome.consistent,
        worth=worth_applying(outcome, min_gain_percent),
    )


def _placeholders(text: str) -> set[int]:
    try:
        return {int(text[t.start + 1 : t.end + 1]) for t in parser.scan(text) if t.name == "PARAM"}
    except (ParseError, ValueError) as exc:
        raise Refused(f"refused: not valid SQL ({exc})") from None


def reprint_select(sql: str) -> str:
    """The model's SELECT re-printed from its parse tree (comments gone); Refused unless exactly one SELECT."""
    try:
        statements = parser.parse_sql(repair_placeholders(sql))
    except ParseError as exc:
        raise Refused(f"refused: not valid SQL ({exc})") from None
    if len(statements) != 1:
        raise Refused(f"refused: exactly one statement allowed, found {len(statements)}")
    return deparse(statements[0].stmt)


def _rows(conn: db.Connection, sql: str) -> collections.Counter[str]:
    # Whole rows as text: column names may differ between the two forms, values may not.
    wrapped = (
        db.SQL("SELECT t::text AS row FROM ({}) AS t LIMIT {}")
        .format(db.SQL(sql), db.Literal(MAX_COMPARED_ROWS + 1))
        .as_string(conn)
    )
    safety.check_readonly_select(wrapped, conn)
    found = collections.Counter(str(r[0]) for r in db.fetch_tuples(conn, mark(wrapped)))
    if sum(found.values()) > MAX_COMPARED_ROWS:
        raise Refused(f"not verified: the statement returns more than {MAX_COMPARED_ROWS} rows, too many to compare")
    return found


def _fastest(conn: db.Connection, sql: str) -> Plan:
    plans = [explain(conn, sql, analyze=True) for _ in range(REPEATS)]
    return min(plans, key=lambda p: p.ms if p.ms is not None else float("inf"))


def rewrite(
    conn: db.Connection,
    catalog: Snapshot,
    sql: str,
    *,
    shape: QueryShape,
    types: Mapping[int, str],
    n_samples: int,
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    min_gain_percent: float,
) -> Verified:
    if shape.kind != "select":
        raise Refused(
            f"refused: a rewrite of a {shape.kind.upper()} cannot be verified without executing it; only SELECT "
            "rewrites are checked"
        )
    text = reprint_select(sql)
    try:
        safety.check_readonly_select(text, conn)
    except UnsafeSQLError as exc:
        raise Refused(str(exc)) from None
    extra = _placeholders(text) - set(types)
    if extra:
        raise Refused(
            "refused: the rewrite uses placeholders the original does not have: "
            + ", ".join(f"${n}" for n in sorted(extra))
        )
    # The original re-printed too: a trailing "-- comment" must not swallow the wrapper's closing parenthesis.
    original_text = reprint_select(shape.text)
    values = params.sample_parameters(catalog, shape, types, n_samples) if types else [{}]
    pairs: list[tuple[str, str]] = []
    for v in values:
        try:
            pair = (params.bind_parameters(original_text, v, types), params.bind_parameters(text, v, types))
        except params.ParameterError:
            continue
        if pair not in pairs:
            pairs.append(pair)
    if not pairs:
        raise Refused("not verified: no parameter values could be bound to compare the rewrite with")
    before: list[Plan] = []
    after: list[Plan] = []
    rows: list[int] = []
    try:
        with rolled_back(conn, lock_timeout_ms, statement_timeout_ms, read_only=True):
            for i, (original, candidate) in enumerate(pairs, 1):
                safety.check_readonly_select(original, conn)
                safety.check_readonly_select(candidate, conn)
                want, got = _rows(conn, original), _rows(conn, candidate)
                if want != got:
                    missing = sum((want - got).values())
                    added = sum((got - want).values())
                    raise Refused(
                        f"refused: the rewrite changes the results: for parameter set {i} of {len(pairs)} it returns "
                        f"{sum(got.values())} row(s) against the original's {sum(want.values())} "
                        f"({missing} missing, {added} extra)"
                    )
                rows.append(sum(want.values()))
                before.append(_fastest(conn, original))
                after.append(_fastest(conn, candidate))
    except UnsafeSQLError as exc:
        raise Refused(str(exc)) from None
    except DatabaseError as exc:
        raise Refused(f"not verified: {exc}") from None
    measurement = _timed_measurement("equivalence", before, after, len(pairs), min_gain_percent)
    return Verified(
        sql=text + ";",
        rollback_sql=None,
        measurement=measurement,
        outcome=None,
        table=None,
        consistent=all((b.ms or 0) > (a.ms or 0) for b, a in zip(before, after, strict=True)),
        worth=measurement.worth_applying,
        rows=tuple(rows),
    )


def _setting(sql: str) -> tuple[str, str]:
    """(name, value) of one allow-listed ``SET name = constant``; Refused otherwise."""
    try:
        statements = parser.parse_sql(sql)
    except ParseError as exc:
        raise Refused(f"refused: not valid SQL ({exc})") from None
    if len(statements) != 1:
        raise Refused(f"refused: exactly one statement allowed, found {len(statements)}")
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.VariableSetStmt) or stmt.kind != enums.VariableSetKind.VAR_SET_VALUE:
        raise Refused("refused: a settings proposal must be one SET name = value")
    name = str(stmt.name or "").lower()
    if name not in SETTINGS:
        raise Refused(f"refused: {name} is not one of the settings measured here ({', '.join(sorted(SETTINGS))})")
    args = stmt.args or ()
    if len(args) != 1 or not isinstance(args[0], ast.A_Const) or args[0].isnull:
        raise Refused("refused: the setting's value must be one constant")
    val = args[0].val
    value = str(getattr(val, "sval", None) or getattr(val, "fval", None) or getattr(val, "ival", ""))
    return name, value


def settings(
    conn: db.Connection,
    sql: str,
    *,
    kind: str,
    samples: Sequence[str],
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    min_gain_percent: float,
) -> Verified:
    if kind != "select":
        raise Refused(f"refused: a setting for a {kind.upper()} cannot be timed without executing it")
    name, value = _setting(sql)
    before: list[Plan] = []
    after: list[Plan] = []
    try:
        with rolled_back(conn, lock_timeout_ms, statement_timeout_ms, read_only=True):
            for sample in samples:
                safety.check_readonly_select(sample, conn)
                before.append(_fastest(conn, sample))
            # The server validates the value (unit, range); bound as a parameter, never spliced.
            db.execute(conn, mark("SELECT pg_catalog.set_config(%s, %s, true)"), (name, value))
            if name in ("work_mem", "effective_cache_size"):
                size = db.fetch_value(
                    conn, mark("SELECT pg_catalog.pg_size_bytes(pg_catalog.current_setting(%s))"), (name,)
                )
                if int(size) > MAX_MEMORY_BYTES:
                    raise Refused(f"refused: {name} = {value} is over the {MAX_MEMORY_BYTES >> 20} MB measured here")
            for sample in samples:
                after.append(_fastest(conn, sample))
    except DatabaseError as exc:
        raise Refused(f"not verified: {exc}") from None
    measurement = _timed_measurement("set_local", before, after, len(samples), min_gain_percent)
    quoted = db.Literal(value).as_string(conn)
    return Verified(
        sql=f"SET LOCAL {name} = {quoted};  -- in this statement's transaction",
        rollback_sql="-- SET LOCAL ends with the transaction: nothing to roll back",
        measurement=measurement,
        outcome=None,
        table=None,
        consistent=all((b.ms or 0) > (a.ms or 0) for b, a in zip(before, after, strict=True)),
        worth=measurement.worth_applying,
    )


def _timed_measurement(
    method: MeasurementMethod, before: Sequence[Plan], after: Sequence[Plan], samples: int, min_gain_percent: float
) -> Measurement:
    """A measurement from timed plans of the same samples, before and after (a rewrite, a setting)."""
    before_ms = sum(p.ms or 0.0 for p in before)
    after_ms = sum(p.ms or 0.0 for p in after)
    gain = (before_ms - after_ms) / before_ms * 100.0 if before_ms > 0 else 0.0
    return Measurement(
        method=method,
        before_cost=sum(p.cost for p in before),
        after_cost=sum(p.cost for p in after),
        before_ms=before_ms,
        after_ms=after_ms,
        gain_percent=gain,
        worth_applying=gain > min_gain_percent,
        plan_changed=any(a.shape() != b.shape() for a, b in zip(after, before, strict=True)),
        plan_before=before[0].text if before else None,
        plan_after=after[0].text if after else None,
        samples=samples,
    )
