"""The knowledge base: schema ``pgarch``, in the audited database or in ``database.kb_dsn``.

Versioned migrations are applied on open. One audit at a time per knowledge base (a session advisory
lock); an audit's results are written in one transaction at its end, so a crash leaves no half-written
rows, and a run left "running" by a dead auditor is marked failed by the next one to take the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
AUDIT_LOCK = 0x70676172636802
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

    def as_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["created_at"] = self.created_at.isoformat()
        return doc


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

    def __init__(self, conn: db.Connection, dsn: str | None = None, timeouts: db.Timeouts | None = None) -> None:
        self.conn = conn
        self.dsn = dsn
        self.timeouts = timeouts or db.Timeouts()

    @classmethod
    def open(
        cls, dsn: str, cfg: Config | None = None, *, role: db.Role = db.Role.KNOWLEDGE_BASE, migrate: bool = True
    ) -> KnowledgeBase:
        """A session on the knowledge base for ``role``; ``migrate`` brings the schema up to date first (the
        API's short request sessions skip it: the daemon migrated on start)."""
        timeouts = db.policy(cfg, role) if cfg is not None else db.Timeouts()
        conn = db.connect(dsn, role, timeouts)
        kb = cls(conn, dsn, timeouts)
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
            db.execute(self.conn, "CREATE SCHEMA IF NOT EXISTS pgarch")
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
    def audit_lock(self) -> Iterator[list[str]]:
        """Hold the one-audit-at-a-time lock; yields the ids of stale runs it marked failed."""
        if not db.advisory_lock(self.conn, AUDIT_LOCK):
            raise AuditAlreadyRunning("another audit is running on this knowledge base")
        try:
            stale = [r.run_id for r in db.fetch(self.conn, self._sql("kb_fail_stale_runs"), None, _RunId)]
            if stale:
                log.warning("marked %d interrupted audit run(s) as failed: %s", len(stale), ", ".join(stale))
            yield stale
        finally:
            with contextlib.suppress(DatabaseError):
                db.advisory_unlock(self.conn, AUDIT_LOCK)

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
                recommendation_ids[q.fingerprint] = db.fetch_value(
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
                    },
                )
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
            return report
        return {
            "run_id": row.run_id,
            "status": row.status,
            "error": row.error,
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
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

    def optimizations(self, limit: int, offset: int) -> list[Optimization]:
        return db.fetch(self.conn, self._sql("api_optimizations"), {"limit": limit, "offset": offset}, Optimization)

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
    def similar(
        self, embedding: Sequence[float], model: str, *, target_id: int | None = None, limit: int = 5
    ) -> list[SimilarRecommendation]:
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

    def record_health(self, target_id: int, metrics: dict[str, Any]) -> None:
        db.execute(
            self.conn,
            self._sql("kb_record_health"),
            (target_id, json.dumps(metrics)),
        )


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
