"""One monitored database server: its connection, its state between scrapes, and the scrape itself.

Everything a target remembers lives in its ``Target`` object (never in module globals), so a
``/probe?target=NAME`` endpoint needs only a dictionary of targets. A scrape:

- runs in a worker thread, answered within the budget whatever the database does: at the deadline the
  waiter cancels the running statement and reports ``pg_up 0`` with no database-derived series;
- is shared: scrapes that arrive while one collection runs wait for that one instead of starting more, and a
  collection abandoned at its deadline (a connection attempt hung behind a lock, say) ends before another
  starts: a target never holds more than one connection for its scrapes;
- uses one connection, every statement under statement and lock timeouts;
- isolates collector groups: one failing sets its ``pgarch_scrape_collector_success`` to 0, the rest stand;
- with ``exporter.statements_interval_s`` > 0 reads pg_stat_statements on its own interval, on its own
  connection, off the scrape's path: a scrape serves the last collection with its age
  (``pgarch_statements_collection_age_seconds``), and none at all once the refresh fails and the last
  collection is older than an interval plus a budget, or a refresh runs for longer than an interval plus two
  budgets (the ``statements`` collector then reports 0). A slow refresh under load is served with its age.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import DatabaseError, DatabaseUnavailable, PgArchitectError, QueryTimeout, redact
from pg_architect.exporter import collectors, compat
from pg_architect.exporter.models import DatabaseRow, ServerRow
from pg_architect.exporter.statements import StatementTracker

if TYPE_CHECKING:
    from pg_architect.exporter.activity import ActivitySampler, ActivityWindow
    from pg_architect.exporter.durationlog import DurationLog, LogWindow

log = logging.getLogger(__name__)

COLLECTORS = (
    "server",
    "activity",
    "locks",
    "databases",
    "settings",
    "bgwriter",
    "replication",
    "statements",
    "disk",
    "knowledge_base",
)
APPLICATION_NAME = db.Role.EXPORTER.value


class _Abandoned(PgArchitectError):
    """The waiter gave up on this collection at its deadline."""


@dataclasses.dataclass
class _Job:
    deadline: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: list[Metric] | None = None
    conn: db.Connection | None = None
    abandoned: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass
class _Statements:
    """The last pg_stat_statements collection: its families, when it was taken, and whether one runs now."""

    families: list[Metric] = dataclasses.field(default_factory=list)
    taken_at: float | None = None  # time.monotonic() when the collection started
    running: bool = False
    started_at: float | None = None  # when the refresh in progress started
    failed: bool = False  # the last refresh failed
    conn: db.Connection | None = None


class Target:
    """A database server to scrape, with everything it remembers between scrapes.

    ``groups`` limits the collector groups run (``server`` always runs): ``/probe`` runs the cluster-wide
    groups once per server and the per-database ones (``knowledge_base``) per database. ``fallback_dsns``
    are other databases of the same server, tried in turn when ``dsn`` cannot be connected to.
    ``activity_sampling`` allows the pg_stat_activity sampler (``exporter.activity_sampling_hz``) for this
    target: the exporter's own target has it, ``/probe`` targets do not (a thread, a connection and tens of
    statements a second per probed server would not scale to a fleet).
    """

    def __init__(
        self,
        name: str,
        dsn: str,
        config: Config,
        *,
        kb_dsn: str | None = None,
        groups: Collection[str] = COLLECTORS,
        fallback_dsns: Sequence[str] = (),
        activity_sampling: bool = True,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self._dsns = [dsn, *(d for d in fallback_dsns if d != dsn)]
        self.groups = tuple(g for g in COLLECTORS if g in groups or g == "server")
        self.datname: str | None = None  # the connected database, once known
        self.kb_dsn = kb_dsn if kb_dsn and kb_dsn != dsn else None
        self.config = config
        self._conn: db.Connection | None = None
        self._kb_conn: db.Connection | None = None
        self._conn_lock = threading.Lock()
        self._job: _Job | None = None
        self._job_lock = threading.Lock()
        # State between scrapes, touched only by the collection in progress.
        self.statements = StatementTracker()
        self.duration_log: DurationLog | None = None
        exporter = config.exporter
        if exporter.duration_log != "off":
            from pg_architect.exporter import durationlog  # loaded only when asked for

            self.duration_log = durationlog.from_config(exporter)
        self.activity: ActivitySampler | None = None
        if exporter.activity_sampling_hz > 0 and activity_sampling and "statements" in self.groups:
            from pg_architect.exporter import activity  # loaded only when asked for

            self.activity = activity.ActivitySampler(
                name,
                dsn,
                db.policy(config, db.Role.EXPORTER),
                exporter.activity_sampling_hz,
                exporter.activity_sampling_max_records,
            )
        self.histograms: dict[str, collectors.HistogramState] = {}
        self._blocks: dict[str, tuple[int, int]] | None = None
        self._sizes: dict[int, int] = {}  # database sizes, refreshed every database_size_interval_s
        self._sizes_at: float | None = None
        self._system_identifier: str | None = None
        self._warned: set[str] = set()
        self.collections = 0  # collections started, for tests and /healthz-style introspection
        self._pgss = _Statements()
        self._settings: tuple[tuple[str | None, float], list[Metric]] | None = None
        self._pgss_worker: threading.Thread | None = None
        self._pgss_wake = threading.Event()
        self._pgss_request: tuple[ServerRow, dict[int, str]] | None = None
        self._closed = False
        self._pgss_lock = threading.Lock()
        # The last successful collection and when it finished (time.monotonic()), for scrape(max_age_s=...).
        self._last: tuple[float, list[Metric]] | None = None

    # -- scraping -------------------------------------------------------------------------------
    def scrape(self, budget_s: float | None = None) -> list[Metric]:
        """Collect every metric family, answering within ``budget_s`` seconds."""
        return self.scrape_shared(budget_s)[0]

    def scrape_shared(self, budget_s: float | None = None, max_age_s: float = 0.0) -> tuple[list[Metric], float]:
        """Like :meth:`scrape`, but a successful collection that finished at most ``max_age_s`` ago is served
        again instead of starting one; returns the families and their age in seconds."""
        budget = min(budget_s or self.config.exporter.scrape_budget_s, self.config.exporter.scrape_budget_s)
        started = time.monotonic()
        deadline = started + budget
        last = self._last
        if max_age_s > 0 and last is not None and started - last[0] <= max_age_s:
            return last[1], started - last[0]
        while True:
            with self._job_lock:
                job = self._job
                if job is None or job.done.is_set():
                    job = _Job(deadline=deadline)
                    self._job = job
                    threading.Thread(target=self._run, args=(job,), name=f"scrape-{self.name}", daemon=True).start()
                    break
                if not (job.abandoned or job.deadline <= started):
                    break  # join the collection in progress
            # A collection past its deadline still holds (or is still opening) this target's one connection:
            # wait for it to end rather than open a second one, within this scrape's budget.
            if not job.done.wait(timeout=max(deadline - time.monotonic(), 0.0)):
                reason = "the previous collection of this target is still stuck"
                return self._down(time.monotonic() - started, reason=reason), 0.0
        if job.done.wait(timeout=max(deadline - time.monotonic(), 0.0)) and job.result is not None:
            return job.result, 0.0
        if time.monotonic() >= job.deadline:
            # Only at the collection's own deadline: a scrape with a shorter budget that joined it gives up
            # alone, and leaves the collection to the scrape still waiting for it.
            self._abandon(job)
        return self._down(time.monotonic() - started, reason="the scrape budget ran out"), 0.0

    def _abandon(self, job: _Job) -> None:
        with job.lock:
            job.abandoned = True
            conn = job.conn
        if conn is not None:
            # cancel_safe may block on a hung server: never in the scraper's thread.
            threading.Thread(target=_cancel, args=(conn,), daemon=True).start()

    def _run(self, job: _Job) -> None:
        self.collections += 1
        started = time.monotonic()
        try:
            job.result = self._collect(job, started)
            if _is_up(job.result):
                self._last = (time.monotonic(), job.result)
        except Exception as exc:  # a worker thread must report, never die silently
            if not job.abandoned:
                self._warn("scrape", f"scrape of {self.name} failed: {redact(str(exc))}")
            job.result = self._down(time.monotonic() - started, reason=str(exc))
        finally:
            job.done.set()

    def _remaining_ms(self, job: _Job) -> int:
        remaining = job.deadline - time.monotonic()
        if remaining <= 0 or job.abandoned:
            raise _Abandoned("deadline passed")
        return max(int(remaining * 1000), 1)

    def _checkout(self, job: _Job) -> db.Connection:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            return conn
        try:
            return self._connect(self.dsn, job)
        except DatabaseUnavailable:
            if len(self._dsns) > 1:  # another database of this server may still let us in next time
                self.dsn = self._dsns[(self._dsns.index(self.dsn) + 1) % len(self._dsns)]
            raise

    def _connect(self, dsn: str, job: _Job) -> db.Connection:
        """A connection that gives up connecting when the scrape's budget does (at most database.connect_timeout_s)."""
        timeouts = db.policy(self.config, db.Role.EXPORTER)
        connect_s = min(job.deadline - time.monotonic(), timeouts.connect_s)
        return db.connect(dsn, db.Role.EXPORTER, dataclasses.replace(timeouts, connect_s=connect_s))

    def _checkin(self, conn: db.Connection, job: _Job) -> None:
        with job.lock:
            job.conn = None  # a late cancel must not hit the next scrape's statement
        if job.abandoned or conn.closed:
            _close(conn)
            return
        with self._conn_lock:
            if self._conn is None:
                self._conn = conn
                return
        _close(conn)

    def _collect(self, job: _Job, started: float) -> list[Metric]:
        success: dict[str, bool] = dict.fromkeys(self.groups, False)
        families: list[Metric] = []
        try:
            conn = self._checkout(job)
        except DatabaseUnavailable as exc:
            self._warn("connect", f"cannot connect to {self.name}: {exc}")
            return self._down(time.monotonic() - started, reason=str(exc))
        with job.lock:
            if job.abandoned:
                _close(conn)
                raise _Abandoned("deadline passed while connecting")
            job.conn = conn
        healthy = False
        try:
            db.set_timeouts(
                conn, statement_timeout_ms=self._remaining_ms(job), lock_timeout_ms=self.config.exporter.lock_timeout_ms
            )
            server = collectors.read_server(conn)
            self.datname = server.current_datname
            success["server"] = True
            healthy = True
            self._warned.difference_update({"connect", "down", "server", "scrape"})
            if server.system_identifier != self._system_identifier:
                # Another server answers at this address now (failover, restore): start over.
                self.statements.forget()
                if self.duration_log is not None:
                    self.duration_log.forget()
                if self.activity is not None:
                    self.activity.forget()
                self._blocks = None
                self._sizes_at = None
                self._system_identifier = server.system_identifier
            families += self._guarded(success, "activity", job, lambda: self._activity_metrics(conn, server))
            families += self._guarded(success, "locks", job, lambda: [compat.locks_family(collectors.read_locks(conn))])
            databases: list[DatabaseRow] = []

            def read_databases() -> list[Metric]:
                now = time.monotonic()
                if self._sizes_at is None or now - self._sizes_at >= self.config.exporter.database_size_interval_s:
                    self._sizes = collectors.read_database_sizes(conn, server)
                    self._sizes_at = now
                databases.extend(collectors.read_databases(conn, server, self._sizes))
                metrics = collectors.database_metrics(databases, self._blocks)
                self._blocks = {d.datname: (d.blks_hit, d.blks_read) for d in databases}
                return metrics

            families += self._guarded(success, "databases", job, read_databases)
            families += self._guarded(success, "settings", job, lambda: self._settings_metrics(conn, server))
            families += self._guarded(
                success, "bgwriter", job, lambda: compat.bgwriter_families(collectors.read_bgwriter(conn))
            )
            families += self._guarded(
                success, "replication", job, lambda: compat.replication_families(collectors.read_replication(conn))
            )
            families += self._guarded(
                success, "statements", job, lambda: self._statement_metrics(conn, server, databases)
            )
            families += self._guarded(success, "disk", job, lambda: self._disk_metrics(server, databases))
            families += self._guarded(success, "knowledge_base", job, lambda: self._kpi_metrics(conn, server, job))
        except (DatabaseUnavailable, QueryTimeout, _Abandoned) as exc:
            _close(conn)
            if isinstance(exc, _Abandoned) or not healthy:
                self._warn("down", f"{self.name} is down: {exc}")
                return self._down(time.monotonic() - started, reason=str(exc))
            raise
        except PgArchitectError as exc:
            self._warn("server", f"cannot read server settings of {self.name}: {exc}")
            self._checkin(conn, job)
            return self._down(time.monotonic() - started, reason=str(exc), up=True)
        except Exception as exc:
            # A bug of ours, not an outage: the server answered. Give the connection back and say which
            # collector failed; pg_up stays 1 so nobody is paged for a database that is fine.
            self._bug("server", exc)
            self._checkin(conn, job)
            return self._down(time.monotonic() - started, reason=f"internal error: {exc!r}", up=True)
        self._checkin(conn, job)
        return [_up(True), *families, *self._self_metrics(time.monotonic() - started, success)]

    def _guarded(
        self, success: dict[str, bool], name: str, job: _Job, read: Callable[[], list[Metric]]
    ) -> list[Metric]:
        """Run one collector group; its failure is recorded, not raised (unless the server is gone)."""
        if name not in success:
            return []  # not one of this target's groups
        self._remaining_ms(job)
        try:
            families = read()
        except DatabaseUnavailable:
            raise
        except (PgArchitectError, OSError) as exc:
            if job.abandoned:
                raise _Abandoned("deadline passed") from exc
            self._warn(name, f"collector {name} failed on {self.name}: {exc}")
            return []
        except Exception as exc:  # a bug of ours: this collector fails, the scrape goes on
            if job.abandoned:
                raise _Abandoned("deadline passed") from exc
            self._bug(name, exc)
            return []
        success[name] = True
        self._warned.discard(name)
        return families

    def _settings_metrics(self, conn: db.Connection, server: ServerRow) -> list[Metric]:
        # Settings change only when the configuration is (re)loaded: read them again when that time moves (or
        # another server answers), not at every scrape; they are never older than the server's configuration.
        key = (server.system_identifier, server.conf_load_time)
        if self._settings is None or self._settings[0] != key:
            self._settings = (key, compat.settings_families(collectors.read_settings(conn)))
        return self._settings[1]

    def _activity_metrics(self, conn: db.Connection, server: ServerRow) -> list[Metric]:
        activity = collectors.read_activity(conn, server)
        return [*collectors.server_metrics(server, activity), compat.max_tx_family(activity)]

    def _statement_metrics(self, conn: db.Connection, server: ServerRow, databases: list[DatabaseRow]) -> list[Metric]:
        if not databases:
            # Without names the histograms would be relabelled or dropped; keep the baseline for next time.
            raise DatabaseError("statements need the database list, which failed in this scrape")
        datnames = {d.dbid: d.datname for d in databases}
        interval = self.config.exporter.statements_interval_s
        with self._pgss_lock:
            state = self._pgss
            now = time.monotonic()
            first = state.taken_at is None and not state.running
            due = interval > 0 and not state.running and (state.taken_at is None or now - state.taken_at >= interval)
            if due and not first:
                state.running = True
                state.started_at = now
                self._pgss_request = (server, datnames)
                if self._pgss_worker is None:
                    # One long-lived thread per target: glibc gives each new thread its own malloc arena, and
                    # a new thread per refresh left 20,000 rows' worth of freed memory in arena after arena.
                    self._pgss_worker = threading.Thread(
                        target=self._statements_worker, name=f"statements-{self.name}", daemon=True
                    )
                    self._pgss_worker.start()
                self._pgss_wake.set()
        if interval <= 0 or first:
            # At scrape time, on the scrape's connection: always with interval 0, and for the very first
            # collection so the histogram is there from the first scrape on.
            with self._pgss_lock:
                state.running = True
            try:
                state.families = self._read_statements(conn, server, datnames)
                state.taken_at = now
            finally:
                with self._pgss_lock:
                    state.running = False
        taken_at = state.taken_at
        if taken_at is None:
            raise DatabaseError("pg_stat_statements has not been collected yet")
        age = max(time.monotonic() - taken_at, 0.0)
        budget = self.config.exporter.scrape_budget_s
        if interval > 0 and state.failed and age > interval + budget:
            # Never serve an old collection as if it were recent: the refresh is failing.
            raise DatabaseError(f"the last pg_stat_statements collection is {age:.0f} s old (refresh failing)")
        started_at = state.started_at
        if interval > 0 and state.running and started_at is not None and now - started_at > interval + 2 * budget:
            raise DatabaseError(f"the pg_stat_statements refresh has run for {now - started_at:.0f} s (stuck)")
        return [*state.families, _statements_age(age, interval)]

    def _read_statements(self, conn: db.Connection, server: ServerRow, datnames: dict[int, str]) -> list[Metric]:
        sampler = self.activity
        budget = self.config.exporter.scrape_budget_s
        if sampler is not None and not sampler.started:
            # Sampling must cover the first window from its start: its first sample comes before the baseline.
            sampler.start()
            sampler.wait_for_sample(min(1.0, budget / 4))
        read_at = time.time()
        rows, info = collectors.read_statements(conn, server)
        window = self.statements.advance(rows, info, time.time())
        # The sampler's window is cut with pg_stat_statements' baseline, before anything else can fail.
        activity_window, activity_metrics = self._read_activity(read_at)
        log_window, log_metrics = self._read_duration_log(conn)
        snapshot = self.statements.snapshot or ()  # the rows again, made one at a time
        top_n = self.config.exporter.top_queries
        families = collectors.statement_metrics(
            window, snapshot, datnames, self.histograms, top_n, log_window, activity_window
        )
        return families + log_metrics + activity_metrics

    def _read_activity(self, read_at: float) -> tuple[ActivityWindow | None, list[Metric]]:
        """What the pg_stat_activity sampler saw in the window closed at ``read_at``; never fails the scrape."""
        sampler = self.activity
        if sampler is None:
            return None, []
        from pg_architect.exporter import activity

        # Waits (briefly: about one sampling interval) for a sample taken after the window's end.
        window = sampler.window(read_at, wait_s=min(1.0, self.config.exporter.scrape_budget_s / 4))
        if window.reason not in (None, "baseline"):
            log.info("activity sampling of %s does not back this window: %s", self.name, window.reason)
        return window, activity.metrics(window, sampler)

    def _read_duration_log(self, conn: db.Connection) -> tuple[LogWindow | None, list[Metric]]:
        """The server's duration log for the window just closed; a failure degrades the p95, not the scrape."""
        if self.duration_log is None:
            return None, []
        from pg_architect.exporter import durationlog

        try:
            log_window = self.duration_log.collect(conn)
        except (DatabaseUnavailable, QueryTimeout):
            raise
        except PgArchitectError as exc:
            self._warn("duration_log", f"duration log of {self.name} not used: {exc}")
            return None, durationlog.metrics(None, self.duration_log)
        self._warned.discard("duration_log")
        if log_window.reason not in (None, "baseline"):
            log.info("duration log of %s does not back this window: %s", self.name, log_window.reason)
        return log_window, durationlog.metrics(log_window, self.duration_log)

    def _statements_worker(self) -> None:
        """The background pg_stat_statements reads of this target, one at a time, until it is closed."""
        while True:
            self._pgss_wake.wait()
            self._pgss_wake.clear()
            request = self._pgss_request
            if self._closed:
                return
            if request is not None:
                self._refresh_statements(*request)

    def _refresh_statements(self, server: ServerRow, datnames: dict[int, str]) -> None:
        """One pg_stat_statements collection on its own connection (exporter.statements_interval_s > 0)."""
        state = self._pgss
        started = time.monotonic()
        try:
            conn = state.conn
            if conn is None or conn.closed:
                conn = state.conn = db.connect(self.dsn, db.Role.EXPORTER, db.policy(self.config, db.Role.EXPORTER))
            state.families = self._read_statements(conn, server, datnames)
            state.taken_at = started
            state.failed = False
            self._warned.discard("statements-refresh")
        except Exception as exc:  # a worker thread reports, never dies silently
            state.failed = True
            if state.conn is not None:
                _close(state.conn)
                state.conn = None
            self._warn("statements-refresh", f"pg_stat_statements refresh of {self.name} failed: {redact(str(exc))}")
        finally:
            with self._pgss_lock:
                state.running = False

    def _disk_metrics(self, server: ServerRow, databases: list[DatabaseRow]) -> list[Metric]:
        usage = collectors.read_disk(
            server, databases, self.config.exporter.data_directory, self.config.exporter.disk_capacity_bytes
        )
        if usage is None:
            raise OSError(
                f"data directory {server.data_directory or '(hidden)'} is not visible to the exporter; "
                "set exporter.data_directory or exporter.disk_capacity_bytes"
            )
        return collectors.disk_metrics(usage)

    def _kpi_metrics(self, conn: db.Connection, server: ServerRow, job: _Job) -> list[Metric]:
        if self.kb_dsn is None:
            kpis = collectors.read_kpis(conn, server.system_identifier, server.current_datname, server.kb_present)
            usage = collectors.read_llm_usage(conn, server.system_identifier, server.current_datname)
            return collectors.kpi_metrics(kpis) + collectors.llm_metrics(usage)
        kb = self._kb_conn
        if kb is None or kb.closed:
            kb = self._kb_conn = self._connect(self.kb_dsn, job)
        try:
            db.set_timeouts(
                kb, statement_timeout_ms=self._remaining_ms(job), lock_timeout_ms=self.config.exporter.lock_timeout_ms
            )
            kpis = collectors.read_kpis(kb, server.system_identifier, server.current_datname)
            llm = collectors.read_llm_usage(kb, server.system_identifier, server.current_datname)
        except PgArchitectError:
            _close(kb)
            self._kb_conn = None
            raise
        return collectors.kpi_metrics(kpis) + collectors.llm_metrics(llm)

    # -- results --------------------------------------------------------------------------------
    def _down(self, seconds: float, *, reason: str, up: bool = False) -> list[Metric]:
        """What a failed scrape shows: pg_up and the exporter's own series, nothing stale."""
        log.debug("scrape of %s is down: %s", self.name, redact(reason))
        return [_up(up), *self._self_metrics(seconds, dict.fromkeys(self.groups, False))]

    def _self_metrics(self, seconds: float, success: dict[str, bool]) -> list[Metric]:
        duration = GaugeMetricFamily("pgarch_scrape_duration_seconds", "Time this scrape took.")
        duration.add_metric([], seconds)
        ok = GaugeMetricFamily(
            "pgarch_scrape_collector_success", "1 when the collector group succeeded.", labels=["collector"]
        )
        for name in self.groups:
            ok.add_metric([name], 1.0 if success[name] else 0.0)
        return [duration, ok]

    def _bug(self, key: str, exc: Exception) -> None:
        """An internal error in collector ``key``: logged once with its traceback until it clears."""
        if key not in self._warned:
            self._warned.add(key)
            log.error("internal error in collector %s on %s: %s", key, self.name, redact(repr(exc)), exc_info=exc)

    def _warn(self, key: str, message: str) -> None:
        """Log a problem once until it clears, not on every scrape."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", redact(message))

    def close(self) -> None:
        self._closed = True
        self._pgss_wake.set()
        if self.activity is not None:
            self.activity.stop()
        with self._conn_lock:
            conn, self._conn = self._conn, None
        for c in (conn, self._kb_conn, self._pgss.conn):
            if c is not None:
                _close(c)
        self._kb_conn = None
        self._pgss.conn = None


def _up(value: bool) -> GaugeMetricFamily:
    family = GaugeMetricFamily("pg_up", "1 when the last scrape could connect and read the server.")
    family.add_metric([], 1.0 if value else 0.0)
    return family


def _is_up(families: list[Metric]) -> bool:
    return any(f.name == "pg_up" and f.samples and f.samples[0].value == 1.0 for f in families)


def _statements_age(age: float, interval: float) -> GaugeMetricFamily:
    how = (
        f"it runs on its own interval (exporter.statements_interval_s = {interval:g} s), off the scrape's path, "
        "so pgarch_query_* and pgarch_statement_* are this old"
        if interval > 0
        else "read at scrape time (exporter.statements_interval_s = 0)"
    )
    family = GaugeMetricFamily(
        "pgarch_statements_collection_age_seconds",
        f"Seconds since the pg_stat_statements collection served in this scrape was taken: {how}.",
    )
    family.add_metric([], age)
    return family


def _cancel(conn: db.Connection) -> None:
    try:
        conn.cancel_safe(timeout=5.0)
    except Exception as exc:  # the server may be gone; cancelling is best effort
        log.debug("cancel failed: %s", exc)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception as exc:  # closing a broken connection must not break the scrape
        log.debug("close failed: %s", exc)
