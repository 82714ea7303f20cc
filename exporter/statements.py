"""pg_stat_statements snapshots and the deltas between them.

``StatementTracker`` is the one place that keeps the previous snapshot of a target; each call to
``advance`` turns the new snapshot into per-row interval statistics (see exporter.latency) and makes it
the new baseline. Rows are keyed by (userid, dbid, queryid, toplevel), never by query text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from exporter.latency import Cumulative, Interval, Mixture, interval_of
from exporter.models import PgssInfoRow, StatementRow

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

    def mixture(self, dbid: int | None = None) -> Mixture:
        return Mixture(iv for key, iv in self.intervals.items() if dbid is None or key[1] == dbid)

    def by_database(self) -> dict[int, Mixture]:
        grouped: dict[int, list[Interval]] = {}
        for key, iv in self.intervals.items():
            grouped.setdefault(key[1], []).append(iv)
        return {dbid: Mixture(ivs) for dbid, ivs in grouped.items()}

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


class StatementTracker:
    """The previous snapshot of one target, and the window each new snapshot closes."""

    def __init__(self) -> None:
        self._previous: dict[RowKey, StatementRow] | None = None
        self._previous_at: float | None = None
        self._stats_reset: datetime | None = None

    @property
    def has_baseline(self) -> bool:
        return self._previous is not None

    def advance(
        self, rows: Sequence[StatementRow], info: PgssInfoRow | None, taken_at: float
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
        if self._previous is not None and self._previous_at is not None:
            window = diff(self._previous, rows, seconds=max(taken_at - self._previous_at, 0.0), reset_detected=reset)
        self._previous = {row.key: row for row in rows}
        self._previous_at = taken_at
        if info is not None:
            self._stats_reset = info.stats_reset
        return window

    def forget(self) -> None:
        """Drop the baseline (the server was replaced, or its identity changed)."""
        self._previous = None
        self._previous_at = None
        self._stats_reset = None
