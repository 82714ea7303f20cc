"""The knowledge base: schema ``pgarch``, in the audited database or in ``database.kb_dsn``.

Versioned migrations are applied on open. One audit at a time per knowledge base (a session advisory
lock); an audit's results are written in one transaction at its end, so a crash leaves no half-written
rows, and a run left "running" by a dead auditor is marked failed by the next one to take the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from pg_architect.auditor.models import AuditReport, SlowQuery
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import AuditAlreadyRunning, DatabaseError
from pg_architect.core.pgss import SnapshotRow, StatementRow

log = logging.getLogger(__name__)

# Advisory lock keys (arbitrary, fixed): one for migrations, one for "an audit is running".
MIGRATION_LOCK = 0x70676172636801
AUDIT_LOCK = 0x70676172636802  # the base of the per-target audit locks (audit_lock_key)
# A run stores at most auditor.thresholds.limit recommendations; this bounds the report's overlay query.
MAX_RUN_RECOMMENDATIONS = 1000
_MIGRATION = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclasses.dataclass(frozen=True, slots=True)
class Baseline:
    snapshot_id: int
    taken_at: datetime
    kind: str


@dataclasses.dataclass(frozen=True, slots=True)
class SimilarRecommendation:
    recommendation_id: int
    fingerprint: str
    query: str
    type: str
    sql: str
    status: str
    action: str
    confidence: float
    gain_percent: float | None
    worth_applying: bool
    created_at: datetime
    run_id: str
    similarity: float
    decision: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    mean_ms: float | None = None  # the statement's figures when it was recommended
    calls: int | None = None
    kind: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Id:
    target_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class _SnapshotId:
    snapshot_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Version:
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class _RunId:
    run_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class _RunRow:
    run_id: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    report: dict[str, Any] | None
    target_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _OutcomeCounts:
    applied: int
    rejected: int


@dataclasses.dataclass(frozen=True, slots=True)
class HealthPoint:
    """One stored daily health record (see snapshot.health_metrics)."""

    taken_at: datetime
    metrics: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Optimization:
    """A stored recommendation with its statement, as the admin API lists them."""

    recommendation_id: int
    run_id: str
    created_at: datetime
    type: str
    sql: str
    rollback_sql: str | None
    reasoning: str
    confidence: float
    source: str
    gain_percent: float | None
    worth_applying: bool
    action: str
    pr_url: str | None
    status: str
    query: str
    fingerprint: str
    status_changed_at: datetime | None = None
    applied_at: datetime | None = None
    applied_index: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    outcome: str | None = None
    before_mean_ms: float | None = None
    after_mean_ms: float | None = None
    measured_gain_percent: float | None = None
    time_saved_ms: float | None = None
    provisional: bool | None = None
    verified_at: datetime | None = None
    dropped_at: datetime | None = None
    plan_note: str | None = None

    def outcome_json(self) -> dict[str, Any] | None:
        """The contract's ``outcome`` object (None until the recommendation is applied and verified)."""
        if self.outcome is None:
            return None
        return {
            "result": self.outcome,
            "before_mean_ms": _round(self.before_mean_ms),
            "after_mean_ms": _round(self.after_mean_ms),
            "measured_gain_percent": _round(self.measured_gain_percent),
            "predicted_gain_percent": _round(self.gain_percent),
            "time_saved_seconds": _round((self.time_saved_ms or 0.0) / 1000.0),
            "provisional": self.provisional,
            "verified_at": _iso(self.verified_at),
            "index_dropped_at": _iso(self.dropped_at),
            "plan_note": self.plan_note,
        }

    def as_json(self) -> dict[str, Any]:
        doc = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name
            not in (
                "outcome",
                "before_mean_ms",
                "after_mean_ms",
                "measured_gain_percent",
                "time_saved_ms",
                "provisional",
                "verified_at",
                "dropped_at",
                "plan_note",
            )
        }
        for key, value in doc.items():
            if isinstance(value, datetime):
                doc[key] = value.isoformat()
        doc["outcome"] = self.outcome_json()
        return doc


def audit_lock_key(target_id: int) -> int:
    """The advisory lock key of one target's audits (one bigint per target, above the fixed keys)."""
    return (AUDIT_LOCK << 8) + target_id


@dataclasses.dataclass(frozen=True, slots=True)
class PrRecommendation:
    """A stored recommendation at the pull-request threshold, with its statement's numbers."""

    recommendation_id: int
    run_id: str
    target_id: int | None
    fingerprint: str
    query: str
    type: str
    sql: str
    rollback_sql: str | None
    reasoning: str
    confidence: float
    action: str
    gain_percent: float | None
    measurement: dict[str, Any] | None
    calls: int | None
    mean_ms: float | None
    total_ms: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class NewDelivery:
    recommendation_id: int
    channel: str  # github | local_git
    repo: str
    base_branch: str
    branch: str
    commit_sha: str | None
    migration_format: str
    migration_path: str
    pr_number: int | None
    pr_url: str | None
    state: str  # committed | pr_open | merged | closed


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: int
    recommendation_id: int
    channel: str
    repo: str
    base_branch: str
    branch: str
    commit_sha: str | None
    migration_format: str
    migration_path: str
    pr_number: int | None
    pr_url: str | None
    state: str
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryView(Delivery):
    """A delivery with the recommendation it carries."""

    run_id: str
    sql: str
    confidence: float
    action: str
    gain_percent: float | None
    query: str


@dataclasses.dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    slow_queries: int
    recommended: int
    prs_created: int
    manual_review: int
    avg_confidence: float
    avg_gain_percent: float
    datname: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class HealthRecord:
    taken_at: datetime
    metrics: dict[str, Any]
    datname: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyPoint:
    """Every statement's calls and mean time between one pg_stat_statements snapshot and the one before."""

    taken_at: datetime
    calls: list[float]
    mean_ms: list[float]


@dataclasses.dataclass(frozen=True, slots=True)
class AppliedGain:
    recommendation_id: int
    sql: str
    gain_percent: float | None
    applied_at: datetime
    query: str
    calls: int | None
    mean_ms: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle transition of a recommendation."""

    at: datetime
    from_status: str | None
    to_status: str
    source: str
    actor: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "at": self.at.isoformat()}


@dataclasses.dataclass(frozen=True, slots=True)
class Tracked:
    """A recommendation whose lifecycle still moves (pending, pr_open, merged, applied)."""

    recommendation_id: int
    target_id: int
    status: str
    type: str
    sql: str
    fingerprint: str
    query: str
    pr_url: str | None
    gain_percent: float | None
    index_signature: str | None
    absent_checked_at: datetime | None
    applied_at: datetime | None
    applied_index: str | None
    created_at: datetime
    kind: str | None
    family: str | None
    plan_after: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotRef:
    snapshot_id: int
    taken_at: datetime
    stats_reset: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    """One statement's calls, time and rows over a window."""

    calls: int
    total_ms: float
    rows: int

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0

    @property
    def rows_per_call(self) -> float:
        return self.rows / self.calls if self.calls else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class WindowFigures:
    fingerprint: str
    calls: int
    total_ms: float


@dataclasses.dataclass(frozen=True, slots=True)
class RowsPerCall:
    before: float | None
    within: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleSummary:
    pending_review: int
    oldest_pending_days: float | None
    accepted_waiting: int
    applied_this_month: int
    applied_total: int
    verified: int
    improved: int
    regressed: int
    average_gain_percent: float | None
    time_saved_seconds: float

    @property
    def accuracy(self) -> float | None:
        return self.improved / self.verified if self.verified else None


@dataclasses.dataclass(frozen=True, slots=True)
class Reminder:
    recommendation_id: int
    status: str
    created_at: datetime
    sql: str
    action: str
    age_days: float


@dataclasses.dataclass(frozen=True, slots=True)
class Accuracy:
    kind_improved: int
    kind_verified: int
    family_improved: int
    family_verified: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    plan: str


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the auditor, in order."""
    found = []
    for entry in resources.files("pg_architect.auditor.migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


class KnowledgeBase:
    """One connection to the knowledge base and every operation on it."""

    def __init__(
        self,
        conn: db.Connection,
        dsn: str | None = None,
        timeouts: db.Timeouts | None = None,
        reminder_days: int = 14,
    ) -> None:
        self.conn = conn
        self.dsn = dsn
        self.timeouts = timeouts or db.Timeouts()
        self.reminder_days = reminder_days  # auditor.lifecycle.pending_reminder_days
        self._similarity_indexes: set[tuple[int, str]] = set()
        self._similarity_session = False

    @classmethod
    def open(
        cls, dsn: str, cfg: Config | None = None, *, role: db.Role = db.Role.KNOWLEDGE_BASE, migrate: bool = True
    ) -> KnowledgeBase:
        """A session on the knowledge base for ``role``; ``migrate`` brings the schema up to date first (the
        API's short request sessions skip it: the daemon migrated on start)."""
        timeouts = db.policy(cfg, role) if cfg is not None else db.Timeouts()
        conn = db.connect(dsn, role, timeouts)
        kb = cls(conn, dsn, timeouts, cfg.auditor.lifecycle.pending_reminder_days if cfg is not None else 14)
        try:
            if migrate:
                kb.migrate()
            db.register_vector(conn)
        except BaseException:
            conn.close()
            raise
        return kb

    def close(self) -> None:
        self.conn.close()

    def _sql(self, name: str) -> db.Query:
        return db.query(self.conn, QUERIES, name)

    # -- schema ----------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the migrations this knowledge base lacks; returns the versions applied."""
        applied: list[int] = []
        with db.transaction(self.conn):
            db.fetch_value(self.conn, self._sql("kb_migration_lock"), (MIGRATION_LOCK,))
            # CREATE SCHEMA checks the database's CREATE privilege even when the schema exists, and a
            # knowledge-base role that only owns its schema (docs/security.md) has none: ask first.
            if db.fetch_value(self.conn, "SELECT pg_catalog.to_regnamespace('pgarch') IS NULL"):
                db.execute(self.conn, "CREATE SCHEMA pgarch")
            db.execute(self.conn, self._sql("kb_migrations_table"))
            done = {row.version for row in db.fetch(self.conn, self._sql("kb_migrations_done"), None, _Version)}
            for version, name, text in migrations():
                if version in done:
                    continue
                log.info("knowledge base: applying migration %03d_%s", version, name)
                db.execute(self.conn, text)
                db.execute(self.conn, self._sql("kb_migration_applied"), (version, name))
                applied.append(version)
        return applied

    # -- targets and the audit lock ----------------------------------------------------------------
    def register_target(self, system_identifier: str, datname: str, server_version: int) -> int:
        row = db.fetch_one(
            self.conn,
            self._sql("kb_register_target"),
            {"system_identifier": system_identifier, "datname": datname, "server_version": server_version},
            _Id,
        )
        assert row is not None
        return row.target_id

    @contextlib.contextmanager
    def audit_lock(self, target_id: int) -> Iterator[list[str]]:
        """Hold the one-audit-at-a-time lock of one target (other targets' audits go on in other replicas);
        yields the ids of this target's stale runs it marked failed."""
        key = audit_lock_key(target_id)
        if not db.advisory_lock(self.conn, key):
            raise AuditAlreadyRunning("another audit of this database is running on this knowledge base")
        try:
            params = {"target_id": target_id}
            stale = [r.run_id for r in db.fetch(self.conn, self._sql("kb_fail_stale_runs"), params, _RunId)]
            if stale:
                log.warning("marked %d interrupted audit run(s) as failed: %s", len(stale), ", ".join(stale))
            yield stale
        finally:
            with contextlib.suppress(DatabaseError):
                db.advisory_unlock(self.conn, key)

    def claim_job(self, target: str, job: str, slot: datetime, by: str) -> bool:
        """Claim ``job`` of ``target`` for its ``slot``; True for exactly one replica."""
        params = {"target": target, "job": job, "slot": slot, "by": by}
        return db.fetch_value(self.conn, self._sql("kb_claim_job"), params) is not None

    # -- runs --------------------------------------------------------------------------------------
    def start_run(self, target_id: int, trigger: str, dry_run: bool) -> tuple[str, datetime]:
        run_id = str(uuid.uuid4())
        started = db.fetch_value(
            self.conn,
            self._sql("kb_start_run"),
            {"run_id": run_id, "target_id": target_id, "trigger": trigger, "dry_run": dry_run},
        )
        return run_id, started

    def fail_run(self, run_id: str, error: str, report: AuditReport | None = None) -> None:
        """Mark the run failed; an interrupt may have left our connection mid-statement, so retry on a new one."""
        params = {
            "run_id": run_id,
            "error": error[:2000],
            "report": json.dumps(report.as_json()) if report is not None else None,
        }
        try:
            db.execute(self.conn, self._sql("kb_fail_run"), params)
        except DatabaseError:
            if self.dsn is None:
                raise
            with db.connect(self.dsn, db.Role.KNOWLEDGE_BASE, self.timeouts) as conn:
                db.execute(conn, self._sql("kb_fail_run"), params)

    def finish_run(
        self,
        report: AuditReport,
        target_id: int,
        embeddings: dict[str, list[float]],
        embedding_model: str,
        after: Callable[[db.Connection, dict[str, int]], None] | None = None,
    ) -> None:
        """Write the run's slow queries and recommendations and close it, all in one transaction.

        ``after`` (the LLM architect's store) writes in the same transaction, given the recommendation ids
        by fingerprint."""
        recommendation_ids: dict[str, int] = {}
        with db.transaction(self.conn):
            for q in report.slow_queries:
                slow_id = db.fetch_value(self.conn, self._sql("kb_insert_slow_query"), _slow_params(report, q))
                rec = q.recommendation
                if rec is None:
                    continue
                m = rec.measurement
                worth = bool(m and m.worth_applying)
                rec_id = db.fetch_value(
                    self.conn,
                    self._sql("kb_insert_recommendation"),
                    {
                        "run_id": report.run_id,
                        "slow_query_id": slow_id,
                        "target_id": target_id,
                        "fingerprint": q.fingerprint,
                        "query": q.query,
                        "type": rec.type,
                        "sql": rec.sql,
                        "rollback_sql": rec.rollback_sql,
                        "reasoning": rec.reasoning,
                        "confidence": rec.confidence,
                        "source": rec.source,
                        "measurement": json.dumps(dataclasses.asdict(m)) if m else None,
                        "gain_percent": m.gain_percent if m else None,
                        "worth_applying": worth,
                        "action": rec.action,
                        "pr_url": rec.pr_url,
                        "status": "pending" if worth else "not_worth",
                        "embedding": _vector(embeddings[q.fingerprint]),
                        "embedding_model": embedding_model,
                        "kind": rec.kind,
                        "family": rec.family,
                    },
                )
                if worth:
                    db.execute(
                        self.conn,
                        self._sql("kb_supersede"),
                        {"target_id": target_id, "fingerprint": q.fingerprint, "new_id": rec_id},
                    )
                if m is not None and m.plan_before:
                    db.execute(
                        self.conn,
                        self._sql("kb_store_plan"),
                        {
                            "target_id": target_id,
                            "fingerprint": q.fingerprint,
                            "taken_at": report.finished_at,
                            "mean_ms": q.mean_ms,
                            "plan": m.plan_before,
                        },
                    )
                recommendation_ids[q.fingerprint] = rec_id
            if after is not None:
                after(self.conn, recommendation_ids)
            k = report.kpis
            db.execute(
                self.conn,
                self._sql("kb_finish_run"),
                {
                    "run_id": report.run_id,
                    "status": report.status,
                    "error": report.error,
                    "finished_at": report.finished_at,
                    "window_from": report.window.start if report.window else None,
                    "window_to": report.window.end if report.window else None,
                    "window_source": report.window.source if report.window else None,
                    "slow_queries": k.slow_queries,
                    "recommended": k.recommended,
                    "prs_created": k.prs_created,
                    "manual_review": k.manual_review,
                    "avg_confidence": k.avg_confidence,
                    "avg_gain_percent": k.avg_gain_percent,
                    "stuck": report.stuck,
                    "report": json.dumps(report.as_json()),
                },
            )

    def run_report(self, run_id: str) -> dict[str, Any] | None:
        row = db.fetch_one(self.conn, self._sql("kb_run_report"), (run_id,), _RunRow)
        if row is None:
            return None
        if row.report is not None:
            report = dict(row.report)
            report["status"] = row.status
            report["error"] = row.error or report.get("error")
            self._current(report, row)
            return report
        return {
            "run_id": row.run_id,
            "status": row.status,
            "error": row.error,
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        }

    def _current(self, report: dict[str, Any], row: _RunRow) -> None:
        """Bring a stored report's recommendations up to date: their lifecycle status and verified outcome,
        and the lifecycle section as it stands now."""
        recs = {o.fingerprint: o for o in self.optimizations(MAX_RUN_RECOMMENDATIONS, 0, run_id=row.run_id)}
        for q in report.get("slow_queries") or []:
            rec = q.get("recommendation")
            stored = recs.get(q.get("fingerprint") or "")
            if rec is None or stored is None:
                continue
            rec["recommendation_id"] = stored.recommendation_id
            rec["status"] = stored.status if stored.status != "not_worth" else None
            rec["outcome"] = stored.outcome_json()
            rec["pr_url"] = stored.pr_url or rec.get("pr_url")
        if row.target_id is not None:
            report["lifecycle"] = self.lifecycle_report(row.target_id, self.clock(), self.reminder_days)

    def lifecycle_report(self, target_id: int, now: datetime, reminder_days: int) -> dict[str, Any]:
        """The report's ``lifecycle`` section: pending review (and the oldest), reminders, applied this month,
        verified outcomes, accuracy, average gain and time saved."""
        s = self.lifecycle_summary(target_id, now)
        reminders = self.reminders(target_id, now, timedelta(days=reminder_days))
        return {
            "pending_review": s.pending_review,
            "oldest_pending_days": None if s.oldest_pending_days is None else round(s.oldest_pending_days, 1),
            "accepted_waiting": s.accepted_waiting,
            "applied_this_month": s.applied_this_month,
            "applied_total": s.applied_total,
            "verified": s.verified,
            "improved": s.improved,
            "regressed": s.regressed,
            "accuracy_ratio": None if s.accuracy is None else round(s.accuracy, 4),
            "average_gain_percent": None if s.average_gain_percent is None else round(s.average_gain_percent, 2),
            "time_saved_seconds": round(s.time_saved_seconds, 3),
            "reminder_after_days": reminder_days,
            "reminders": [
                {
                    "recommendation_id": r.recommendation_id,
                    "status": r.status,
                    "age_days": round(r.age_days, 1),
                    "action": r.action,
                    "sql": r.sql,
                }
                for r in reminders
            ],
        }

    def latest_report(self, status: str | None = "ok") -> dict[str, Any] | None:
        """The report of the newest run with ``status`` (any status when None)."""
        run_id = self.latest_run_id(status)
        return self.run_report(run_id) if run_id else None

    def schema_ready(self) -> bool:
        """Whether the knowledge base's schema is there (readiness)."""
        return bool(db.fetch_value(self.conn, self._sql("api_ready")))

    def clock(self) -> datetime:
        """The knowledge base's own time: runs are stamped with it, so waits on them must use it too."""
        value: datetime = db.fetch_value(self.conn, "SELECT pg_catalog.statement_timestamp() /* pg-architect */")
        return value

    def run_started_since(self, trigger: str, since: datetime) -> str | None:
        """The first run with ``trigger`` started at or after ``since`` (the knowledge base's clock)."""
        value = db.fetch_value(self.conn, self._sql("api_current_run"), {"trigger": trigger, "since": since})
        return str(value) if value is not None else None

    def optimizations(
        self, limit: int, offset: int, status: str | None = None, run_id: str | None = None
    ) -> list[Optimization]:
        """Recommendations newest first, optionally of one status or one run, with their outcome."""
        return db.fetch(
            self.conn,
            self._sql("api_optimizations"),
            {"limit": limit, "offset": offset, "status": status, "recommendation_id": None, "run_id": run_id},
            Optimization,
        )

    def optimization(self, recommendation_id: int) -> Optimization | None:
        rows = db.fetch(
            self.conn,
            self._sql("api_optimizations"),
            {"limit": 1, "offset": 0, "status": None, "recommendation_id": recommendation_id, "run_id": None},
            Optimization,
        )
        return rows[0] if rows else None

    def events(self, recommendation_id: int) -> list[Event]:
        return db.fetch(self.conn, self._sql("kb_events"), {"recommendation_id": recommendation_id}, Event)

    def health_history(self, target_id: int, days: int = 30) -> list[HealthPoint]:
        """Daily health records of the last ``days`` days, oldest first (growth forecasts fit them)."""
        return db.fetch(self.conn, self._sql("kb_health_history"), (target_id, days), HealthPoint)

    def latest_run_id(self, status: str | None = "ok") -> str | None:
        value = db.fetch_value(
            self.conn,
            self._sql("kb_latest_run"),
            {"status": status},
        )
        return str(value) if value is not None else None

    # -- pg_stat_statements snapshots ------------------------------------------------------------------
    def store_snapshot(
        self,
        target_id: int,
        kind: str,
        taken_at: datetime,
        rows: Sequence[SnapshotRow],
        stats_reset: datetime | None,
        dealloc: int | None,
        fingerprints: dict[int, str] | None = None,
    ) -> int:
        with db.transaction(self.conn):
            snap = db.fetch_one(
                self.conn,
                self._sql("kb_store_snapshot"),
                {
                    "target_id": target_id,
                    "kind": kind,
                    "stats_reset": stats_reset,
                    "dealloc": dealloc,
                    "taken_at": taken_at,
                },
                _SnapshotId,
            )
            assert snap is not None
            fps = fingerprints or {}
            db.copy_rows(
                self.conn,
                "pgarch",
                "pgss_snapshot_rows",
                (
                    "snapshot_id",
                    "userid",
                    "dbid",
                    "queryid",
                    "toplevel",
                    "fingerprint",
                    "calls",
                    "total_exec_ms",
                    "stddev_exec_ms",
                    "min_exec_ms",
                    "max_exec_ms",
                    "rows",
                    "shared_blks_hit",
                    "shared_blks_read",
                    "stats_since",
                    "query",
                ),
                (
                    (
                        snap.snapshot_id,
                        r.userid,
                        r.dbid,
                        r.queryid,
                        r.toplevel,
                        fps.get(r.queryid),
                        r.calls,
                        r.total_ms,
                        r.stddev_ms,
                        r.min_ms,
                        r.max_ms,
                        r.rows,
                        r.shared_blks_hit,
                        r.shared_blks_read,
                        r.stats_since,
                        r.query,
                    )
                    for r in _dedupe(rows)
                ),
            )
        return snap.snapshot_id

    def baseline(
        self,
        target_id: int,
        now: datetime,
        stats_reset: datetime | None,
        window: timedelta = timedelta(days=7),
        min_age: timedelta = timedelta(hours=1),
    ) -> Baseline | None:
        return db.fetch_one(
            self.conn,
            self._sql("kb_baseline_snapshot"),
            {"target_id": target_id, "now": now, "stats_reset": stats_reset, "window": window, "min_age": min_age},
            Baseline,
        )

    def snapshot_rows(self, snapshot_id: int) -> list[StatementRow]:
        return list(
            map(
                StatementRow._make,
                db.fetch_tuples(self.conn, self._sql("kb_snapshot_rows"), {"snapshot_id": snapshot_id}),
            )
        )

    # -- similarity ----------------------------------------------------------------------------------
    def ensure_similarity_index(self, target_id: int, model: str) -> None:
        """A partial HNSW index over one target's recommendations of one embedding model.

        The look-up filters on both; over the one index of the whole table the HNSW scan yields ef_search
        candidates and then drops the other targets' and models' rows, so with many targets it returned fewer
        than asked, or the planner sorted the table instead. The partial index holds exactly the rows the
        look-up wants (created once per target and model; fast while the target is new)."""
        if (target_id, model) in self._similarity_indexes:
            return
        digest = hashlib.sha1(model.encode()).hexdigest()[:8]
        name = f"recommendations_embedding_t{target_id}_{digest}_idx"
        try:
            with db.transaction(self.conn):
                # A knowledge base that already holds this target's rows builds it once, longer than a
                # knowledge-base statement may take: its own budget, and memory so the graph fits.
                db.execute(self.conn, "SET LOCAL statement_timeout = '30min'")
                db.execute(self.conn, "SET LOCAL maintenance_work_mem = '256MB'")
                db.execute(
                    self.conn,
                    db.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON pgarch.recommendations "
                        "USING hnsw (embedding vector_cosine_ops) WHERE target_id = {} AND embedding_model = {}"
                    ).format(db.Identifier(name), db.Literal(target_id), db.Literal(model)),
                )
        except DatabaseError as exc:  # the look-up still works, through the whole table's index
            log.warning("knowledge base: could not build the similarity index %s: %s", name, exc)
            return
        self._similarity_indexes.add((target_id, model))

    def similar(
        self, embedding: Sequence[float], model: str, *, target_id: int | None = None, limit: int = 5
    ) -> list[SimilarRecommendation]:
        """The ``limit`` nearest recommendations of ``model`` (and ``target_id``), nearest first.

        Planned with the values in hand (``force_custom_plan``), so the target's partial index
        (``ensure_similarity_index``) serves it; without one, pgvector >= 0.8 keeps scanning the whole table's
        graph until enough rows pass the filters (``hnsw.iterative_scan``; older versions ignore it)."""
        if not self._similarity_session:
            # Once per session (a round trip each time would cost more than the look-up): this connection is
            # the knowledge base's own, and its other statements are short and planned cheaply either way.
            db.execute(self.conn, "SET plan_cache_mode = force_custom_plan")
            db.execute(self.conn, "SET hnsw.iterative_scan = strict_order")
            self._similarity_session = True
        return db.fetch(
            self.conn,
            self._sql("kb_similar"),
            {"embedding": _vector(embedding), "model": model, "target_id": target_id, "limit": limit},
            SimilarRecommendation,
        )

    def outcome_history(self, fingerprint: str) -> tuple[int, int]:
        """(applied, rejected) counts of past recommendations for this statement's fingerprint."""
        row = db.fetch_one(self.conn, self._sql("kb_outcome_history"), (fingerprint,), _OutcomeCounts)
        return (row.applied, row.rejected) if row is not None else (0, 0)

    # -- the lifecycle --------------------------------------------------------------------------------
    def transition(
        self,
        recommendation_id: int,
        to_status: str,
        *,
        source: str,
        from_statuses: Sequence[str],
        actor: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> str | None:
        """Move a recommendation to ``to_status`` if it is in one of ``from_statuses``, recording the event;
        returns the status it left (None: it was not in one of them, nothing changed)."""
        value = db.fetch_value(
            self.conn,
            self._sql("kb_transition"),
            {
                "recommendation_id": recommendation_id,
                "to_status": to_status,
                "from_statuses": list(from_statuses),
                "source": source,
                "actor": actor,
                "reason": reason,
                "at": at or self.clock(),
            },
        )
        return str(value) if value is not None else None

    def decide(self, recommendation_id: int, decision: str, actor: str, reason: str | None, at: datetime) -> None:
        db.execute(
            self.conn,
            self._sql("kb_decide"),
            {"recommendation_id": recommendation_id, "decision": decision, "actor": actor, "reason": reason, "at": at},
        )

    def tracked(self, target_id: int) -> list[Tracked]:
        return db.fetch(self.conn, self._sql("kb_tracked"), {"target_id": target_id}, Tracked)

    def set_signature(self, recommendation_id: int, signature: str) -> None:
        db.execute(
            self.conn, self._sql("kb_set_signature"), {"recommendation_id": recommendation_id, "signature": signature}
        )

    def mark_absent(self, recommendation_ids: Sequence[int], at: datetime) -> None:
        if recommendation_ids:
            db.execute(self.conn, self._sql("kb_mark_absent"), {"ids": list(recommendation_ids), "at": at})

    def mark_applied_index(self, recommendation_id: int, index: str) -> None:
        db.execute(
            self.conn, self._sql("kb_mark_applied_index"), {"recommendation_id": recommendation_id, "index": index}
        )

    def snapshots_since(self, target_id: int, since: datetime) -> list[SnapshotRef]:
        return db.fetch(
            self.conn, self._sql("kb_target_snapshots"), {"target_id": target_id, "since": since}, SnapshotRef
        )

    def snapshot_before(self, target_id: int, at: datetime) -> SnapshotRef | None:
        return db.fetch_one(self.conn, self._sql("kb_snapshot_before"), {"target_id": target_id, "at": at}, SnapshotRef)

    def statement_figures(self, from_snapshot: int | None, to_snapshot: int, dbid: int, fingerprint: str) -> Figures:
        row = db.fetch_one(
            self.conn,
            self._sql("kb_statement_delta"),
            {"from_snapshot": from_snapshot, "to_snapshot": to_snapshot, "dbid": dbid, "fingerprint": fingerprint},
            Figures,
        )
        return row or Figures(0, 0.0, 0)

    def rows_per_call(self, from_snapshot: int, to_snapshot: int, fingerprint: str) -> RowsPerCall | None:
        """A statement's rows per call before a window and within it (caching checks they are stable)."""
        params = {"from_snapshot": from_snapshot, "to_snapshot": to_snapshot, "fingerprint": fingerprint}
        return db.fetch_one(self.conn, self._sql("kb_rows_per_call"), params, RowsPerCall)

    def window_figures(self, from_snapshot: int | None, to_snapshot: int, dbid: int) -> list[WindowFigures]:
        return db.fetch(
            self.conn,
            self._sql("kb_window_figures"),
            {"from_snapshot": from_snapshot, "to_snapshot": to_snapshot, "dbid": dbid},
            WindowFigures,
        )

    def store_outcome(self, params: dict[str, Any]) -> None:
        db.execute(self.conn, self._sql("kb_store_outcome"), params)

    def outcome_dropped(self, recommendation_id: int, at: datetime) -> None:
        db.execute(self.conn, self._sql("kb_outcome_dropped"), {"recommendation_id": recommendation_id, "at": at})

    def lifecycle_summary(self, target_id: int, now: datetime) -> LifecycleSummary:
        row = db.fetch_one(
            self.conn, self._sql("kb_lifecycle_summary"), {"target_id": target_id, "now": now}, LifecycleSummary
        )
        assert row is not None
        return row

    def reminders(self, target_id: int, now: datetime, older_than: timedelta) -> list[Reminder]:
        return db.fetch(
            self.conn,
            self._sql("kb_pending_reminders"),
            {"target_id": target_id, "now": now, "older_than": older_than},
            Reminder,
        )

    def accuracy(self, kind: str, family: str) -> Accuracy:
        row = db.fetch_one(self.conn, self._sql("kb_kind_accuracy"), {"kind": kind, "family": family}, Accuracy)
        return row or Accuracy(0, 0, 0, 0)

    def latest_plan(self, target_id: int, fingerprint: str, before: datetime) -> str | None:
        row = db.fetch_one(
            self.conn,
            self._sql("kb_latest_plan"),
            {"target_id": target_id, "fingerprint": fingerprint, "before": before},
            _Plan,
        )
        return row.plan if row is not None else None

    def store_plan(self, target_id: int, fingerprint: str, taken_at: datetime, mean_ms: float, plan: str) -> None:
        db.execute(
            self.conn,
            self._sql("kb_store_plan"),
            {
                "target_id": target_id,
                "fingerprint": fingerprint,
                "taken_at": taken_at,
                "mean_ms": mean_ms,
                "plan": plan,
            },
        )

    def purge(self, before: datetime) -> dict[str, int]:
        """Delete what is older than ``before`` (snapshots, health records, old runs' full reports and the slow
        statements that led nowhere, superseded plans); keeps recommendations, outcomes and run KPIs."""
        counts: dict[str, int] = {}
        with db.transaction(self.conn):
            for name in ("snapshots", "health", "plans", "slow_queries", "reports"):
                counts[name] = int(db.fetch_value(self.conn, self._sql(f"kb_purge_{name}"), {"before": before}))
        return counts

    def record_health(self, target_id: int, metrics: dict[str, Any]) -> None:
        db.execute(
            self.conn,
            self._sql("kb_record_health"),
            (target_id, json.dumps(metrics)),
        )

    # -- deliveries (pull requests, local branches) and integration failures ----------------------------
    def pr_recommendations(self, run_id: str) -> list[PrRecommendation]:
        """The run's recommendations at the pull-request threshold (pr_merge, pr_review)."""
        return db.fetch(self.conn, self._sql("kb_pr_recommendations"), {"run_id": run_id}, PrRecommendation)

    def delivery_on_branch(self, channel: str, repo: str, branch: str) -> Delivery | None:
        params = {"channel": channel, "repo": repo, "branch": branch}
        return db.fetch_one(self.conn, self._sql("kb_delivery_by_branch"), params, Delivery)

    def record_delivery(self, delivery: NewDelivery) -> int:
        """Insert or update a recommendation's delivery; a pull request's URL goes on the recommendation too."""
        with db.transaction(self.conn):
            delivery_id = int(db.fetch_value(self.conn, self._sql("kb_record_delivery"), dataclasses.asdict(delivery)))
            if delivery.pr_url and delivery.channel != "github_issue":  # an issue is not the recommendation's PR
                db.execute(
                    self.conn,
                    self._sql("kb_set_pr_url"),
                    {"recommendation_id": delivery.recommendation_id, "pr_url": delivery.pr_url},
                )
        return delivery_id

    def set_delivery_state(self, delivery_id: int, state: str) -> None:
        db.execute(self.conn, self._sql("kb_set_delivery_state"), {"delivery_id": delivery_id, "state": state})

    def deliveries(
        self, states: Sequence[str] | None = None, run_id: str | None = None, limit: int = 100
    ) -> list[DeliveryView]:
        params = {"states": list(states) if states is not None else None, "run_id": run_id, "limit": limit}
        return db.fetch(self.conn, self._sql("kb_deliveries"), params, DeliveryView)

    def record_failure(self, integration: str, error: str, *, target_id: int | None, run_id: str | None) -> None:
        params = {"target_id": target_id, "run_id": run_id, "integration": integration, "error": error[:2000]}
        db.execute(self.conn, self._sql("kb_record_failure"), params)

    def update_run_delivery(self, run_id: str, prs_created: int, report: dict[str, Any]) -> None:
        """Store what delivery did into the run's row and report (``finish_run`` stored them before it)."""
        params = {"run_id": run_id, "prs_created": prs_created, "report": json.dumps(report, default=str)}
        db.execute(self.conn, self._sql("kb_update_run_delivery"), params)

    def run_history(self, days: int = 90) -> list[RunSummary]:
        return db.fetch(self.conn, self._sql("kb_run_history"), {"days": days}, RunSummary)

    def all_health(self, days: int = 90) -> list[HealthRecord]:
        return db.fetch(self.conn, self._sql("kb_all_health"), {"days": days}, HealthRecord)

    def latency_history(self, days: int = 90) -> list[LatencyPoint]:
        return db.fetch(self.conn, self._sql("kb_latency_history"), {"days": days}, LatencyPoint)

    def applied_gains(self, days: int = 31) -> list[AppliedGain]:
        return db.fetch(self.conn, self._sql("kb_applied_gains"), {"days": days}, AppliedGain)


def _vector(values: Iterable[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


def _dedupe(rows: Sequence[SnapshotRow]) -> Iterable[SnapshotRow]:
    seen: set[tuple[int, int, int, bool]] = set()
    for r in rows:
        if r.key not in seen:
            seen.add(r.key)
            yield r


def _slow_params(report: AuditReport, q: SlowQuery) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "fingerprint": q.fingerprint,
        "queryids": list(q.queryids),
        "query": q.query,
        "calls": q.calls,
        "mean_ms": q.mean_ms,
        "total_ms": q.total_ms,
        "status": q.status,
        "skip_reason": q.skip_reason,
        "explanation": json.dumps(dataclasses.asdict(q.explanation)) if q.explanation else None,
    }
