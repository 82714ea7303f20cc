"""``pg-architect serve``: the admin API plus the weekly audit, daily snapshot and weekly report on schedule.

Skeleton as in patroni's daemon: the signal handlers (``cli.stop_event``) only set ``stop``; the loop here reads
it at least once a second; the shutdown is in ``finally``. Jobs run on their own threads so the loop, and thus
SIGTERM, is never blocked by a long audit; a failing job is logged and the daemon carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pg_architect.auditor.api import AdminServer
from pg_architect.auditor.audit import AuditOptions, run_audit
from pg_architect.auditor.delivery import slack, weekly
from pg_architect.auditor.delivery.after_audit import api_base_url
from pg_architect.auditor.delivery.pulls import refresh_pull_requests
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import AuditReport
from pg_architect.auditor.scheduler import (
    DAILY_SNAPSHOT,
    WEEKLY_AUDIT,
    WEEKLY_REPORT,
    Schedule,
    Tracker,
    catch_up_audit,
)
from pg_architect.auditor.snapshot import take_snapshot
from pg_architect.auditor.targets import DEFAULT as DEFAULT_TARGET
from pg_architect.auditor.targets import AuditTarget, replica_name
from pg_architect.core import db
from pg_architect.core.config import Config, parse_listen
from pg_architect.core.errors import AuditAlreadyRunning, PgArchitectError, redact

log = logging.getLogger(__name__)

TICK_S = 1.0
RUN_ID_WAIT_S = 10.0
SHUTDOWN_WAIT_S = 5.0


@dataclasses.dataclass
class _Outcome:
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    report: AuditReport | None = None
    error: BaseException | None = None


class AuditRunner:
    """One audit at a time in this process (API and schedule alike); the knowledge base's advisory lock
    covers other processes, and its AuditAlreadyRunning reaches the API caller as 409."""

    def __init__(self, cfg: Config, dsn: str, kb_dsn: str, targets: list[AuditTarget] | None = None) -> None:
        self.cfg = cfg
        self.dsn = dsn
        self.kb_dsn = kb_dsn
        # What the admin API's run-audit audits: every target in turn (or the one database).
        self.targets = targets or [AuditTarget(DEFAULT_TARGET, dsn)]
        self._busy = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, options: AuditOptions) -> str | None:
        """Start an audit on a background thread; return its run id once its run row exists."""
        if not self._busy.acquire(blocking=False):
            raise AuditAlreadyRunning("an audit is already running in this daemon")
        try:
            kb = KnowledgeBase.open(self.kb_dsn, self.cfg, role=db.Role.DAEMON, migrate=False)
        except BaseException:
            self._busy.release()
            raise
        try:
            # The knowledge base's clock stamps the run row, so "since" must come from it too.
            since = kb.clock()
            outcome = _Outcome()
            thread = threading.Thread(target=self._run, args=(options, outcome), name="audit-api", daemon=True)
            self._threads.append(thread)
            thread.start()
            return self._wait_for_run_id(kb, options.trigger, since, outcome)
        finally:
            kb.close()

    def _wait_for_run_id(self, kb: KnowledgeBase, trigger: str, since: datetime, outcome: _Outcome) -> str | None:
        deadline = time.monotonic() + RUN_ID_WAIT_S
        while True:
            finished = outcome.done.is_set()  # read before the query: a finished audit's row is visible
            run_id = kb.run_started_since(trigger, since)
            if run_id is not None:
                return run_id
            if finished:
                if outcome.report is not None:
                    return outcome.report.run_id
                if outcome.error is not None:
                    raise outcome.error
            if time.monotonic() > deadline:
                log.warning("audit started, but its run row did not appear within %.0f s", RUN_ID_WAIT_S)
                return None
            outcome.done.wait(0.05)

    def _run(self, options: AuditOptions, outcome: _Outcome) -> None:
        try:
            for target in self.targets:
                report = run_audit(self.cfg, target.dsn, self.kb_dsn, options)
                outcome.report = outcome.report or report
        except BaseException as exc:
            outcome.error = exc
            log.error("audit (%s) failed: %s", options.trigger, redact(str(exc)) or type(exc).__name__)
        finally:
            self._busy.release()
            outcome.done.set()

    def run_blocking(self, options: AuditOptions, target: AuditTarget | None = None) -> AuditReport | None:
        """Run an audit of ``target`` (the one database by default) on the calling thread; None (logged) when
        one is already running."""
        if not self._busy.acquire(blocking=False):
            log.warning("scheduled audit skipped: an audit is already running in this daemon")
            return None
        try:
            return run_audit(self.cfg, (target or self.targets[0]).dsn, self.kb_dsn, options)
        except AuditAlreadyRunning as exc:
            log.warning("scheduled audit skipped: %s", exc)
            return None
        finally:
            self._busy.release()

    def running(self) -> list[threading.Thread]:
        self._threads = [t for t in self._threads if t.is_alive()]
        return list(self._threads)


class Daemon:
    """The scheduled jobs; ``run`` below wires them to the API and the loop."""

    def __init__(self, cfg: Config, dsn: str, kb_dsn: str, runner: AuditRunner) -> None:
        self.cfg = cfg
        self.dsn = dsn
        self.kb_dsn = kb_dsn
        self.runner = runner
        self.jobs: dict[str, Callable[[datetime | None], None]] = {
            WEEKLY_AUDIT: self.weekly_audit,
            DAILY_SNAPSHOT: self.daily_snapshot,
            WEEKLY_REPORT: self.weekly_report,
        }
        self._threads: dict[str, threading.Thread] = {}
        self.replica = replica_name()

    def launch(self, name: str, slot: datetime | None = None) -> None:
        """Run job ``name`` (for its scheduled ``slot``) on its own thread, unless its previous run is still going."""
        previous = self._threads.get(name)
        if previous is not None and previous.is_alive():
            log.warning("%s skipped: its previous run is still going", name)
            return
        thread = threading.Thread(target=self._guarded, args=(name, slot), name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def _guarded(self, name: str, slot: datetime | None = None) -> None:
        log.info("%s: starting", name)
        try:
            self.jobs[name](slot)
        except Exception as exc:  # a failing job never takes the daemon down
            log.error("%s failed: %s", name, redact(str(exc)) or type(exc).__name__)
            log.debug("%s failed", name, exc_info=True)

    def _mine(self, job: str, slot: datetime | None) -> list[AuditTarget]:
        """The targets this replica runs ``job`` for in ``slot``: those whose claim it won (all of them for a run
        outside the schedule, such as a catch-up without a known slot)."""
        if slot is None:
            return list(self.runner.targets)
        kb = self._open_kb()
        try:
            mine = [t for t in self.runner.targets if kb.claim_job(t.name, job, slot, self.replica)]
        finally:
            kb.close()
        skipped = [t.name for t in self.runner.targets if t not in mine]
        if skipped:
            log.info("%s: %s claimed by another replica for %s", job, ", ".join(skipped), slot.isoformat())
        return mine

    def weekly_audit(self, slot: datetime | None = None) -> None:
        for target in self._mine(WEEKLY_AUDIT, slot):
            report = self.runner.run_blocking(AuditOptions.from_config(self.cfg, trigger="schedule"), target)
            if report is not None:
                log.info(
                    "weekly audit %s of %s done: %d recommendation(s) for %d slow statement(s)",
                    report.run_id,
                    target.name,
                    report.kpis.recommended,
                    report.kpis.slow_queries,
                )

    def daily_snapshot(self, slot: datetime | None = None) -> None:
        for target in self._mine(DAILY_SNAPSHOT, slot):
            try:
                log.info("daily snapshot: %s", take_snapshot(self.cfg, target.dsn, self.kb_dsn, kind="daily"))
            except PgArchitectError as exc:  # one unreachable target never stops the others
                log.error("daily snapshot of %s failed: %s", target.name, redact(str(exc)))

    def weekly_report(self, slot: datetime | None = None) -> None:
        """Monday's report: to Slack when configured (a failure is counted, never raised), and to the log."""
        kb = self._open_kb()
        try:
            try:
                for change in refresh_pull_requests(self.cfg, kb):
                    log.info("weekly report: %s", change)
            except PgArchitectError as exc:
                kb.record_failure("github", redact(str(exc)), target_id=None, run_id=None)
                log.warning("weekly report: pull request states not refreshed: %s", redact(str(exc)))
            week = weekly.build(kb, api_base_url(self.cfg) + "/admin/database/report")
            outcome = slack.send_weekly(
                self.cfg.secret("slack_webhook_url"),
                week,
                lambda error: kb.record_failure("slack", error, target_id=None, run_id=None),
            )
        finally:
            kb.close()
        if week.run is None:
            log.warning("weekly report: no successful audit yet")
        else:
            log.info("weekly report ready for run %s: %s\n%s", week.run.get("run_id"), outcome, weekly.markdown(week))

    def last_success(self) -> datetime | None:
        """When the last successful audit started (None when there is none); migrates the schema first."""
        kb = KnowledgeBase.open(self.kb_dsn, self.cfg, role=db.Role.DAEMON)
        try:
            doc = kb.latest_report("ok")
        finally:
            kb.close()
        started = doc.get("started_at") if doc else None
        return datetime.fromisoformat(started) if isinstance(started, str) else None

    def _open_kb(self) -> KnowledgeBase:
        return KnowledgeBase.open(self.kb_dsn, self.cfg, role=db.Role.DAEMON)

    def running(self) -> list[threading.Thread]:
        return [t for t in self._threads.values() if t.is_alive()]


def run(
    cfg: Config,
    dsn: str,
    kb_dsn: str,
    stop: threading.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    targets: list[AuditTarget] | None = None,
) -> None:
    """Serve the admin API and run the schedule for ``targets`` (the one database ``dsn`` by default) until
    ``stop`` is set."""
    schedule = Schedule.from_config(cfg.auditor.schedule)
    runner = AuditRunner(cfg, dsn, kb_dsn, targets)
    daemon = Daemon(cfg, dsn, kb_dsn, runner)
    host, port = parse_listen(cfg.auditor.api.listen)
    try:
        server = AdminServer((host, port), cfg, kb_dsn, runner)
    except OSError as exc:
        raise PgArchitectError(f"cannot listen on {cfg.auditor.api.listen}: {exc.strerror or exc}") from exc
    if server.token is None:
        log.warning("no API token configured: every /admin/ call is refused (set PG_ARCHITECT_API_TOKEN)")
    server_thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="admin-api", daemon=True
    )
    try:
        now = clock()
        try:
            last = daemon.last_success()
        except PgArchitectError as exc:  # the KB may come back later; /readyz says so meanwhile
            log.error("knowledge base unavailable at start: %s", redact(str(exc)))
        else:
            if catch_up_audit(last, now):
                log.info("catch-up: the last successful audit started %s, over 7 days ago; auditing now", last)
                assert last is not None
                # The missed slot, the same for every replica reading this knowledge base: one catch-up each.
                weekly = next(job for job in schedule.jobs if job.name == WEEKLY_AUDIT)
                daemon.launch(WEEKLY_AUDIT, schedule.next_slot(weekly, last))
        server_thread.start()
        log.info("admin API listening on http://%s:%d (timezone %s)", host, server.server_port, schedule.tz.key)
        tracker = Tracker(schedule, now)
        for when, name in schedule.next_runs(now):
            log.info("next %s at %s", name, when.astimezone(schedule.tz).isoformat())
        while not stop.is_set():
            now = clock()
            for name, slot in tracker.due_slots(now):
                daemon.launch(name, slot)
            wait = (tracker.next_due() - clock()).total_seconds()
            stop.wait(min(TICK_S, max(wait, 0.0)))
    finally:
        log.info("stopping")
        if server_thread.is_alive():
            server.shutdown()
        server.server_close()
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for thread in daemon.running() + runner.running():
            thread.join(max(deadline - time.monotonic(), 0.0))
        left = daemon.running() + runner.running()
        if left:
            # Their connections close with the process; the next audit marks a run left "running" as failed.
            log.warning("stopped with %s still running", ", ".join(t.name for t in left))
