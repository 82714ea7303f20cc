"""Sampling pg_stat_activity at a bounded rate: a pseudo duration log, for servers whose log cannot be read.

Every ``1 / exporter.activity_sampling_hz`` seconds one statement on a connection of its own reads the running
statements of every client backend: ``(pid, backend_start)``, ``query_id``, ``query_start``, ``state`` and
``state_change``. A statement seen running is followed until its backend is seen doing something else:

- idle (or idle in a transaction) with the same ``query_start``: it ended at ``state_change``, exactly;
- running a newer statement, or idle after one: it ended after the last sample that saw it running and
  before the newer statement's ``query_start``; the record is the middle of that range (at most half a
  sampling interval off when the client sends its next statement at once, less otherwise);
- gone: it ended before this sample.

Sampling is periodic, so every statement running longer than the longest gap between two samples (G, measured
from the server's own clock: ``statement_timestamp()`` before each snapshot, ``clock_timestamp()`` after) was
seen at least once: above G the records are complete, exactly like the duration log above
``log_min_duration_statement``. ``ActivityWindow.tail(dbid)`` hands them to ``latency.LoggedTail`` (the same
machinery as the log); below G the model of pg_stat_statements' moments stands.

Bounded: one entry per backend being followed, at most ``activity_sampling_max_records`` records between
two scrapes (32 bytes each), only records at least one sampling interval long (shorter ones are below any
G), and the times of at most 200,000 sample pairs (16 bytes each; past that, an hour without a scrape at
50 Hz, the window is incomplete).
The sampler's own statement is left out of what it reads and, where pg_stat_statements still counts it (a role
that may not switch tracking off), out of the p95 (``ActivityWindow.own``). A role that may not see other
roles' sessions (no pg_read_all_stats / pg_monitor) sees their state as NULL: that database's window is then
incomplete (``hidden``), never guessed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from array import array

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pg_architect.core import db
from pg_architect.core.errors import redact
from pg_architect.exporter.latency import LoggedTail
from pg_architect.exporter.queries import QUERIES

log = logging.getLogger(__name__)

_RETRY_S = 1.0  # after a failed sample, before reconnecting
_OFFSET_SAMPLES = 64  # the server-minus-client clock offset is taken from the quickest of this many samples
_RUNNING = ("active", "fastpath function call")  # states of a backend running a statement
_MAX_GAPS = 200_000  # sample pairs kept between two scrapes (16 bytes each; over an hour at 50 Hz)


@dataclasses.dataclass(frozen=True, slots=True)
class SampleRow:
    """One backend in one sample (activity_sample.sql); times are the server's epoch seconds."""

    pid: int
    own: bool
    backend_start: float | None
    datid: int | None
    usesysid: int | None
    state: str | None
    query_id: int
    query_start: float | None
    state_change: float | None
    sampled_at: float
    read_by: float


@dataclasses.dataclass(slots=True)
class _Running:
    """A statement seen running: when it started, the last sample that saw it, its query id and database."""

    query_start: float
    seen_at: float
    query_id: int
    datid: int


@dataclasses.dataclass(slots=True)
class SampledCalls:
    """The sampled calls of one database in one window (seconds) and their query ids (0: unknown)."""

    durations_s: array[float] = dataclasses.field(default_factory=lambda: array("d"))
    query_ids: array[int] = dataclasses.field(default_factory=lambda: array("q"))


@dataclasses.dataclass(frozen=True, slots=True)
class ActivityWindow:
    """What the sampler says about the window a scrape closes.

    ``threshold_s`` is G: every statement that ran longer than it in the window is in ``by_database``.
    ``complete`` is False when the sampler did not cover the whole window (``reason`` says why); databases in
    ``hidden`` had sessions the sampler's role may not see. ``own`` is the sampler's own statement
    ``(userid, dbid, queryid)``, to be left out of the p95.
    """

    complete: bool
    reason: str | None
    threshold_s: float
    by_database: dict[int, SampledCalls]
    hidden: frozenset[int]
    own: tuple[int, int, int] | None
    exact: int = 0
    bounded: int = 0

    def tail(self, dbid: int) -> LoggedTail | None:
        """Every call of database ``dbid`` above G, as the duration log's tail would hold it; None if unknown."""
        if not self.complete or dbid in self.hidden or not math.isfinite(self.threshold_s):
            return None
        calls = self.by_database.get(dbid) or SampledCalls()
        kept = [(d, q) for d, q in zip(calls.durations_s, calls.query_ids, strict=True) if d >= self.threshold_s]
        return LoggedTail(self.threshold_s, [d for d, _ in kept], [q for _, q in kept], sampled_below_s=math.inf)


class ActivitySampler:
    """One target's sampler thread, its connection, and the statements it follows between two scrapes."""

    def __init__(self, name: str, dsn: str, timeouts: db.Timeouts, hz: float, max_records: int = 100_000) -> None:
        if not 0 < hz <= 1000:
            raise ValueError(f"sampling rate must be within (0, 1000] Hz, got {hz}")
        self.name = name
        self.dsn = dsn
        self.period_s = 1.0 / hz
        self.max_records = max_records
        # Each sample must answer well within a period's reach: a stuck one is cancelled, not waited for.
        self._timeouts = dataclasses.replace(timeouts, statement_ms=max(int(20 * self.period_s * 1000), 1000))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: db.Connection | None = None
        # Everything below is guarded by self._cond.
        self._running: dict[tuple[int, float], _Running] = {}
        self._ends = array("d")
        self._durations = array("d")
        self._qids = array("q")
        self._dbids = array("q")
        self._exact = 0
        self._bounded = 0
        self._overflow = False
        # Each pair of consecutive samples: sampled_at of the first, read_by of the second (server time).
        self._gap_from = array("d")
        self._gap_to = array("d")
        self._gaps_lost = False
        self._hidden: dict[int, float] = {}  # datid -> last sample (server time) that could not see a session
        self._first: float | None = None  # sampled_at of the first sample (since the last restart or forget)
        self._last: float | None = None  # sampled_at of the latest sample
        self._last_taken = -math.inf  # time.monotonic() when the latest sample was taken
        self._cut: float | None = None  # the previous window's end, server time
        self._own: tuple[int, int, int] | None = None
        self._offsets: collections.deque[tuple[float, float]] = collections.deque(maxlen=_OFFSET_SAMPLES)
        self.samples = 0
        self.failures = 0
        self.sampling_seconds = 0.0  # wall time spent in samples (round trip and bookkeeping)
        self.cpu_seconds = 0.0  # this process's CPU time spent in samples
        self.backend_pid: int | None = None  # the server process answering the samples
        self.last_error: str | None = None

    # -- the thread -----------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start sampling (once); it runs until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=f"activity-{self.name}", daemon=True)
        self._thread.start()

    def wait_for_sample(self, timeout_s: float) -> bool:
        """Wait until at least one sample was taken; False if none within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._last is None and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._last is not None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close its connection; a sample in flight is cancelled."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        conn = self._conn
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=min(timeout_s, 0.5))
            if thread.is_alive() and conn is not None:
                try:
                    conn.cancel_safe(timeout=2.0)
                except Exception as exc:  # the server may be gone; cancelling is best effort
                    log.debug("cancel of the activity sample failed: %s", exc)
                thread.join(timeout=timeout_s)
        self._close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                started, cpu = time.monotonic(), time.thread_time()
                try:
                    self._sample()
                except Exception as exc:  # a worker thread reports, never dies silently
                    self._failed(exc)
                    if self._stop.wait(_RETRY_S):
                        break
                    next_at = time.monotonic()
                    continue
                self.sampling_seconds += time.monotonic() - started
                self.cpu_seconds += time.thread_time() - cpu
                next_at += self.period_s
                now = time.monotonic()
                if next_at < now - self.period_s:
                    next_at = now  # fell behind (a loaded machine): no burst of catch-up samples
                if self._stop.wait(max(next_at - now, 0.0)):
                    break
        finally:
            self._close()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        message = redact(str(exc))
        if message != self.last_error:
            log.warning(
                "activity sampling of %s failed (the p95 falls back to pg_stat_statements): %s", self.name, message
            )
        self.last_error = message
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # closing a broken connection must not break the loop
                log.debug("close failed: %s", exc)

    def _connection(self) -> db.Connection:
        conn = self._conn
        if conn is None or conn.closed:
            conn = db.connect(self.dsn, db.Role.EXPORTER, self._timeouts)
            # pg_stat_statements need not count a statement run 50 times a second, where the role may say so;
            # where it may not, the p95 leaves the sampler's own statement out by its query id.
            db.untrack(conn)
            self._conn = conn
            self.backend_pid = conn.info.backend_pid
        return conn

    def _sample(self) -> None:
        conn = self._connection()
        with self._cond:
            since = self._last if self._last is not None else 0.0
        sent = time.time()
        rows = db.fetch(conn, db.query(conn, QUERIES, "activity_sample"), {"since": since}, SampleRow)
        received = time.time()
        if self.last_error is not None:
            log.info("activity sampling of %s works again", self.name)
            self.last_error = None
        self.observe(rows, sent, received)

    # -- bookkeeping (also fed directly by tests and the benchmark) ------------------------------------
    def observe(self, rows: list[SampleRow], sent: float, received: float) -> None:
        """Take one sample's rows (``sent``/``received``: the client's clock around the round trip)."""
        if not rows:
            return  # the sampler's own row is always there; nothing else can be trusted without it
        sampled_at = rows[0].sampled_at
        read_by = min(r.read_by for r in rows)
        with self._cond:
            self._offsets.append((received - sent, sampled_at - 0.5 * (sent + received)))
            if self._last is not None:
                if len(self._gap_from) >= _MAX_GAPS:
                    # No scrape for an hour: one long gap stands for them all (the window is incomplete).
                    self._gap_from = array("d", [self._gap_from[0]])
                    self._gap_to = array("d", [self._gap_to[-1]])
                    self._gaps_lost = True
                self._gap_from.append(self._last)
                self._gap_to.append(read_by)
            else:
                self._first = sampled_at
            seen: set[tuple[int, float]] = set()
            for r in rows:
                if r.own:
                    if r.usesysid is not None and r.datid is not None:
                        self._own = (r.usesysid, r.datid, r.query_id)
                    continue
                if r.state is None:
                    # A session this role may not see has every column but its database and role NULL; a
                    # backend still starting up (authenticating) has no state either, but its start time.
                    if r.backend_start is None and r.datid is not None:
                        self._hidden[r.datid] = sampled_at
                    continue
                if r.backend_start is None or r.query_start is None or r.datid is None:
                    continue
                key = (r.pid, r.backend_start)
                seen.add(key)
                run = self._running.get(key)
                if r.state in _RUNNING:
                    if run is not None and run.query_start == r.query_start:
                        run.seen_at = sampled_at
                        run.query_id = r.query_id or run.query_id  # 0 until the executor starts
                        continue
                    if run is not None:
                        self._record(run, run.seen_at, r.query_start)  # ended before the newer one started
                    self._running[key] = _Running(r.query_start, sampled_at, r.query_id, r.datid)
                elif run is not None:
                    if run.query_start == r.query_start and r.state_change is not None:
                        self._record(run, r.state_change, r.state_change)  # seen ending: exact
                    else:
                        self._record(run, run.seen_at, r.query_start)
                    del self._running[key]
            for key in [k for k in self._running if k not in seen]:
                # Gone (disconnected, terminated) or hidden now: it ended before this sample was read.
                run = self._running.pop(key)
                self._record(run, run.seen_at, read_by)
            self._last = sampled_at
            self._last_taken = time.monotonic()
            self.samples += 1
            self._cond.notify_all()

    def _record(self, run: _Running, after: float, before: float) -> None:
        """A call that ended within (after, before]: its duration, the middle of that range."""
        before = max(before, after)
        end = 0.5 * (after + before)
        duration = end - run.query_start
        if before == after:
            self._exact += 1
        else:
            self._bounded += 1
        if duration < self.period_s:
            return  # below any G: never part of a tail
        if len(self._ends) >= self.max_records:
            self._overflow = True
            return
        self._ends.append(end)
        self._durations.append(duration)
        self._qids.append(run.query_id)
        self._dbids.append(run.datid)

    def offset_s(self) -> float:
        """The server's clock minus this process's, from the quickest recent round trip."""
        with self._cond:
            if not self._offsets:
                return 0.0
            return min(self._offsets)[1]

    def forget(self) -> None:
        """Start over (another server answers at this address): the next window is a baseline."""
        with self._cond:
            self._running.clear()
            self._drop_records(math.inf)
            self._gap_from = array("d")
            self._gap_to = array("d")
            self._gaps_lost = False
            self._hidden.clear()
            self._first = None
            self._last = None
            self._last_taken = -math.inf
            self._cut = None
            self._own = None
            self._offsets.clear()

    def _drop_records(self, upto: float) -> None:
        keep = [i for i, end in enumerate(self._ends) if end > upto]
        self._ends = array("d", (self._ends[i] for i in keep))
        self._durations = array("d", (self._durations[i] for i in keep))
        self._qids = array("q", (self._qids[i] for i in keep))
        self._dbids = array("q", (self._dbids[i] for i in keep))

    # -- windows ----------------------------------------------------------------------------------------
    def window(self, cut: float, wait_s: float) -> ActivityWindow:
        """Close the window at ``cut`` (this process's clock when pg_stat_statements was read).

        Waits up to ``wait_s`` for a sample that started after the cut, so every call that ended before it
        has been seen ending. The first window is a baseline.
        """
        at = cut + self.offset_s()
        now = time.monotonic()
        if self.last_error is not None or now - self._last_taken > max(10 * self.period_s, 0.5):
            wait_s = 0.0  # the sampler is failing or stalled: scrapes do not wait for it
        deadline = now + wait_s
        with self._cond:
            while (self._last is None or self._last < at) and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            previous, self._cut = self._cut, at
            ids = self._dbids
            by_db: dict[int, SampledCalls] = {}
            for i, end in enumerate(self._ends):
                if previous is not None and previous < end <= at:
                    calls = by_db.get(ids[i])
                    if calls is None:
                        calls = by_db[ids[i]] = SampledCalls()
                    calls.durations_s.append(self._durations[i])
                    calls.query_ids.append(self._qids[i])
            self._drop_records(at)
            reason = None
            if previous is None:
                reason = "baseline"
            elif self._last is None or self._last < at:
                reason = f"no sample of pg_stat_activity within {wait_s:g} s of the window's end"
            elif self._first is None or self._first > previous:
                reason = "the sampler started after the window opened"
            elif self._overflow:
                reason = f"more than activity_sampling_max_records ({self.max_records}) long calls in one window"
            elif self._gaps_lost:
                reason = "the window was too long to keep every sample's time"
            gap = math.inf
            if previous is not None:
                pairs = zip(self._gap_from, self._gap_to, strict=True)
                gap = max((b - a for a, b in pairs if b > previous and a < at), default=math.inf)
            hidden = frozenset(d for d, t in self._hidden.items() if previous is None or t > previous)
            keep = [i for i, b in enumerate(self._gap_to) if b > at]
            self._gap_from = array("d", (self._gap_from[i] for i in keep))
            self._gap_to = array("d", (self._gap_to[i] for i in keep))
            self._hidden = {d: t for d, t in self._hidden.items() if t > at}
            self._overflow = False
            self._gaps_lost = False
            exact, bounded = self._exact, self._bounded
            self._exact = self._bounded = 0
            return ActivityWindow(reason is None, reason, gap, by_db, hidden, self._own, exact, bounded)


def metrics(window: ActivityWindow | None, sampler: ActivitySampler) -> list[Metric]:
    """The sampler's own state: whether it covered the last window, and above which duration."""
    complete = GaugeMetricFamily(
        "pgarch_activity_sampling_complete",
        "1 when sampling pg_stat_activity covered the last window: every statement longer than "
        "pgarch_activity_sampling_threshold_seconds was seen.",
    )
    complete.add_metric([], 1.0 if window is not None and window.complete else 0.0)
    families: list[Metric] = [complete]
    if window is not None and window.complete:
        threshold = GaugeMetricFamily(
            "pgarch_activity_sampling_threshold_seconds",
            "The longest gap between two samples of pg_stat_activity in the last window: every statement "
            "longer than this was seen.",
        )
        threshold.add_metric([], window.threshold_s)
        families.append(threshold)
    samples = CounterMetricFamily("pgarch_activity_samples", "Samples of pg_stat_activity taken.")
    samples.add_metric([], sampler.samples)
    failures = CounterMetricFamily("pgarch_activity_sample_failures", "Samples of pg_stat_activity that failed.")
    failures.add_metric([], sampler.failures)
    return [*families, samples, failures]
