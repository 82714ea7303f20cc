"""One monitored database server: its connection, its state between scrapes, and the scrape itself.

Everything a target remembers lives in its ``Target`` object (never in module globals), so a
``/probe?target=NAME`` endpoint needs only a dictionary of targets. A scrape:

- runs in a worker thread, answered within the budget whatever the database does: at the deadline the
  waiter cancels the running statement and reports ``pg_up 0`` with no database-derived series;
- is shared: scrapes that arrive while one collection runs wait for that one instead of starting more;
- uses one connection, every statement under statement and lock timeouts;
- isolates collector groups: one failing sets its ``pgarch_scrape_collector_success`` to 0, the rest stand.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import DatabaseError, DatabaseUnavailable, PgArchitectError, QueryTimeout, redact
from pg_architect.exporter import collectors
from pg_architect.exporter.models import DatabaseRow, ServerRow
from pg_architect.exporter.statements import StatementTracker

log = logging.getLogger(__name__)

COLLECTORS = ("server", "activity", "databases", "statements", "disk", "knowledge_base")
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


class Target:
    """A database server to scrape, with everything it remembers between scrapes."""

    def __init__(self, name: str, dsn: str, config: Config, *, kb_dsn: str | None = None) -> None:
        self.name = name
        self.dsn = dsn
        self.kb_dsn = kb_dsn if kb_dsn and kb_dsn != dsn else None
        self.config = config
        self._conn: db.Connection | None = None
        self._kb_conn: db.Connection | None = None
        self._conn_lock = threading.Lock()
        self._job: _Job | None = None
        self._job_lock = threading.Lock()
        # State between scrapes, touched only by the collection in progress.
        self.statements = StatementTracker()
        self.histograms: dict[str, collectors.HistogramState] = {}
        self._blocks: dict[str, tuple[int, int]] | None = None
        self._sizes: dict[int, int] = {}  # database sizes, refreshed every database_size_interval_s
        self._sizes_at: float | None = None
        self._system_identifier: str | None = None
        self._warned: set[str] = set()
        self.collections = 0  # collections started, for tests and /healthz-style introspection

    # -- scraping -------------------------------------------------------------------------------
    def scrape(self, budget_s: float | None = None) -> list[Metric]:
        """Collect every metric family, answering within ``budget_s`` seconds."""
        budget = min(budget_s or self.config.exporter.scrape_budget_s, self.config.exporter.scrape_budget_s)
        started = time.monotonic()
        deadline = started + budget
        with self._job_lock:
            job = self._job
            # Join a collection in progress unless it is already past its own deadline (abandoned).
            if job is None or job.done.is_set() or job.abandoned or job.deadline <= started:
                job = _Job(deadline=deadline)
                self._job = job
                threading.Thread(target=self._run, args=(job,), name=f"scrape-{self.name}", daemon=True).start()
        if job.done.wait(timeout=max(deadline - time.monotonic(), 0.0)) and job.result is not None:
            return job.result
        self._abandon(job)
        return self._down(time.monotonic() - started, reason="the scrape budget ran out")

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
        return self._connect(self.dsn, job)

    def _connect(self, dsn: str, job: _Job) -> db.Connection:
        """A connection that gives up connecting when the scrape's budget does (at most 10 s)."""
        timeouts = db.policy(self.config, db.Role.EXPORTER)
        connect_s = min(job.deadline - time.monotonic(), 10)
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
        success: dict[str, bool] = dict.fromkeys(COLLECTORS, False)
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
            success["server"] = True
            healthy = True
            self._warned.difference_update({"connect", "down", "server", "scrape"})
            if server.system_identifier != self._system_identifier:
                # Another server answers at this address now (failover, restore): start over.
                self.statements.forget()
                self._blocks = None
                self._sizes_at = None
                self._system_identifier = server.system_identifier
            families += self._guarded(
                success,
                "activity",
                job,
                lambda: collectors.server_metrics(server, collectors.read_activity(conn, server)),
            )
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

    def _statement_metrics(self, conn: db.Connection, server: ServerRow, databases: list[DatabaseRow]) -> list[Metric]:
        if not databases:
            # Without names the histograms would be relabelled or dropped; keep the baseline for next time.
            raise DatabaseError("statements need the database list, which failed in this scrape")
        rows, info = collectors.read_statements(conn, server)
        window = self.statements.advance(rows, info, time.time())
        datnames = {d.dbid: d.datname for d in databases}
        return collectors.statement_metrics(window, rows, datnames, self.histograms, self.config.exporter.top_queries)

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
            return collectors.kpi_metrics(
                collectors.read_kpis(conn, server.system_identifier, server.current_datname)
            ) + collectors.llm_metrics(
                collectors.read_llm_usage(conn, server.system_identifier, server.current_datname)
            )
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
        return [_up(up), *self._self_metrics(seconds, dict.fromkeys(COLLECTORS, False))]

    def _self_metrics(self, seconds: float, success: dict[str, bool]) -> list[Metric]:
        duration = GaugeMetricFamily("pgarch_scrape_duration_seconds", "Time this scrape took.")
        duration.add_metric([], seconds)
        ok = GaugeMetricFamily(
            "pgarch_scrape_collector_success", "1 when the collector group succeeded.", labels=["collector"]
        )
        for name in COLLECTORS:
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
        with self._conn_lock:
            conn, self._conn = self._conn, None
        for c in (conn, self._kb_conn):
            if c is not None:
                _close(c)
        self._kb_conn = None


def _up(value: bool) -> GaugeMetricFamily:
    family = GaugeMetricFamily("pg_up", "1 when the last scrape could connect and read the server.")
    family.add_metric([], 1.0 if value else 0.0)
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
