"""The exporter's pg_stat_statements baseline, and the latency mixtures of each window.

``StatementTracker`` is the one place that keeps the previous snapshot of a target; each call to
``advance`` turns the new snapshot into per-row interval statistics (pg_architect.core.pgss.diff) and makes
it the new baseline.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from pg_architect.core.pgss import PgssInfoRow, RowKey, StatementRow, StatementWindow, diff
from pg_architect.exporter.latency import Estimate, Interval, LoggedTail, Mixture, estimate, merge_tails

if TYPE_CHECKING:  # the duration log's and the sampler's modules load only when they are on
    from pg_architect.exporter.activity import ActivityWindow
    from pg_architect.exporter.durationlog import LogWindow


def mixture(window: StatementWindow, dbid: int | None = None) -> Mixture:
    """The latency mixture of one database's rows in ``window`` (all databases when ``dbid`` is None)."""
    return Mixture(iv for key, iv in window.intervals.items() if dbid is None or key[1] == dbid)


def by_database(window: StatementWindow) -> dict[int, Mixture]:
    grouped: dict[int, list[Interval]] = {}
    for key, iv in window.intervals.items():
        grouped.setdefault(key[1], []).append(iv)
    return {dbid: Mixture(ivs) for dbid, ivs in grouped.items()}


class _Snapshot:
    """The previous snapshot, kept as columns: 20,000 rows as tuples of Python objects cost about 9 MB,
    as arrays about 3 MB (most of it the keys), which keeps the exporter's memory flat at 20,000 statements."""

    def __init__(self) -> None:
        self.index: dict[RowKey, int] = {}
        self.userid = array("q")
        self.dbid = array("q")
        self.queryid = array("q")
        self.toplevel = array("b")
        self.calls = array("q")
        self.total_ms = array("d")
        self.stddev_ms = array("d")
        self.min_ms = array("d")
        self.max_ms = array("d")
        self.stats_since = array("d")  # NaN: unknown (before pg_stat_statements 1.11)

    def append(self, row: StatementRow) -> None:
        self.index[row.key] = len(self.calls)
        self.userid.append(row.userid)
        self.dbid.append(row.dbid)
        self.queryid.append(row.queryid)
        self.toplevel.append(1 if row.toplevel else 0)
        self.calls.append(row.calls)
        self.total_ms.append(row.total_ms)
        self.stddev_ms.append(row.stddev_ms)
        self.min_ms.append(row.min_ms)
        self.max_ms.append(row.max_ms)
        self.stats_since.append(math.nan if row.stats_since is None else row.stats_since)

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[StatementRow]:
        """The rows again, each made when it is reached."""
        return map(self.row, range(len(self.calls)))

    def row(self, i: int) -> StatementRow:
        since = self.stats_since[i]
        return StatementRow(
            self.userid[i],
            self.dbid[i],
            self.queryid[i],
            bool(self.toplevel[i]),
            self.calls[i],
            self.total_ms[i],
            self.stddev_ms[i],
            self.min_ms[i],
            self.max_ms[i],
            None if math.isnan(since) else since,
        )

    def unchanged(self, row: StatementRow) -> bool:
        """Whether ``row`` is in this snapshot with the same calls and the same start (the common case)."""
        i = self.index.get(row.key)
        if i is None or self.calls[i] != row.calls:
            return False
        since = self.stats_since[i]
        return (row.stats_since is None) if math.isnan(since) else row.stats_since == since


def tails(
    dbids: Iterable[int],
    datnames: dict[int, str],
    log: LogWindow | None = None,
    activity: ActivityWindow | None = None,
) -> dict[int, LoggedTail]:
    """Each database's calls known one by one in the window (the duration log's above its threshold, sampled
    ones above the sampler's), where either source is complete for it."""
    out: dict[int, LoggedTail] = {}
    for dbid in dbids:
        tail = None
        threshold = log.threshold_s(dbid) if log is not None else None
        if log is not None and threshold is not None and dbid in datnames:
            logged = log.by_database.get(datnames[dbid])
            durations = [ms / 1000.0 for ms in logged.durations_ms] if logged is not None else []
            query_ids = list(logged.query_ids) if logged is not None else []
            tail = LoggedTail(threshold, durations, query_ids)
        merged = merge_tails(tail, activity.tail(dbid) if activity is not None else None)
        if merged is not None:
            out[dbid] = merged
    return out


def statement_tail(tail: LoggedTail, query_id: int) -> LoggedTail | None:
    """One statement's share of a database's tail; None when some of the tail's calls have no query id (they
    may be this statement's)."""
    if len(tail.query_ids) != len(tail.durations_s) or 0 in tail.query_ids:
        return None
    durations = [d for d, q in zip(tail.durations_s, tail.query_ids, strict=True) if q == query_id]
    return LoggedTail(tail.threshold_s, durations, [query_id] * len(durations), tail.sampled_below_s)


def estimates(
    window: StatementWindow, known: dict[int, LoggedTail], own: tuple[int, int, int] | None = None
) -> dict[int, Estimate]:
    """Each database's latency estimate for ``window``, backed by its ``known`` tail (:func:`tails`) where
    there is one. ``own`` (userid, dbid, queryid), the activity sampler's statement, is no part of any p95."""
    grouped: dict[int, dict[int, list[Interval]]] = {}
    for key, iv in window.intervals.items():
        if key[:3] != own:
            grouped.setdefault(key[1], {}).setdefault(key[2], []).append(iv)
    return {dbid: estimate(statements, known.get(dbid)) for dbid, statements in grouped.items()}


class StatementTracker:
    """The previous snapshot of one target, and the window each new snapshot closes."""

    def __init__(self) -> None:
        self._previous: _Snapshot | None = None
        self._previous_at: float | None = None
        self._stats_reset: datetime | None = None

    @property
    def has_baseline(self) -> bool:
        return self._previous is not None

    @property
    def snapshot(self) -> _Snapshot | None:
        """The last snapshot, iterable as rows."""
        return self._previous

    def advance(
        self, rows: Iterable[StatementRow], info: PgssInfoRow | None, taken_at: float
    ) -> StatementWindow | None:
        """Close the window at ``taken_at``; None for the first snapshot, which only sets the baseline.

        The first snapshot is a baseline, not a window: counting everything since the last reset as
        "the last scrape" would put weeks of history into one histogram step.
        """
        reset = (
            info is not None
            and self._stats_reset is not None
            and info.stats_reset is not None
            and info.stats_reset != self._stats_reset
        )
        window = None
        previous = self._previous
        current = _Snapshot()
        # Only rows that ran (or are new) are kept as tuples, for diff, with their previous row rebuilt from the
        # columns; diff skips unchanged rows itself, so the window is the same, without 20,000 tuples at once.
        changed: list[StatementRow] = []
        for row in rows:
            current.append(row)
            if previous is not None and (reset or not previous.unchanged(row)):
                changed.append(row)
        if previous is not None and self._previous_at is not None:
            before = {row.key: previous.row(previous.index[row.key]) for row in changed if row.key in previous.index}
            window = diff(before, changed, seconds=max(taken_at - self._previous_at, 0.0), reset_detected=reset)
        self._previous = current
        self._previous_at = taken_at
        if info is not None:
            self._stats_reset = info.stats_reset
        return window

    def forget(self) -> None:
        """Drop the baseline (the server was replaced, or its identity changed)."""
        self._previous = None
        self._previous_at = None
        self._stats_reset = None
