"""pg_stat_statements in one place: the row, reading it, reset detection, and the delta between snapshots.

Both processes read pg_stat_statements: the exporter every scrape, the auditor for its daily snapshots. A row
is keyed by (userid, dbid, queryid, toplevel), never by query text. From two snapshots of one row,
:func:`interval_of` recovers the exact mean and standard deviation of the calls made between them (the
parallel-variance formula); :func:`diff` does it for a whole snapshot. Units: :class:`Cumulative` holds
milliseconds exactly as the view reports them; :class:`Interval` is in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from pg_architect.core import db
from pg_architect.core.errors import DatabaseError
from pg_architect.core.queries import QUERIES
from pg_architect.core.sqlfiles import extension_version_num

CANCELLATION_RATIO = 1e-6
"""Below this share of the row's cumulative M2, an interval's M2 is not trusted (see interval_of)."""

_MS = 1e-3


class StatementRow(NamedTuple):
    """One pg_stat_statements row, without its text.

    A NamedTuple, built straight from the driver's tuples: the exporter reads thousands every scrape, and a
    tuple costs a fraction of a dataclass to build. ``stats_since`` is in epoch seconds.
    """

    userid: int
    dbid: int
    queryid: int
    toplevel: bool
    calls: int
    total_ms: float
    stddev_ms: float
    min_ms: float
    max_ms: float
    stats_since: float | None

    @property
    def key(self) -> tuple[int, int, int, bool]:
        return (self.userid, self.dbid, self.queryid, self.toplevel)


@dataclasses.dataclass(frozen=True, slots=True)
class PgssInfoRow:
    dealloc: int
    stats_reset: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotRow:
    """A pg_stat_statements row with its text, as the auditor stores it."""

    userid: int
    dbid: int
    queryid: int
    toplevel: bool
    calls: int
    total_ms: float
    stddev_ms: float
    min_ms: float
    max_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    stats_since: datetime | None
    query: str | None  # as pg_stat_statements has it: may carry literals until the auditor redacts it

    @property
    def key(self) -> tuple[int, int, int, bool]:
        """The row's identity in pg_stat_statements, as ``StatementRow.key``."""
        return (self.userid, self.dbid, self.queryid, self.toplevel)

    def statement(self) -> StatementRow:
        return StatementRow(
            self.userid,
            self.dbid,
            self.queryid,
            self.toplevel,
            self.calls,
            self.total_ms,
            self.stddev_ms,
            self.min_ms,
            self.max_ms,
            self.stats_since.timestamp() if self.stats_since is not None else None,
        )


def _schema(conn: db.Connection) -> str:
    schema = db.server_facts(conn).extension_schema("pg_stat_statements")
    if schema is None:  # created since the connection learned its extensions?
        schema = db.server_facts(conn, refresh=True).extension_schema("pg_stat_statements")
    if schema is None:
        raise DatabaseError("pg_stat_statements is not created in this database: CREATE EXTENSION pg_stat_statements")
    return schema


def read(conn: db.Connection) -> tuple[list[StatementRow], PgssInfoRow | None]:
    """Every row of pg_stat_statements (without text), and its info view."""
    query = db.query(conn, QUERIES, "pgss_statements", pgss=_schema(conn))
    return list(map(StatementRow._make, db.fetch_tuples(conn, query))), read_info(conn)


def read_lazily(conn: db.Connection) -> tuple[Iterator[StatementRow], PgssInfoRow | None]:
    """Like :func:`read`, with the rows made as the caller iterates (both read from the server now)."""
    query = db.query(conn, QUERIES, "pgss_statements", pgss=_schema(conn))
    return map(StatementRow._make, db.iter_tuples(conn, query)), read_info(conn)


def read_snapshot(conn: db.Connection) -> list[SnapshotRow]:
    """Top-level rows of the connected database's pg_stat_statements, with their text as recorded.

    The text may carry literals (utility statements, comments): callers redact it before keeping it.
    """
    return db.fetch(conn, db.query(conn, QUERIES, "pgss_snapshot", pgss=_schema(conn)), None, SnapshotRow)


def read_info(conn: db.Connection) -> PgssInfoRow | None:
    """pg_stat_statements_info (deallocations, last reset); None before extension version 1.9."""
    version = db.server_facts(conn).extension_version("pg_stat_statements")
    if version is None or extension_version_num(version) < 10900:
        return None
    return db.fetch_one(conn, db.query(conn, QUERIES, "pgss_info", pgss=_schema(conn)), None, PgssInfoRow)


@dataclass(frozen=True, slots=True)
class Cumulative:
    """One pg_stat_statements row at one instant, in milliseconds as the view reports them."""

    calls: int
    total_ms: float
    stddev_ms: float
    min_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Interval:
    """One row's statistics over the interval between two snapshots, in seconds.

    ``max_s`` is an upper bound on every call of the interval, and the interval's exact maximum when
    ``max_exact``; ``min_s`` is a lower bound (exact when the row's minimum fell). None when unknown.
    ``variance_fallback`` says ``stddev_s`` comes from the narrower model used when the interval's M2 was
    lost to cancellation, not from the exact formula. ``history_calls`` is how many calls the min and max
    were taken over (the row's cumulative calls; 0 when unknown): the extremes of that many calls.
    """

    calls: int
    mean_s: float
    stddev_s: float
    max_s: float | None
    max_exact: bool
    min_s: float | None
    variance_fallback: bool = False
    history_calls: int = dataclasses.field(default=0, compare=False)


def _whole(cur: Cumulative) -> Interval:
    """A row seen for the first time (or reset, or evicted): its cumulative values are the interval's."""
    max_ms = cur.max_ms if cur.max_ms > 0 else None
    min_ms = cur.min_ms if cur.min_ms > 0 else None
    mean_ms, max_ms, min_ms = _consistent(max(cur.total_ms, 0.0) / cur.calls, max_ms, min_ms)
    stddev = max(cur.stddev_ms, 0.0) if cur.calls > 1 else 0.0
    return Interval(
        calls=cur.calls,
        mean_s=mean_ms * _MS,
        stddev_s=stddev * _MS,
        max_s=max_ms * _MS if max_ms is not None else None,
        max_exact=max_ms is not None,
        min_s=min_ms * _MS if min_ms is not None else None,
        history_calls=cur.calls,
    )


def _consistent(mean_ms: float, max_ms: float | None, min_ms: float | None) -> tuple[float, float | None, float | None]:
    """Keep min <= mean <= max: rounding in the totals' difference can step a hair outside, and a min above
    the max (no real row has one) makes both worthless."""
    if max_ms is not None and min_ms is not None and min_ms > max_ms:
        return mean_ms, None, None
    if max_ms is not None:
        mean_ms = min(mean_ms, max_ms)
    if min_ms is not None:
        mean_ms = max(mean_ms, min_ms)
    return mean_ms, max_ms, min_ms


def interval_of(prev: Cumulative | None, cur: Cumulative) -> Interval | None:
    """The statistics of the calls a row made between snapshot ``prev`` and snapshot ``cur``; None if none.

    A row that is new (``prev`` None), was reset or evicted and re-created (its calls or total time went
    down), or had no calls before, is taken whole: its cumulative values are the interval's. Callers on
    PostgreSQL 17+ should also pass ``prev=None`` when the row's ``stats_since`` changed, since a reset
    followed by more calls than before is otherwise invisible.

    The interval's M2 (sum of squared deviations) is the difference of two cumulative ones, which cancels
    catastrophically when the interval is a tiny part of a long history. When it comes out negative or below
    CANCELLATION_RATIO of the cumulative M2, only its order of magnitude is known, so the row falls back to a
    narrower model: the row's long-run coefficient of variation applied to the interval's (exact) mean,
    capped by the largest spread the untrusted M2 allows and by the Bhatia-Davis bound from min and max.
    """
    if cur.calls <= 0:
        return None
    if prev is None or prev.calls <= 0 or cur.calls < prev.calls or cur.total_ms < prev.total_ms:
        return _whole(cur)
    dn = cur.calls - prev.calls
    if dn == 0:
        return None
    n_a, n_b = prev.calls, cur.calls
    mean_ms = (cur.total_ms - prev.total_ms) / dn

    # Cumulative max only rises and min only falls; one that moved the other way was reset on its own
    # (PostgreSQL 17's pg_stat_statements_reset(minmax_only => true)) and no longer bounds the interval.
    max_ms: float | None = cur.max_ms if cur.max_ms >= prev.max_ms and cur.max_ms > 0 else None
    max_exact = max_ms is not None and cur.max_ms > prev.max_ms
    min_exact = 0 < cur.min_ms < prev.min_ms
    min_ms: float | None = cur.min_ms if 0 < cur.min_ms <= prev.min_ms else None
    if dn == 1:
        # One call: the interval is a point, and its max and min are that call. A new max or min is that
        # call's time exactly, without the rounding of a difference of totals.
        point = cur.max_ms if max_exact else cur.min_ms if min_exact else mean_ms
        point, _, _ = _consistent(max(point, 0.0), max_ms, min_ms)
        point *= _MS
        return Interval(calls=1, mean_s=point, stddev_s=0.0, max_s=point, max_exact=True, min_s=point)
    mean_ms, max_ms, min_ms = _consistent(mean_ms, max_ms, min_ms)
    max_exact = max_exact and max_ms is not None

    m2_b = n_b * cur.stddev_ms * cur.stddev_ms
    m2_a = n_a * prev.stddev_ms * prev.stddev_ms
    d = mean_ms - prev.total_ms / n_a
    m2_w = m2_b - m2_a - d * d * n_a * dn / n_b
    fallback = False
    if m2_b <= 0.0:
        stddev_ms = 0.0  # every call so far took the same time
    elif m2_w > CANCELLATION_RATIO * m2_b:
        stddev_ms = math.sqrt(m2_w / dn)
    else:
        fallback = True
        stddev_ms = _narrow_stddev_ms(cur, mean_ms, dn, m2_b, max_ms, min_ms)
    return Interval(
        calls=dn,
        mean_s=mean_ms * _MS,
        stddev_s=stddev_ms * _MS,
        max_s=max_ms * _MS if max_ms is not None else None,
        max_exact=max_exact,
        min_s=min_ms * _MS if min_ms is not None else None,
        variance_fallback=fallback,
        history_calls=cur.calls,
    )


def _narrow_stddev_ms(
    cur: Cumulative, mean_ms: float, dn: int, m2_b: float, max_ms: float | None, min_ms: float | None
) -> float:
    # The untrusted M2 still says the true one is at most about CANCELLATION_RATIO * M2_b.
    cap = math.sqrt(CANCELLATION_RATIO * m2_b / dn)
    long_run_mean = cur.total_ms / cur.calls
    if long_run_mean > 0:
        cap = min(cap, mean_ms * cur.stddev_ms / long_run_mean)
    if max_ms is not None and min_ms is not None:
        # Bhatia-Davis: a variable confined to [min, max] has variance at most (max - mean) * (mean - min).
        cap = min(cap, math.sqrt(max(0.0, (max_ms - mean_ms) * (mean_ms - min_ms))))
    return max(cap, 0.0)


RowKey = tuple[int, int, int, bool]


def cumulative(row: StatementRow) -> Cumulative:
    return Cumulative(
        calls=row.calls, total_ms=row.total_ms, stddev_ms=row.stddev_ms, min_ms=row.min_ms, max_ms=row.max_ms
    )


def restarted(prev: StatementRow, cur: StatementRow) -> bool:
    """Whether ``cur`` is a new entry that replaced ``prev`` (reset, or evicted and re-created).

    Cumulative calls never go down. PostgreSQL 17+ says when an entry began (``stats_since``), and there
    min and max alone can be reset (``pg_stat_statements_reset(minmax_only => true)``), so they prove
    nothing. Before 17, min never rises and max never falls within one entry's life.
    """
    if cur.calls < prev.calls:
        return True
    if prev.stats_since is not None and cur.stats_since is not None:
        # Epoch seconds reach us through SQL and through Python conversions: equal within a millisecond.
        return abs(cur.stats_since - prev.stats_since) > 1e-3
    return cur.min_ms > prev.min_ms or cur.max_ms < prev.max_ms


@dataclasses.dataclass(frozen=True, slots=True)
class StatementWindow:
    """What happened between two snapshots."""

    seconds: float
    intervals: Mapping[RowKey, Interval]
    new_rows: int
    restarted_rows: int
    reset_detected: bool

    def by_statement(self) -> dict[tuple[int, int], list[Interval]]:
        """Intervals grouped per (dbid, queryid): one statement across users and nesting levels."""
        grouped: dict[tuple[int, int], list[Interval]] = {}
        for key, iv in self.intervals.items():
            grouped.setdefault((key[1], key[2]), []).append(iv)
        return grouped


def diff(
    previous: Mapping[RowKey, StatementRow],
    rows: Iterable[StatementRow],
    *,
    seconds: float,
    reset_detected: bool = False,
) -> StatementWindow:
    """Interval statistics of every row that ran between ``previous`` and ``rows``."""
    intervals: dict[RowKey, Interval] = {}
    new_rows = restarted_rows = 0
    for row in rows:
        prev = previous.get(row.key)
        if prev is not None and row.calls == prev.calls and not reset_detected and row.stats_since == prev.stats_since:
            continue  # the common case by far: nothing ran; decide it before building anything
        if prev is None:
            new_rows += 1
        elif reset_detected or restarted(prev, row):
            restarted_rows += 1
            prev = None
        iv = interval_of(cumulative(prev) if prev is not None else None, cumulative(row))
        if iv is not None:
            intervals[row.key] = iv
    return StatementWindow(
        seconds=seconds,
        intervals=intervals,
        new_rows=new_rows,
        restarted_rows=restarted_rows,
        reset_detected=reset_detected,
    )
