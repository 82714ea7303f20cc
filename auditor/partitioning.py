"""Partitioning from the growth forecasts: a plan only where the growth, the workload and a measurement agree.

A table gets a ``partition`` recommendation (in its forecast) when

1. the daily health snapshots project it past ``auditor.partitioning.min_projected_bytes`` within
   ``horizon_days`` (linear growth, auditor.health.forecasts), and
2. slow statements of the audit filter it on a range of a time or integer column: the key is the column whose
   range filters cost the most time, and the interval follows the key's spread in ``pg_stats`` (the histogram's
   first and last bounds): the coarsest of year, month, week, day that still gives several partitions over the
   data (for an integer key, a round step giving about sixteen);
3. the pruning gain is measured: a sample of the table (``TABLESAMPLE``, ``sample_rows``) is copied into a
   scratch schema, once plain and once partitioned with the plan's interval, with the table's plain-column
   btree indexes, and the slow statements (bound with values from the statistics, checked by the read-only
   allow-list) are timed with EXPLAIN ANALYZE on both. The scratch schema lives on ``measurement.staging_dsn``
   when configured, otherwise on an embedded PostgreSQL started for the purpose (auditor never writes to the
   audited database) and is dropped afterwards.

The recommendation carries the migration (a partitioned twin, its partitions, a backfill one partition range
per batch, the indexes, a swap by rename in one short transaction) and its rollback. Moving every row of a large
table is never delivered as a pull request: confidence stays below the PR threshold, measured or not.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

from pglast import ast, parser, visitors

from pg_architect.auditor import analysis, safety
from pg_architect.auditor.catalog import IndexInfo, Snapshot, TableInfo
from pg_architect.auditor.measure import Plan, explain
from pg_architect.auditor.models import Forecast, Measurement, PartitionPlan, Recommendation, SlowQuery, action_for
from pg_architect.auditor.parsing import QueryShape, TableRef, UnparseableQuery, deparse, parse_query
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.core.errors import PgArchitectError
from pg_architect.core.sqlfiles import mark

log = logging.getLogger(__name__)

TIME_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})
ID_TYPES = frozenset({"smallint", "integer", "bigint"})
#: (interval, unit, days): the coarsest that gives MIN_PARTITIONS over the data's spread is chosen.
INTERVALS = (("1 year", "year", 365.25), ("1 month", "month", 30.44), ("1 week", "week", 7.0), ("1 day", "day", 1.0))
MIN_PARTITIONS = 8
ID_PARTITIONS = 16
MAX_PARTITIONS = 400
#: Statements and parameter samples timed per table on the copy.
MAX_STATEMENTS = 2
MAX_SAMPLES = 2
DRAWN = 6  # parameter sets drawn per statement: those selecting no row of the copy are passed over
REPEATS = 2
FORECAST_DAYS = 90  # auditor.health projects this far
# Confidence: a data-moving migration is reviewed by people, never merged from a PR.
UNMEASURED = 0.45
MEASURED_FLOOR = 0.6
MEASURED_CEILING = 0.78

Bound = datetime | int


@dataclasses.dataclass(frozen=True, slots=True)
class RangeFilter:
    """A slow statement filtering one table on a range of one column."""

    column: str
    column_type: str
    statement: SlowQuery
    shape: QueryShape  # resolved
    tables: analysis.Tables
    single_table: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    column: str
    type: str
    interval: str  # "1 month", or an integer step as text
    unit: str | None  # year|month|week|day; None for an integer key
    step: int | None
    low: Bound  # the data's range (pg_stats' histogram)
    high: Bound
    until: Bound  # the migration's partitions reach this far: the data's end plus the horizon's growth


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    measurement: Measurement
    partitions_scanned: float
    partitions: int
    where: str
    consistent: bool  # every sample cost less partitioned


def recommend(
    cfg: Config,
    catalog: Snapshot,
    forecasts: Sequence[Forecast],
    slow: Sequence[SlowQuery],
    staging: db.Connection | None,
    history_points: int,
) -> tuple[list[Forecast], list[str]]:
    """The forecasts with partition recommendations where they are due, and notes on what was not done."""
    if history_points < 2:
        return list(forecasts), [
            f"no growth forecast: the knowledge base holds {history_points} daily health snapshot(s); forecasts, "
            "and partitioning plans from them, need two taken a day apart or more (pg-architect snapshot, daily)"
        ]
    pc = cfg.auditor.partitioning
    notes: list[str] = []
    out: list[Forecast] = []
    with _scratch(cfg, staging) as scratch:
        for f in forecasts:
            at_horizon = f.size_bytes + (f.projected_bytes_90d - f.size_bytes) * pc.horizon_days / FORECAST_DAYS
            if at_horizon < pc.min_projected_bytes:
                out.append(f)
                continue
            try:
                out.append(_forecast(cfg, catalog, f, int(at_horizon), slow, scratch))
            except PgArchitectError as exc:
                notes.append(f"partitioning of {f.table} not planned: {exc}")
                out.append(f)
    return out, notes


def _forecast(
    cfg: Config, catalog: Snapshot, f: Forecast, at_horizon: int, slow: Sequence[SlowQuery], scratch: _Scratch
) -> Forecast:
    pc = cfg.auditor.partitioning
    schema, _, name = f.table.partition(".")
    table = catalog.tables([TableRef(schema, name)]).get((schema, name))
    growth = f"projected to reach {_size(at_horizon)} within {pc.horizon_days} days (now {_size(f.size_bytes)})"
    if table is None:
        return f
    if table.relkind == "p":
        return dataclasses.replace(f, note=f"{growth}; already partitioned")
    filters = range_filters(catalog, table, slow)
    if not filters:
        return dataclasses.replace(
            f,
            note=f"{growth}, but no slow statement filters it on a range of a time or integer column: "
            "no partition key to choose from the workload",
        )
    key = choose_key(catalog, table, filters, pc.horizon_days, f.projected_bytes_90d / max(f.size_bytes, 1))
    if key is None:
        column = _heaviest(filters)[0]
        return dataclasses.replace(
            f,
            note=f"{growth}; slow statements filter it on ranges of {column}, which has no statistics: "
            f"ANALYZE {table.qualified}",
        )
    users = [r for r in filters if r.column == key.column]
    measured: Measured | None = None
    why_not = ""
    try:
        measured = measure(cfg, catalog, table, key, users, scratch)
    except PgArchitectError as exc:
        why_not = str(exc)
        log.info("partitioning %s not measured: %s", table.qualified, exc)
    rec, plan = _recommendation(catalog, table, key, users, growth, measured, why_not)
    return dataclasses.replace(f, recommendation=rec, partition=plan, note=growth)


# -- the key and its interval ---------------------------------------------------------------------------------


def range_filters(catalog: Snapshot, table: TableInfo, slow: Sequence[SlowQuery]) -> list[RangeFilter]:
    """Range filters of the slow statements on ``table``'s time or integer columns."""
    types = dict(zip(table.columns, table.column_types, strict=True))
    found: list[RangeFilter] = []
    for q in slow:  # errors too: a statement whose index measurement failed still filters on its range
        try:
            shape = parse_query(q.query)
        except UnparseableQuery:
            continue
        if shape.is_utility or shape.kind != "select":
            continue
        try:
            resolved, tables = analysis.resolve(catalog, shape)
        except PgArchitectError:
            continue
        mine = {k for k, t in tables.items() if t.oid == table.oid}
        if not mine:
            continue
        columns = {
            c.column
            for c in resolved.columns
            if c.role == "range" and c.column and c.table is not None and (c.table.schema, c.table.name) in mine
        }
        for column in sorted(columns):
            kind = types.get(column, "")
            if kind in TIME_TYPES or kind in ID_TYPES:
                single = len({t.oid for t in tables.values()}) == 1 and len(resolved.tables) == 1
                found.append(RangeFilter(column, kind, q, resolved, tables, single))
    return found


def _heaviest(filters: Sequence[RangeFilter]) -> tuple[str, str]:
    time: dict[tuple[str, str], float] = {}
    for r in filters:
        time[(r.column, r.column_type)] = time.get((r.column, r.column_type), 0.0) + r.statement.total_ms
    return max(time, key=lambda k: (time[k], k[1] in TIME_TYPES))


def choose_key(
    catalog: Snapshot, table: TableInfo, filters: Sequence[RangeFilter], horizon_days: int, growth_ratio: float
) -> Key | None:
    """The column whose range filters cost the most, with an interval from its spread (pg_stats); None
    without statistics on it."""
    column, kind = _heaviest(filters)
    stats = catalog.column_stats(table.schema, table.name, column)
    bounds = (stats.histogram_bounds or []) if stats is not None else []
    if len(bounds) < 2:
        return None
    if kind in TIME_TYPES:
        low, high = _timestamp(bounds[0]), _timestamp(bounds[-1])
        days = max((high - low).total_seconds() / 86400, 1.0)
        interval, unit = INTERVALS[-1][0], INTERVALS[-1][1]
        for name, u, length in INTERVALS:
            if days / length >= MIN_PARTITIONS:
                interval, unit = name, u
                break
        # The migration's partitions reach as far as the horizon: coarser when they would be too many.
        chosen = next(length for _, u, length in INTERVALS if u == unit)
        for name, u, length in reversed(INTERVALS):
            if length >= chosen and (days + horizon_days) / length <= MAX_PARTITIONS:
                interval, unit = name, u
                break
        return Key(column, kind, interval, unit, None, low, high, high + timedelta(days=horizon_days))
    lo, hi = int(float(bounds[0])), int(float(bounds[-1]))
    step = _round_step(max((hi - lo) / ID_PARTITIONS, 1))
    projected_high = hi + int((hi - lo) * max(growth_ratio - 1.0, 0.0))
    while (projected_high - lo) / step > MAX_PARTITIONS:
        step *= 10
    return Key(column, kind, str(step), None, step, lo, hi, projected_high)


def _round_step(value: float) -> int:
    """1, 2 or 5 times a power of ten, at least ``value``."""
    power = 1
    while True:
        for m in (1, 2, 5):
            if m * power >= value:
                return m * power
        power *= 10


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip('"'))
    except ValueError:  # "infinity", or a DateStyle other than ISO
        raise PgArchitectError(f"the key's value {text!r} is not an ISO timestamp") from None


def _truncate(at: datetime, unit: str) -> datetime:
    at = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "year":
        return at.replace(month=1, day=1)
    if unit == "month":
        return at.replace(day=1)
    if unit == "week":
        return at - timedelta(days=at.weekday())
    return at


def _next(at: datetime, unit: str) -> datetime:
    if unit == "year":
        return at.replace(year=at.year + 1)
    if unit == "month":
        return at.replace(year=at.year + at.month // 12, month=at.month % 12 + 1)
    return at + timedelta(days=7 if unit == "week" else 1)


def partition_bounds(key: Key) -> list[tuple[Bound, Bound]]:
    """[from, to) of each range partition of the migration, oldest first."""
    out: list[tuple[Bound, Bound]] = []
    if key.unit is not None:
        assert isinstance(key.low, datetime) and isinstance(key.until, datetime)
        at = _truncate(key.low, key.unit)
        while at <= key.until and len(out) < MAX_PARTITIONS:
            nxt = _next(at, key.unit)
            out.append((at, nxt))
            at = nxt
        return out
    assert isinstance(key.low, int) and isinstance(key.until, int) and key.step is not None
    n = key.low // key.step * key.step
    while n <= key.until and len(out) < MAX_PARTITIONS:
        out.append((n, n + key.step))
        n += key.step
    return out


def _literal(conn: db.Connection, value: Bound, kind: str) -> str:
    if isinstance(value, int):
        return str(value)
    if kind == "date":
        text = value.date().isoformat()
    elif kind == "timestamp without time zone":
        text = value.replace(tzinfo=None).isoformat(sep=" ")
    else:
        text = value.isoformat(sep=" ")
    return db.Literal(text).as_string(conn)


def _suffix(value: Bound, unit: str | None) -> str:
    if isinstance(value, int):
        return f"p{value}" if value >= 0 else f"m{-value}"
    return {"year": f"p{value:%Y}", "month": f"p{value:%Y_%m}"}.get(unit or "", f"p{value:%Y%m%d}")


# -- the migration --------------------------------------------------------------------------------------------


def migration(
    conn: db.Connection, table: TableInfo, key: Key, indexes: Sequence[IndexInfo], swap_from: Bound
) -> tuple[str, str]:
    """The migration script and its rollback, every identifier quoted, every bound a literal."""

    def q(*names: str) -> str:
        return db.Identifier(*names).as_string(conn)

    def lit(value: Bound) -> str:
        return _literal(conn, value, key.type)

    def copy_rows(into: str, src: str, where: str, *values: str) -> str:
        """``INSERT INTO into SELECT * FROM src WHERE ...`` composed: identifiers quoted, bounds literals."""
        condition = db.SQL(where).format(*(db.SQL(v) for v in values))
        return (
            db.SQL("INSERT INTO {} SELECT * FROM {} WHERE {};")
            .format(db.SQL(into), db.SQL(src), condition)
            .as_string(conn)
        )

    old, base = q(table.schema, table.name), table.name[:40]
    new_name, kept_name = f"{base}_partitioned", f"{base}_unpartitioned"
    new, kept = q(table.schema, new_name), q(table.schema, kept_name)
    col = q(key.column)
    bounds = partition_bounds(key)
    lines = [
        f"-- 1. A partitioned twin of {table.qualified} by range of {key.column}, {key.interval} per partition. A",
        f"--    primary key or unique constraint of a partitioned table must include {key.column}.",
        f"CREATE TABLE {new} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY "
        f"INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE ({col});",
        f"-- 2. {len(bounds)} partitions up to the end of the horizon, and a default one (NULL keys, later rows).",
    ]
    for lo, hi in bounds:
        part = q(table.schema, f"{base}_{_suffix(lo, key.unit)}")
        lines.append(f"CREATE TABLE {part} PARTITION OF {new} FOR VALUES FROM ({lit(lo)}) TO ({lit(hi)});")
    lines.append(f"CREATE TABLE {q(table.schema, f'{base}_default')} PARTITION OF {new} DEFAULT;")
    lines.append("-- 3. Backfill one partition range per batch, each in its own transaction, oldest first.")
    swap = lit(swap_from)
    for lo, hi in bounds:
        if lo >= swap_from:  # type: ignore[operator]
            break
        lines.append(copy_rows(new, old, "{} >= {} AND {} < {}", col, lit(lo), col, lit(hi)))
    lines.append(copy_rows(new, old, "{} IS NULL", col))
    lines.append(f"-- 4. The indexes of {table.qualified}, built once on the partitioned table.")
    for index in indexes:
        if index.primary or not index.valid:
            continue
        if index.predicate is None and all(c is not None for c in index.key_columns):
            cols = ", ".join(q(c) for c in index.key_columns if c is not None)
            unique = index.unique and key.column in index.key_columns
            lines.append(f"CREATE {'UNIQUE ' if unique else ''}INDEX ON {new} USING {index.method} ({cols});")
        else:
            lines.append(f"-- re-create by hand on {new_name}: {index.definition}")
    lines += [
        f"-- 5. Swap in one short transaction: rows from {swap} on (still being written) are copied under the lock.",
        "BEGIN;",
        f"LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE;",
        copy_rows(new, old, "{} >= {}", col, swap),
        f"ALTER TABLE {old} RENAME TO {q(kept_name)};",
        f"ALTER TABLE {new} RENAME TO {q(table.name)};",
        "COMMIT;",
        f"-- Sequences owned by {kept_name}'s columns stay owned by it: ALTER SEQUENCE ... OWNED BY the new table",
        f"-- before dropping {kept_name}. Rows older than {swap} changed during the backfill are not copied again.",
    ]
    rollback = [
        "-- Before the swap: drop the twin and its partitions.",
        f"DROP TABLE IF EXISTS {new};",
        f"-- After the swap: rows from {swap} on go back to the old table, and the names are swapped back.",
        "BEGIN;",
        f"LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE;",
        db.SQL("DELETE FROM {} WHERE {} >= {};").format(db.SQL(kept), db.SQL(col), db.SQL(swap)).as_string(conn),
        copy_rows(kept, old, "{} >= {}", col, swap),
        f"ALTER TABLE {old} RENAME TO {q(new_name)};",
        f"ALTER TABLE {kept} RENAME TO {q(table.name)};",
        "COMMIT;",
        f"DROP TABLE {new};",
    ]
    return "\n".join(lines), "\n".join(rollback)


def _recommendation(
    catalog: Snapshot,
    table: TableInfo,
    key: Key,
    users: Sequence[RangeFilter],
    growth: str,
    measured: Measured | None,
    why_not: str,
) -> tuple[Recommendation, PartitionPlan]:
    bounds = partition_bounds(key)
    # The newest partition holding data is copied again inside the swap transaction, under the lock.
    swap_from = max(lo for lo, _ in bounds if lo <= key.high)  # type: ignore[operator]
    sql, rollback = migration(catalog.conn, table, key, catalog.indexes([table.oid]), swap_from)
    queryids = tuple(dict.fromkeys(r.statement.queryid for r in users))
    statement_time = sum({r.statement.queryid: r.statement.total_ms for r in users}.values())
    head = (
        f"{table.qualified} is {growth}. {len(queryids)} slow statement(s) (queryid {', '.join(queryids)}; "
        f"{statement_time / 1000:,.1f} s in the window) filter it on a range of {key.column} ({key.type}): "
        f"partition it by range of {key.column}, {key.interval} per partition (the key's spread in pg_stats: "
        f"{_show(key.low)} to {_show(key.high)})."
    )
    if measured is not None:
        m = measured.measurement
        # Measured and worth it: between the floor and the ceiling by the gain, lower when a sample lost.
        confidence = (
            round(MEASURED_FLOOR + (MEASURED_CEILING - MEASURED_FLOOR) * min(m.gain_percent, 100.0) / 100.0, 2)
            - (0.0 if measured.consistent else 0.1)
            if m.worth_applying
            else UNMEASURED
        )
        evidence = (
            f" Measured with EXPLAIN on a plain and a partitioned copy of a sample ({measured.where}, scratch "
            f"schema dropped), {m.samples} parameter sample(s): planner cost {m.before_cost:,.0f} -> "
            f"{m.after_cost:,.0f}, {m.gain_percent:.0f} % less{'' if measured.consistent else ' (not on every sample)'}"
            f" (timed: {m.before_ms or 0:.1f} ms -> {m.after_ms or 0:.1f} ms); "
            f"the statements read {measured.partitions_scanned:.1f} of "
            f"{measured.partitions} partitions. Plan before: {m.plan_before}. Plan after: {m.plan_after}."
        )
    else:
        confidence = UNMEASURED
        evidence = f" The pruning gain is not measured ({why_not}): the plan is an estimate, to be checked."
    rec = Recommendation(
        type="partition",
        sql=sql,
        rollback_sql=rollback,
        reasoning=head
        + evidence
        + " A migration that moves every row is reviewed and run by people: no pull request is opened for it.",
        confidence=confidence,
        source="advisor",
        measurement=measured.measurement if measured is not None else None,
        action=action_for(confidence),
        kind=f"partition:{'time' if key.unit else 'id'}:{key.interval}",
        family=f"select:{table.qualified}",
    )
    plan = PartitionPlan(
        key=key.column,
        key_type=key.type,
        interval=key.interval,
        partitions=len(bounds) + 1,
        statements=queryids,
        partitions_scanned=measured.partitions_scanned if measured else None,
        partitions_measured=measured.partitions if measured else None,
        where_measured=measured.where if measured else None,
    )
    return rec, plan


def _show(value: Bound) -> str:
    return f"{value:%Y-%m-%d}" if isinstance(value, datetime | date) else f"{value:,}"


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


# -- the measurement ------------------------------------------------------------------------------------------


class _Scratch:
    """Where copies go: the staging server, else an embedded server started on first use."""

    def __init__(self, cfg: Config, staging: db.Connection | None) -> None:
        self.cfg = cfg
        self.staging = staging
        self.server: EmbeddedPostgres | None = None
        self.root: Path | None = None
        self.own: db.Connection | None = None

    @property
    def where(self) -> str:
        return "staging server" if self.staging is not None else "embedded server"

    def connection(self) -> db.Connection:
        if self.staging is not None:
            return self.staging
        if self.own is None:
            self.root = Path(tempfile.mkdtemp(prefix="pgarch-scratch-"))
            self.server = EmbeddedPostgres(
                self.root / "data", settings={"shared_buffers": "64MB", "max_connections": "10"}
            )
            self.server.start()
            self.own = db.connect(self.server.dsn(), db.Role.STAGING, db.policy(self.cfg, db.Role.STAGING))
        return self.own

    def close(self) -> None:
        if self.own is not None:
            self.own.close()
        if self.server is not None:
            self.server.destroy()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def _scratch(cfg: Config, staging: db.Connection | None) -> Iterator[_Scratch]:
    scratch = _Scratch(cfg, staging)
    try:
        yield scratch
    finally:
        scratch.close()


class _Retarget(visitors.Visitor):
    """Point a statement's references to one table at its copy."""

    def __init__(self, table: TableInfo, schema: str, name: str) -> None:
        super().__init__()
        self.table, self.schema, self.name = table, schema, name

    def visit_RangeVar(self, ancestors: object, node: ast.RangeVar) -> None:
        if node.relname == self.table.name and node.schemaname in (None, self.table.schema):
            node.schemaname, node.relname = self.schema, self.name


def retarget(sql: str, table: TableInfo, schema: str, name: str) -> str:
    (raw,) = parser.parse_sql(sql)
    assert raw.stmt is not None
    _Retarget(table, schema, name)(raw.stmt)
    return deparse(raw.stmt)


def measure(
    cfg: Config, catalog: Snapshot, table: TableInfo, key: Key, users: Sequence[RangeFilter], scratch: _Scratch
) -> Measured:
    """Time the statements on a plain and a partitioned copy of a sample; the scratch schema is always dropped."""
    timed = [r for r in users if r.single_table][:MAX_STATEMENTS]
    if not timed:
        raise PgArchitectError(
            "the statements filtering on the key also read other tables; only single-table "
            "statements are timed on the copy"
        )
    drawn: list[list[str]] = []
    for r in timed:
        drawn.append(list(analysis.analyse(catalog, r.shape, r.tables, DRAWN, None).samples))
    conn = scratch.connection()
    schema = f"pgarch_scratch_{secrets.token_hex(4)}"
    s = db.Identifier(schema)
    try:
        db.execute(conn, mark(db.SQL("CREATE SCHEMA {}").format(s).as_string(conn)))
        columns = _copy_sample(cfg, catalog.conn, conn, table, key, schema)
        partitions = _partitioned_copy(conn, schema, columns, key)
        for index in catalog.indexes([table.oid]):
            if index.method != "btree" or index.predicate is not None or None in index.key_columns:
                continue
            cols = db.SQL(", ").join(db.Identifier(c) for c in index.key_columns if c is not None)
            for copy in ("plain", "part"):
                db.execute(conn, db.SQL(mark("CREATE INDEX ON {} ({})")).format(db.Identifier(schema, copy), cols))
        for copy in ("plain", "part"):
            db.execute(conn, db.SQL(mark("ANALYZE {}")).format(db.Identifier(schema, copy)))
        before: list[Plan] = []
        after: list[Plan] = []
        scanned: list[int] = []
        for samples in drawn:
            kept = 0
            for sample in samples:
                plain_sql, part_sql = retarget(sample, table, schema, "plain"), retarget(sample, table, schema, "part")
                safety.check_readonly_select(plain_sql, conn)
                safety.check_readonly_select(part_sql, conn)
                plain = _fastest(conn, plain_sql)
                if plain.scan_rows.get("plain", 1.0) <= 0:
                    continue  # values the copy holds no row for (an empty range): pruning them proves nothing
                before.append(plain)
                plan = _fastest(conn, part_sql)
                after.append(plan)
                scanned.append(len({n.rsplit(" on ", 1)[1] for n in plan.nodes if " on part_" in n}))
                kept += 1
                if kept == MAX_SAMPLES:
                    break
    finally:
        try:
            db.execute(conn, mark(db.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s).as_string(conn)))
        except PgArchitectError as exc:  # the connection is gone: nothing of it survives the session anyway
            log.warning("scratch schema %s not dropped: %s", schema, exc)
    if not before:
        raise PgArchitectError("no sampled parameter values select rows of the copy")
    # The gain is the planner's estimate on the two copies (pruning is a planning decision, and a sample's
    # milliseconds are too few to compare on a busy server); the timings are reported beside it.
    before_cost = sum(p.cost for p in before)
    after_cost = sum(p.cost for p in after)
    gain = (before_cost - after_cost) / before_cost * 100.0 if before_cost > 0 else 0.0
    consistent = all(b.cost > a.cost for b, a in zip(before, after, strict=True))
    measurement = Measurement(
        method="partitioned_copy",
        before_cost=before_cost,
        after_cost=after_cost,
        before_ms=sum(p.ms or 0.0 for p in before),
        after_ms=sum(p.ms or 0.0 for p in after),
        gain_percent=gain,
        worth_applying=gain > cfg.auditor.thresholds.min_gain_percent,
        plan_changed=True,
        plan_before=before[0].text,
        plan_after=after[0].text,
        samples=len(before),
    )
    return Measured(measurement, sum(scanned) / len(scanned), partitions, scratch.where, consistent)


def _fastest(conn: db.Connection, sql: str) -> Plan:
    plans = [explain(conn, sql, analyze=True) for _ in range(REPEATS)]
    return min(plans, key=lambda p: p.ms if p.ms is not None else float("inf"))


def _copy_sample(
    cfg: Config, source: db.Connection, conn: db.Connection, table: TableInfo, key: Key, schema: str
) -> list[tuple[str, str]]:
    """Copy a TABLESAMPLE of ``table`` into ``schema.plain``; (column, type) as created (unknown types: text)."""
    columns: list[tuple[str, str]] = []
    for name, kind in zip(table.columns, table.column_types, strict=True):
        known = db.fetch_value(conn, mark("SELECT pg_catalog.to_regtype(%s) IS NOT NULL"), (kind,))
        if not known and name == key.column:
            raise PgArchitectError(f"the key's type {kind} does not exist on the {'scratch'} server")
        columns.append((name, kind if known else "text"))
    rows = cfg.auditor.partitioning.sample_rows
    # Pages drawn at random across the whole table, about ``rows`` rows. The LIMIT only guards against a stale
    # reltuples: cutting a sample short keeps its first pages, the table's oldest rows, and biases the copy.
    percent = min(100.0, rows / max(table.reltuples, 1.0) * 100.0)
    select = db.SQL(mark("SELECT {} FROM ONLY {} TABLESAMPLE SYSTEM ({}) LIMIT {}")).format(
        db.SQL(", ").join(db.SQL("{}::text").format(db.Identifier(c)) for c, _ in columns),
        db.Identifier(table.schema, table.name),
        db.Literal(percent),
        db.Literal(rows * 2),
    )
    create = db.SQL(mark("CREATE TABLE {} ({})")).format(
        db.Identifier(schema, "plain"),
        db.SQL(", ").join(db.SQL("{} {}").format(db.Identifier(c), db.SQL(t)) for c, t in columns),
    )
    db.execute(conn, create)
    copied = db.copy_rows(conn, schema, "plain", [c for c, _ in columns], db.iter_tuples(source, select))
    if copied == 0:
        raise PgArchitectError(f"the sample of {table.qualified} is empty")
    return columns


def _partitioned_copy(conn: db.Connection, schema: str, columns: Sequence[tuple[str, str]], key: Key) -> int:
    """``schema.part``: the plain copy partitioned with the plan's interval over the copy's own range."""
    db.execute(
        conn,
        db.SQL(mark("CREATE TABLE {} ({}) PARTITION BY RANGE ({})")).format(
            db.Identifier(schema, "part"),
            db.SQL(", ").join(db.SQL("{} {}").format(db.Identifier(c), db.SQL(t)) for c, t in columns),
            db.Identifier(key.column),
        ),
    )
    low, high = db.fetch_tuples(
        conn,
        db.SQL(mark("SELECT min({c})::text, max({c})::text FROM {t}")).format(
            c=db.Identifier(key.column), t=db.Identifier(schema, "plain")
        ),
    )[0]
    if low is None:
        raise PgArchitectError("the sample holds no value of the key")
    lo: Bound = _timestamp(low) if key.unit else int(low)
    hi: Bound = _timestamp(high) if key.unit else int(high)
    copy = dataclasses.replace(key, low=lo, high=hi, until=hi)
    bounds = partition_bounds(copy)
    for i, (start, end) in enumerate(bounds):
        db.execute(
            conn,
            db.SQL(mark("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})")).format(
                db.Identifier(schema, f"part_{i:04d}"),
                db.Identifier(schema, "part"),
                db.SQL(_literal(conn, start, key.type)),
                db.SQL(_literal(conn, end, key.type)),
            ),
        )
    db.execute(
        conn,
        db.SQL(mark("CREATE TABLE {} PARTITION OF {} DEFAULT")).format(
            db.Identifier(schema, "part_default"), db.Identifier(schema, "part")
        ),
    )
    db.execute(
        conn,
        db.SQL(mark("INSERT INTO {} SELECT * FROM {}")).format(
            db.Identifier(schema, "part"), db.Identifier(schema, "plain")
        ),
    )
    return len(bounds) + 1
