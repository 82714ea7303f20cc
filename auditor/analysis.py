"""One slow statement, analysed once, in a fixed order, before anything of it reaches the server's planner.

1. parse (pglast; done once, by the caller, for the fingerprint and the embedding too);
2. resolve every column to a table against the audit's one catalog snapshot (auditor.catalog.Snapshot);
3. infer each placeholder's type from the column or expression it meets;
4. check the statement itself against the allow-list (auditor.safety): nothing below runs otherwise;
5. ask the server for the types only it can infer (PREPARE, planned and never executed, then deallocated);
6. sample real values from pg_stats and bind them (a range's bound fitted to the rows each call returned);
7. check every bound form against the allow-list again.

Only then may the audit EXPLAIN (auditor.measure). Nothing here decides anything: see auditor.decision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from pg_architect.auditor import logged, params, safety
from pg_architect.auditor.catalog import Snapshot, TableInfo
from pg_architect.auditor.measure import explain
from pg_architect.auditor.parsing import QueryShape, resolve_columns, resolve_ordinals, through_views
from pg_architect.core.errors import PgArchitectError

Tables = dict[tuple[str | None, str], TableInfo]


class NotMeasurable(PgArchitectError):
    """The statement cannot be turned into executable, allowed forms (the reason says which step)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Analysis:
    """What one statement is, as far as the audit needs it."""

    shape: QueryShape  # resolved: every column attributed to its table
    tables: Tables  # the tables it reads, from the catalog snapshot
    types: dict[int, str]  # placeholder number -> type name
    samples: tuple[str, ...]  # executable forms with real values, each accepted by the allow-list
    logged: bool = False  # every sample is an application's logged call (auditor.logged): trusted as it is
    from_log: int = 0  # how many of the first samples are logged calls' values

    @property
    def kind(self) -> str:
        return self.shape.kind


def check_allowed(catalog: Snapshot, sql: str, kind: str) -> None:
    """The allow-list for one form of a workload statement: a read-only SELECT, or DML that is only planned."""
    if kind == "select":
        safety.check_readonly_select(sql, catalog.conn)
    else:
        safety.check_explain_only_dml(sql, catalog.conn)


def resolve(catalog: Snapshot, shape: QueryShape) -> tuple[QueryShape, Tables]:
    """Step 2: the shape with every column attributed, and the tables it reads (a view the planner flattens
    into one table counts as that table: an index is built on the table, never on a view)."""
    for _ in range(3):  # views over views, a few levels deep
        views = catalog.views(shape.tables)
        if not views:
            break
        shape = through_views(resolve_columns(shape, catalog.columns_by_table(shape.tables)), views)
    resolved = resolve_columns(shape, catalog.columns_by_table(shape.tables))
    resolved = resolve_ordinals(resolved, lambda table: list(catalog.columns(table)))
    return resolved, catalog.tables(resolved.tables)


#: A sample planned to return within this factor of the rows each call returned is close enough.
FIT_TOLERANCE = 1.25


def _range_fit(
    catalog: Snapshot, shape: QueryShape, types: dict[int, str], values: list[dict[int, str]], rows_per_call: float
) -> dict[int, float]:
    """Per sample, the factor its range's selectivity needs for its planned rows to be the rows each call
    returned. With an equality beside the range (``status = $1 AND amount > $2``) the share of the table the
    calls return is not the range's own: a 'pending' sample with a 60 % range returned 180,000 rows where the
    calls returned 270,000, and measured an index at 2.3-3.6x that the calls gain 1.45x from (a bitmap scan's
    gain falls steeply near the point where a sequential scan wins)."""
    scale: dict[int, float] = {}
    for k, v in enumerate(values):
        try:
            sql = params.bind_parameters(shape.text, v, types)
            check_allowed(catalog, sql, shape.kind)
            rows = explain(catalog.conn, sql, analyze=False).rows
        except PgArchitectError:
            continue
        ratio = (rows_per_call + 1.0) / (rows + 1.0)
        if abs(math.log(ratio)) > math.log(FIT_TOLERANCE):
            scale[k] = ratio
    return scale


def analyse(
    catalog: Snapshot,
    resolved: QueryShape,
    tables: Tables,
    n_samples: int,
    rows_per_call: float | None = None,
    calls: Sequence[logged.LoggedCall] = (),
    tail_only: bool = False,
) -> Analysis:
    """Steps 3-7 for a resolved statement; NotMeasurable (or UnsafeSQLError) says why it cannot go on.

    With the statement's logged ``calls`` (auditor.logged), their values are the samples, in their order:
    what the application ran needs no fitting to the rows and times it recorded. When they are only the slow
    tail of its calls (``tail_only``: most calls ran under the log's threshold), values drawn from pg_stats
    follow them, and every sample is checked against the record as a drawn one is."""
    types = params.infer_parameter_types(catalog, resolved)
    # The statement as written (its placeholders already repaired to valid SQL by the parse) must pass
    # before the server plans anything of it.
    check_allowed(catalog, resolved.text, resolved.kind)
    # Where the text alone could not tell (a placeholder inside arithmetic), the server's own inference wins.
    server = params.server_parameter_types(catalog.conn, resolved.text, types)
    types.update({k: v for k, v in server.items() if types.get(k, "text") == "text"})
    from_log = logged.samples(calls, types, n_samples) if types else []
    values: Sequence[Mapping[int, str | None]] = from_log
    if not from_log or tail_only:
        drawn = params.sample_parameters(catalog, resolved, types, n_samples, rows_per_call) if types else [{}]
        if types and rows_per_call is not None and params.range_fits_rows(resolved):
            scale = _range_fit(catalog, resolved, types, drawn, rows_per_call)
            if scale:
                drawn = params.sample_parameters(catalog, resolved, types, n_samples, rows_per_call, scale)
        values = [*from_log, *drawn]
    samples: list[str] = []
    logged_samples = 0
    for k, v in enumerate(values):
        try:
            bound = params.bind_parameters(resolved.text, v, types)
        except params.ParameterError:
            continue
        if bound not in samples:
            samples.append(bound)
            logged_samples += k < len(from_log)
    if not samples:
        raise NotMeasurable("no executable form of the statement (parameters could not be sampled)")
    for sql in samples:
        check_allowed(catalog, sql, resolved.kind)
    return Analysis(
        shape=resolved,
        tables=tables,
        types=types,
        samples=tuple(samples),
        logged=bool(from_log) and not tail_only and logged_samples == len(samples),
        from_log=logged_samples,
    )


def range_draws(catalog: Snapshot, analysed: Analysis) -> Callable[[float], str | None]:
    """Draws of the statement whose range placeholders keep a given share of their rows, bound and accepted by
    the allow-list (for the time fit, auditor.measure); a draw is None when its values cannot be bound."""
    shape, types = analysed.shape, analysed.types

    def draw(selectivity: float) -> str | None:
        try:
            values = params.sample_with_range(catalog, shape, types, selectivity)
            sql = params.bind_parameters(shape.text, values, types)
        except params.ParameterError:
            return None
        check_allowed(catalog, sql, shape.kind)
        return sql

    return draw
