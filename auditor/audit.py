"""The weekly audit: slow statements to measured, stored recommendations.

1. snapshot pg_stat_statements into the knowledge base and take last week's delta (auditor.window);
2. skip statements the knowledge base already has a pending or rejected answer for (similarity);
3. explain each statement from its parse;
4. propose candidate indexes (auditor.advisor);
5. measure them safely (auditor.measure) with representative parameter values (auditor.params);
6. keep the best if its gain clears ``min_gain_percent``, with a confidence from the evidence;
7. store everything, in one transaction, with an embedding for future look-ups.

The audited database is only read: measurement transactions always roll back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pg_architect.auditor import advisor, analysis, confidence, health, settings, window
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.decision import decide
from pg_architect.auditor.delivery import after_audit
from pg_architect.auditor.fingerprint import EMBEDDING_MODEL, embed
from pg_architect.auditor.kb import KnowledgeBase, SimilarRecommendation
from pg_architect.auditor.measure import CannotMeasure, Measurer, Outcome, representative
from pg_architect.auditor.models import (
    AuditReport,
    Explanation,
    Forecast,
    IndexHealth,
    Kpis,
    Recommendation,
    SlowQuery,
    action_for,
)
from pg_architect.auditor.parsing import QueryShape, UnparseableQuery, parse_query
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import AuditError, PgArchitectError, QueryTimeout, UnsafeSQLError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
N_SAMPLES = 2
# Drawn, then the N_SAMPLES closest to the rows pg_stat_statements recorded per call are measured.
N_DRAWN = 5


@dataclasses.dataclass(frozen=True, slots=True)
class AuditOptions:
    min_calls: int
    min_mean_ms: float
    limit: int
    dry_run: bool = False
    trigger: str = "manual"

    @classmethod
    def from_config(cls, cfg: Config, **overrides: object) -> AuditOptions:
        t = cfg.auditor.thresholds
        values: dict[str, object] = {"min_calls": t.min_calls, "min_mean_ms": t.min_mean_ms, "limit": t.limit}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _quiet(message: str) -> None:
    log.info("%s", message)


class Auditor:
    """One audit run against one database, with its knowledge base."""

    def __init__(
        self,
        cfg: Config,
        conn: db.Connection,
        kb: KnowledgeBase,
        options: AuditOptions,
        progress: Progress = _quiet,
        staging: db.Connection | None = None,
    ) -> None:
        self.cfg = cfg
        self.conn = conn
        self.kb = kb
        self.options = options
        self.progress = progress
        self.staging = staging
        self.catalog = Snapshot(conn)  # the one catalog view of this audit

    def run(self) -> AuditReport:
        ident = window.identity(self.conn)
        with self.kb.audit_lock():
            target_id = self.kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
            run_id, started_at = self.kb.start_run(target_id, self.options.trigger, self.options.dry_run)
            self.progress(f"audit {run_id} of database {ident.datname} started")
            try:
                report, embeddings = self._audit(run_id, started_at, target_id, ident)
            except BaseException as exc:
                # Interrupts (Ctrl-C, SIGTERM) too: the run is failed and nothing half-written remains.
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                try:
                    self.kb.fail_run(run_id, message)
                except Exception as mark_error:  # keep the original error; the next audit marks the run
                    log.error("could not mark run %s failed: %s", run_id, mark_error)
                if isinstance(exc, Exception) and not self.options.dry_run:
                    self._after_failure(run_id, target_id, started_at, ident.datname, message)
                raise
            self.kb.finish_run(report, target_id, embeddings, EMBEDDING_MODEL)
            report = after_audit.deliver(self.cfg, self.conn, self.kb, report, target_id)
            for note in report.delivery_notes:
                self.progress(note)
            self.progress(
                f"audit {run_id} finished: {report.kpis.recommended} recommendation(s) for "
                f"{report.kpis.slow_queries} slow statement(s)"
            )
            return report

    def _after_failure(self, run_id: str, target_id: int, started: datetime, database: str, message: str) -> None:
        try:
            after_audit.after_failure(self.cfg, self.kb, run_id, target_id, started, database, message)
        except Exception as exc:  # never hide the audit's own error behind a delivery problem
            log.error("reporting the failed run %s: %s", run_id, exc)

    def _audit(
        self, run_id: str, started_at: datetime, target_id: int, ident: window.Identity
    ) -> tuple[AuditReport, dict[str, list[float]]]:
        win = window.take(self.conn, self.kb, target_id, ident)
        slow = window.select_slow(
            win.statements,
            min_calls=self.options.min_calls,
            min_mean_ms=self.options.min_mean_ms,
            limit=self.options.limit,
        )
        self.progress(f"{len(slow)} slow statement(s) of {len(win.statements)} in the window ({win.window.source})")
        measurer = Measurer(
            self.conn,
            self.cfg.measurement,
            hypopg_installed=ident.hypopg_version is not None,
            hypopg_available=ident.hypopg_available,
            staging=self.staging,
            min_gain_percent=self.cfg.auditor.thresholds.min_gain_percent,
        )
        results: list[SlowQuery] = []
        embeddings: dict[str, list[float]] = {}
        for i, statement in enumerate(slow, 1):
            started = time.monotonic()
            try:
                result, vector = self._statement(statement, measurer, target_id)
            except (UnparseableQuery, AuditError) as exc:
                result, vector = _error(statement, str(exc)), None
            except QueryTimeout as exc:
                # A lock (or a slow catalog) on one of its tables: this statement fails, the audit goes on.
                log.warning("statement %s: %s", statement.queryids, exc)
                result, vector = _error(statement, f"{exc} (on {_tables_of(statement.query)})"), None
            except PgArchitectError as exc:
                log.warning("statement %s: %s", statement.queryids, exc)
                result, vector = _error(statement, str(exc)), None
            if vector is not None:
                embeddings[statement.fingerprint] = vector
            results.append(result)
            self.progress(
                f"[{i}/{len(slow)}] {result.status:<17} {statement.mean_ms:9.1f} ms x {statement.calls} "
                f"calls  {_short(statement.query)}  ({time.monotonic() - started:.1f}s)"
            )
        notes = list(win.notes)
        index_health: list[IndexHealth] = []
        forecasts: list[Forecast] = []
        locked = health.locked_tables(self.conn)
        if locked:
            notes.append(
                "index health and growth skipped for " + ", ".join(locked) + ": another session holds an "
                "ACCESS EXCLUSIVE lock on it"
            )
        try:
            index_health = health.index_health(self.conn)
        except PgArchitectError as exc:
            notes.append(f"index health skipped: {exc}")
        try:
            forecasts = health.forecasts(self.kb.health_history(target_id), health.table_sizes(self.conn))
        except PgArchitectError as exc:
            notes.append(f"growth forecasts skipped: {exc}")
        suggestions, setting_notes = settings.suggest(self.conn, datetime.now(UTC))
        notes += setting_notes
        finished = datetime.now(UTC)
        failed = bool(results) and all(r.status == "error" for r in results)
        report = AuditReport(
            run_id=run_id,
            started_at=started_at,
            finished_at=finished,
            status="failed" if failed else "ok",
            error=(
                f"every one of the {len(results)} slow statement(s) failed: {results[0].skip_reason}"
                if failed
                else None
            ),
            window=win.window,
            slow_queries=tuple(results),
            index_health=tuple(index_health),
            forecasts=tuple(forecasts),
            settings=tuple(suggestions),
            kpis=Kpis.of(results),
            database=ident.datname,
            dry_run=self.options.dry_run,
            notes=tuple(notes),
        )
        return report, embeddings

    def _statement(
        self, statement: window.Statement, measurer: Measurer, target_id: int
    ) -> tuple[SlowQuery, list[float] | None]:
        base = SlowQuery(
            queryid=str(statement.queryids[0]),
            query=statement.query,
            calls=statement.calls,
            mean_ms=statement.mean_ms,
            total_ms=statement.total_ms,
            status="no_recommendation",
            fingerprint=statement.fingerprint,
            queryids=statement.queryids,
        )
        if statement.parse_error:
            return dataclasses.replace(base, status="error", skip_reason=statement.parse_error), None
        shape = parse_query(statement.query)
        if shape.is_utility:
            return dataclasses.replace(
                base, status="skipped", skip_reason=f"utility statement ({shape.utility_command})"
            ), None
        vector = embed(shape)
        explanation = Explanation(
            intent=shape.intent, tables=tuple(t.qualified for t in shape.tables), complexity=shape.complexity
        )
        base = dataclasses.replace(base, explanation=explanation)
        similar = [
            s
            for s in self.kb.similar(vector, EMBEDDING_MODEL, target_id=target_id)
            if s.similarity >= self.cfg.auditor.thresholds.similarity_skip
        ]
        skip = _skip_for(similar)
        if skip is not None:
            return dataclasses.replace(base, status="skipped", skip_reason=skip), vector
        applied = next((s for s in similar if s.status == "applied"), None)
        if applied is not None:
            base = dataclasses.replace(base, regression_of=applied.recommendation_id)
        result = self._advise(base, shape, measurer, applied, statement.rows_per_call)
        return result, vector

    def _advise(
        self,
        base: SlowQuery,
        shape: QueryShape,
        measurer: Measurer,
        applied: SimilarRecommendation | None,
        rows_per_call: float | None,
    ) -> SlowQuery:
        resolved, tables = analysis.resolve(self.catalog, shape)
        if not tables:
            return dataclasses.replace(
                base, skip_reason="reads no table of this database (views, functions or CTEs only): no index to propose"
            )
        unreadable = sorted({t.qualified for t in tables.values() if not t.readable})
        if unreadable:
            role = self.catalog.role()
            return dataclasses.replace(
                base,
                status="error",
                skip_reason=f"role {role} may not read {', '.join(unreadable)}: GRANT SELECT ON "
                f"{', '.join(unreadable)} TO {role} (or GRANT pg_read_all_data TO {role})",
            )
        found = advisor.generate(self.catalog, resolved, tables)
        notes = list(found.notes)
        if not found.candidates:
            reason = (
                "; ".join(found.notes)
                if found.notes
                else ("no filter, join or sort column an index could serve: the statement reads whole tables")
            )
            return dataclasses.replace(base, skip_reason=f"no candidate index: {reason}", rejected=tuple(notes))
        try:
            facts = analysis.analyse(self.catalog, resolved, tables, N_DRAWN)
            samples = representative(self.conn, facts.samples, rows_per_call, N_SAMPLES)
        except UnsafeSQLError as exc:
            return dataclasses.replace(base, status="error", skip_reason=str(exc), rejected=tuple(notes))
        except PgArchitectError as exc:
            return dataclasses.replace(
                base,
                status="error",
                skip_reason=f"cannot plan the statement with sampled values: {exc}",
                rejected=tuple(notes),
            )
        try:
            method, outcomes = measurer.measure(facts.kind, samples, found.candidates, list(tables.values()))
        except CannotMeasure as exc:
            return dataclasses.replace(base, skip_reason=f"cannot measure safely: {exc}", rejected=tuple(notes))
        verdict = decide(
            outcomes, method=method, notes=found.notes, min_gain_percent=self.cfg.auditor.thresholds.min_gain_percent
        )
        rejected = tuple([*notes, *verdict.rejected])
        if verdict.best is None:
            return dataclasses.replace(base, status=verdict.status, skip_reason=verdict.reason, rejected=rejected)
        recommendation = self._recommendation(verdict.best, resolved, base.fingerprint)
        if verdict.status != "recommended":
            return dataclasses.replace(
                base,
                status=verdict.status,
                recommendation=recommendation,
                skip_reason=verdict.reason,
                rejected=rejected,
            )
        note = (
            f" Regression: recommendation #{applied.recommendation_id} was applied for a similar statement "
            "and it is still slow."
            if applied is not None
            else ""
        )
        recommendation = dataclasses.replace(recommendation, reasoning=recommendation.reasoning + note)
        return dataclasses.replace(base, status="recommended", recommendation=recommendation, rejected=rejected)

    def _recommendation(self, outcome: Outcome, shape: QueryShape, fingerprint: str) -> Recommendation:
        m = outcome.measurement
        assert m is not None
        cand = outcome.candidate
        applied_before, rejected_before = self.kb.outcome_history(fingerprint)
        evidence = confidence.score(
            outcome,
            applied_before=applied_before,
            rejected_before=rejected_before,
            write_share=cand.table.write_share,
            dml=shape.kind != "select",
        )
        timing = (
            f"{m.before_ms:.1f} ms -> {m.after_ms:.1f} ms"
            if m.before_ms is not None and m.after_ms is not None
            else f"cost {m.before_cost:.0f} -> {m.after_cost:.0f}"
        )
        reasoning = (
            f"Index {cand.describe()}: {cand.reason}. Measured ({m.method}, {m.samples} parameter "
            f"sample(s)): {timing}, {m.gain_percent:.0f} % faster. Plan before: {m.plan_before}. "
            f"Plan after: {m.plan_after}. Confidence: " + "; ".join(evidence.terms) + "."
        )
        return Recommendation(
            type="index",
            sql=cand.ddl(self.conn) + ";",
            rollback_sql=cand.rollback(self.conn) + ";",
            reasoning=reasoning,
            confidence=evidence.score,
            source="advisor",
            measurement=m,
            action=action_for(evidence.score),
        )


def _skip_for(similar: list[SimilarRecommendation]) -> str | None:
    for s in similar:
        if s.status == "pending" and s.worth_applying:
            return (
                f"a similar recommendation (#{s.recommendation_id}, similarity {s.similarity:.2f}) is pending "
                f"review: {s.sql}"
            )
        if s.status == "rejected":
            return (
                f"a similar recommendation (#{s.recommendation_id}, similarity {s.similarity:.2f}) was "
                f"rejected on {s.created_at:%Y-%m-%d}"
            )
    return None


def _tables_of(text: str) -> str:
    """The tables a statement names, for an error message; its text when it cannot be parsed."""
    try:
        names = [t.qualified for t in parse_query(text).tables]
    except UnparseableQuery:
        return "its tables"
    return ", ".join(dict.fromkeys(names)) or "its tables"


def _error(statement: window.Statement, message: str) -> SlowQuery:
    return SlowQuery(
        queryid=str(statement.queryids[0]),
        query=statement.query,
        calls=statement.calls,
        mean_ms=statement.mean_ms,
        total_ms=statement.total_ms,
        status="error",
        fingerprint=statement.fingerprint,
        queryids=statement.queryids,
        skip_reason=message,
    )


def _short(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_audit(cfg: Config, dsn: str, kb_dsn: str, options: AuditOptions, progress: Progress = _quiet) -> AuditReport:
    """Connect, audit once, close. The audited connection's statements run under the measurement timeouts."""
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    staging = None
    kb: KnowledgeBase | None = None
    try:
        kb = KnowledgeBase.open(kb_dsn, cfg)
        if cfg.measurement.staging_dsn:
            staging = db.connect(cfg.measurement.staging_dsn, db.Role.STAGING, db.policy(cfg, db.Role.STAGING))
        return Auditor(cfg, conn, kb, options, progress, staging).run()
    finally:
        for c in (conn, staging, kb.conn if kb else None):
            if c is not None:
                c.close()
