"""The weekly audit: slow statements to measured, stored recommendations.

1. snapshot pg_stat_statements into the knowledge base and take last week's delta (auditor.window);
2. skip statements the knowledge base already has a pending or rejected answer for (similarity);
3. explain each statement from its parse;
4. propose candidate indexes (auditor.advisor) and rewrites (auditor.rewrites);
5. measure them safely (auditor.measure; rewrites: auditor.verify) with representative parameter values
   (auditor.params);
6. keep the best if its gain clears ``min_gain_percent``, with a confidence from the evidence
   (auditor.proposals);
7. store everything, in one transaction, with an embedding for future look-ups.

The audited database is only read: measurement transactions always roll back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pg_architect.auditor import (
    advisor,
    analysis,
    caching,
    confidence,
    health,
    lifecycle,
    logged,
    params,
    partitioning,
    plans,
    proposals,
    selection,
    settings,
    window,
)
from pg_architect.auditor.catalog import IndexInfo, Snapshot
from pg_architect.auditor.decision import decide
from pg_architect.auditor.delivery import after_audit
from pg_architect.auditor.fingerprint import EMBEDDING_MODEL, embed
from pg_architect.auditor.kb import HealthPoint, KnowledgeBase, SimilarRecommendation
from pg_architect.auditor.llm import architect
from pg_architect.auditor.measure import (
    CannotMeasure,
    Measurer,
    NoRepresentativeSample,
    Outcome,
    Recorded,
    Writes,
    representative,
)
from pg_architect.auditor.models import (
    AuditReport,
    Explanation,
    Forecast,
    IndexHealth,
    Kpis,
    Recommendation,
    Regression,
    SlowQuery,
    action_for,
)
from pg_architect.auditor.parsing import QueryShape, UnparseableQuery, parse_query
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import AuditError, PgArchitectError, QueryTimeout, UnsafeSQLError
from pg_architect.core.serverlog import Directory, LogFiles, ServerFiles

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
N_SAMPLES = 2
# How the reasoning names where the measured samples' values came from (Measurement.parameters).
_SAMPLES_FROM = {"server_log": " of logged calls", "server_log+pg_stats": " of logged calls and drawn from pg_stats"}
# Drawn, ordered by how close their planned rows are to the rows pg_stat_statements recorded per call; the
# first N_SAMPLES that also resemble the recorded rows and time are measured (auditor.measure.Recorded).
N_DRAWN = 6
# A rejected recommendation is proposed again only when the statement's evidence changed materially: its mean
# time at least doubled, or it runs at least three times as often, since the rejection.
MATERIAL_MEAN_RATIO = 2.0
MATERIAL_CALLS_RATIO = 3.0


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
        self.architect: architect.Architect | None = None  # the model's part, when one is configured
        # Every statement whose candidates were measured, in the window's order, for the workload check.
        self.measured: list[tuple[selection.Measured, QueryShape]] = []
        # The slow statements' calls in the server's log (auditor.server_log), read once per audit.
        self.logged: logged.LoggedCalls | None = None
        self.measured_with_logged = 0  # statements whose samples were their logged calls' values

    def run(self) -> AuditReport:
        ident = window.identity(self.conn)
        target_id = self.kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
        self.kb.ensure_similarity_index(target_id, EMBEDDING_MODEL)
        with self.kb.audit_lock(target_id):
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
            after = self.architect.storer(report, target_id) if self.architect is not None else None
            self.kb.finish_run(report, target_id, embeddings, EMBEDDING_MODEL, after=after)
            report = dataclasses.replace(
                report, lifecycle=lifecycle.summary(self.kb, self.cfg, target_id, self.kb.clock())
            )
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
        win = window.take(self.conn, self.kb, target_id, ident, min_mean_ms=self.options.min_mean_ms)
        notes = list(win.notes)
        try:
            for line in lifecycle.refresh(self.cfg, self.conn, self.kb, target_id, ident.dbid, win.snapshot_id):
                self.progress(f"lifecycle: {line}")
        except PgArchitectError as exc:  # following the lifecycle must not cost the audit
            log.warning("lifecycle refresh failed: %s", exc)
            notes.append(f"the recommendations' lifecycle could not be brought up to date: {exc}")
        slow = window.select_slow(
            win.statements,
            min_calls=self.options.min_calls,
            min_mean_ms=self.options.min_mean_ms,
            limit=self.options.limit,
        )
        self.progress(f"{len(slow)} slow statement(s) of {len(win.statements)} in the window ({win.window.source})")
        self.logged = self._read_logged(slow, ident.datname, notes)
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
        self.architect = architect.for_audit(self.cfg, self.conn, self.catalog, self.kb, ident.datname)
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
            # Issue 18, caching: a hot statement nothing else fixed, over rarely written tables (auditor.caching).
            if result.status == "no_recommendation" and result.recommendation is None:
                result = caching.recommend(self.cfg, self.catalog, self.kb, result, statement, win, target_id)
            if vector is not None:
                embeddings[statement.fingerprint] = vector
            results.append(result)
            self.progress(
                f"[{i}/{len(slow)}] {result.status:<17} {statement.mean_ms:9.1f} ms x {statement.calls} "
                f"calls  {_short(statement.query)}  ({time.monotonic() - started:.1f}s)"
            )
        if self.architect is not None:
            self.architect.close()
        if self.logged is not None:
            with_calls = sum(1 for s in slow if self.logged.of(s.queryids))
            notes.append(
                f"parameters from the server's log: {self.measured_with_logged} of {len(slow)} slow statement(s) "
                f"measured with the values of their logged calls ({with_calls} had calls logged at "
                f"log_min_duration_statement {self.logged.threshold_ms:g} ms; the others: values drawn from "
                "pg_stats, or no parameter)"
            )
        results = self._select_for_workload(results, measurer)
        results = _shared_indexes(results)
        regressions = self.regressions(win, target_id, ident)
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
        history: list[HealthPoint] = []
        try:
            history = self.kb.health_history(target_id)
            forecasts = health.forecasts(history, health.table_sizes(self.conn))
        except PgArchitectError as exc:
            notes.append(f"growth forecasts skipped: {exc}")
        # Issue 18, partitioning: growing tables filtered on ranges get a measured plan (auditor.partitioning).
        try:
            forecasts, partition_notes = partitioning.recommend(
                self.cfg, self.catalog, forecasts, results, self.staging, len(history)
            )
            notes += partition_notes
        except PgArchitectError as exc:
            notes.append(f"partitioning plans skipped: {exc}")
        suggestions, setting_notes = settings.suggest(self.conn, datetime.now(UTC))
        notes += setting_notes
        # Issue 18: random_page_cost, timed on the slow statements' sequential-scan plans (auditor.settings).
        page_cost, setting_notes = settings.random_page_cost(self.cfg, self.catalog, results)
        suggestions += page_cost
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
            regressions=tuple(regressions),
            llm_usage=self.architect.usage() if self.architect is not None else None,
        )
        return report, embeddings

    def regressions(self, win: window.AuditWindow, target_id: int, ident: window.Identity) -> list[Regression]:
        """Statements whose mean rose sharply against the week before the window, slow or not."""
        lc = self.cfg.auditor.lifecycle
        if win.baseline is None:
            return []
        earlier = self.kb.baseline(target_id, win.baseline.taken_at, None)
        if earlier is None:
            return []
        previous = {
            f.fingerprint: f
            for f in self.kb.window_figures(earlier.snapshot_id, win.baseline.snapshot_id, ident.dbid)
            if f.calls >= lc.verify_min_calls
        }
        found: list[Regression] = []
        for s in win.statements:
            before = previous.get(s.fingerprint)
            if before is None or s.calls < lc.verify_min_calls or s.parse_error:
                continue
            before_mean = before.total_ms / before.calls
            if s.mean_ms < before_mean * lc.regression_ratio or s.mean_ms - before_mean < lc.regression_floor_ms:
                continue
            found.append(
                Regression(
                    queryid=str(s.queryids[0]),
                    fingerprint=s.fingerprint,
                    query=s.query,
                    calls=s.calls,
                    previous_mean_ms=round(before_mean, 3),
                    mean_ms=round(s.mean_ms, 3),
                    ratio=round(s.mean_ms / before_mean, 2) if before_mean > 0 else float("inf"),
                )
            )
        found.sort(key=lambda r: -r.ratio)
        found = found[: self.options.limit]
        now = win.window.end
        out = []
        for r in found:
            stored = self.kb.latest_plan(target_id, r.fingerprint, now)
            try:
                current = plans.current_plan(self.catalog, r.query)
            except PgArchitectError as exc:
                log.info("regression %s: no current plan: %s", r.queryid, exc)
                current = None
            if current is not None:
                self.kb.store_plan(target_id, r.fingerprint, now, r.mean_ms, current)
            out.append(dataclasses.replace(r, plan_change=plans.plan_change(stored, current)))
            self.progress(f"regression: x{r.ratio} {r.previous_mean_ms:.1f} -> {r.mean_ms:.1f} ms  {_short(r.query)}")
        return out

    def _read_logged(
        self, slow: Sequence[window.Statement], database: str, notes: list[str]
    ) -> logged.LoggedCalls | None:
        """The slow statements' calls in the server's log, when ``auditor.server_log`` says where it is; a
        log that cannot be read is a note, and the audit samples from pg_stats as it would without it."""
        auditor = self.cfg.auditor
        if auditor.server_log == "off" or not slow:
            return None
        files: LogFiles = (
            Directory(auditor.server_log_directory or "")
            if auditor.server_log == "directory"
            else ServerFiles("auditor", "auditor.server_log")
        )
        statements = {qid: s.query for s in slow for qid in s.queryids}
        try:
            found = logged.read(self.conn, files, database, statements, auditor.server_log_max_bytes)
        except PgArchitectError as exc:
            log.warning("server log: %s", exc)
            notes.append(f"parameters from the server's log: not used, {exc}")
            return None
        with_calls = sum(1 for s in slow if found.of(s.queryids))
        self.progress(
            f"server log: logged calls for {with_calls} of {len(slow)} slow statement(s) "
            f"({found.bytes_read / 1048576:.1f} MiB read)"
        )
        return found

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
            for s in (
                self.architect.similar(statement.query, statement.fingerprint, vector, target_id)
                if self.architect is not None
                else self.kb.similar(vector, EMBEDDING_MODEL, target_id=target_id)
            )
            if s.similarity >= self.cfg.auditor.thresholds.similarity_skip
        ]
        verdict = _skip_for(similar, statement)
        if verdict.reason is not None:
            return dataclasses.replace(
                base, status="skipped", skip_reason=verdict.reason, handled_by=verdict.handled_by
            ), vector
        applied = next((s for s in similar if s.status == "applied"), None)
        if applied is not None:
            base = dataclasses.replace(base, regression_of=applied.recommendation_id)
        calls = self.logged.of(statement.queryids) if self.logged is not None else []
        advised = shape
        constants = logged.shape_constants(calls, shape)
        if constants:
            # A constant the application writes inside an indexed expression (date_trunc('day', ...)): the
            # statement is advised with it written back, so an expression index can hold it.
            text, renumber = logged.with_constants(statement.query, constants)
            advised = parse_query(text)
            calls = logged.renumbered(calls, renumber)
        result = self._advise(base, advised, measurer, applied, statement.rows_per_call, verdict.note, calls)
        if self.architect is not None:
            result = self.architect.review(result, shape, measurer)
        return result, vector

    def _advise(
        self,
        base: SlowQuery,
        shape: QueryShape,
        measurer: Measurer,
        applied: SimilarRecommendation | None,
        rows_per_call: float | None,
        reproposal: str = "",
        calls: Sequence[logged.LoggedCall] = (),
    ) -> SlowQuery:
        """One pipeline (auditor.proposals): the index advisor's candidates, measured and decided, then the rewrite
        rules' proposals, verified; the most measured gain wins."""
        result = self._advise_index(base, shape, measurer, applied, rows_per_call, reproposal, calls)
        # Even when no index could be measured (an index cannot hold date() of a timestamptz), a rewrite may help.
        _, rejected_before = self.kb.outcome_history(base.fingerprint)
        found = proposals.rewrite_findings(
            self.cfg, self.conn, self.catalog, shape, rejected_before=rejected_before, staging=self.staging
        )
        return proposals.best(result, found)

    def _advise_index(
        self,
        base: SlowQuery,
        shape: QueryShape,
        measurer: Measurer,
        applied: SimilarRecommendation | None,
        rows_per_call: float | None,
        reproposal: str = "",
        calls: Sequence[logged.LoggedCall] = (),
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
            # Logged calls that are fewer than half the statement's calls are its slow tail: drawn values follow.
            tail_only = len(calls) < min(base.calls / 2, logged.MAX_CALLS)
            facts = analysis.analyse(self.catalog, resolved, tables, N_DRAWN, rows_per_call, calls, tail_only)
            # The application's own values first, in their order (auditor.logged.samples), then drawn ones.
            first = list(facts.samples[: facts.from_log])
            rest = facts.samples[facts.from_log :]
            samples = first + representative(self.conn, rest, rows_per_call, len(rest))
            self.measured_with_logged += facts.from_log > 0
        except UnsafeSQLError as exc:
            return dataclasses.replace(base, status="error", skip_reason=str(exc), rejected=tuple(notes))
        except PgArchitectError as exc:
            return dataclasses.replace(
                base,
                status="error",
                skip_reason=f"cannot plan the statement with sampled values: {exc}",
                rejected=tuple(notes),
            )
        # Where the rows per call cannot judge a sample's range, its time does: draws fitted to the recorded mean
        # (the application's own logged values need no fitting).
        fits_time = params.time_fits(resolved) and not facts.logged
        try:
            method, outcomes = measurer.measure(
                facts.kind,
                samples,
                found.candidates,
                list(tables.values()),
                Recorded(
                    mean_ms=base.mean_ms, rows_per_call=rows_per_call, logged=facts.logged, fits_time=fits_time
                ),
                keep=N_SAMPLES,
                writes=_writes(resolved, tables, found.indexes),
                draw=analysis.range_draws(self.catalog, facts) if fits_time else None,
            )
        except NoRepresentativeSample as exc:
            # The advisor's notes lead: a sample far faster than the record is often an index made since.
            return dataclasses.replace(base, skip_reason="; ".join([*notes, str(exc)]), rejected=tuple(notes))
        except CannotMeasure as exc:
            return dataclasses.replace(base, skip_reason=f"cannot measure safely: {exc}", rejected=tuple(notes))
        verdict = decide(
            outcomes, method=method, notes=found.notes, min_gain_percent=self.cfg.auditor.thresholds.min_gain_percent
        )
        rejected = tuple([*notes, *verdict.rejected])
        # Measured with or without a choice of its own: another statement's index may still make it slower (when
        # its own candidates were all cancelled as too slow, that is the very evidence).
        if verdict.best is not None or measurer.kept:
            self.measured.append(
                (
                    selection.Measured(
                        fingerprint=base.fingerprint,
                        queryid=base.queryid,
                        kind=facts.kind,
                        samples=measurer.kept,
                        tables=tuple(tables.values()),
                        # Kept samples fitted to the time are not judged again by rows that cannot tell (nor by
                        # a time that load may push just past TIME_FACTOR).
                        recorded=Recorded(
                            mean_ms=base.mean_ms,
                            rows_per_call=None if fits_time else rows_per_call,
                            logged=facts.logged,
                        ),
                        writes=_writes(resolved, tables, found.indexes),
                        total_ms=base.total_ms,
                        chosen=verdict.best if verdict.status == "recommended" else None,
                    ),
                    resolved,
                )
            )
        if verdict.best is None:
            return dataclasses.replace(base, status=verdict.status, skip_reason=verdict.reason, rejected=rejected)
        logged_kept = sum(1 for sql in measurer.kept if sql in facts.samples[: facts.from_log])
        parameters = "server_log" if logged_kept == len(measurer.kept) else "server_log+pg_stats"
        recommendation = self._recommendation(
            verdict.best, resolved, base.fingerprint, base.mean_ms, parameters if logged_kept else "pg_stats"
        )
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
        recommendation = dataclasses.replace(recommendation, reasoning=recommendation.reasoning + note + reproposal)
        return dataclasses.replace(base, status="recommended", recommendation=recommendation, rejected=rejected)

    def _select_for_workload(self, results: list[SlowQuery], measurer: Measurer) -> list[SlowQuery]:
        """The statements' own choices checked as one set for the whole workload (auditor.selection): a wider
        index that serves a narrower one's statements replaces it, and an index that makes another slow
        statement more than 10 % slower is withdrawn (or kept for a review when it saves more than it costs)."""
        own = {
            m.fingerprint: m.chosen.candidate.ddl(self.conn) + ";"
            for m, _ in self.measured
            if m.chosen is not None
        }
        # Only what is still the advisor's index (the model's review may have replaced it) takes part.
        current = {
            r.fingerprint
            for r in results
            if r.status == "recommended"
            and r.recommendation is not None
            and r.recommendation.sql == own.get(r.fingerprint)
        }
        statements = [
            m if m.fingerprint in current else dataclasses.replace(m, chosen=None) for m, _ in self.measured
        ]
        if not any(m.chosen is not None for m in statements):
            return results
        try:
            chosen = selection.select(
                measurer, statements, min_gain_percent=self.cfg.auditor.thresholds.min_gain_percent
            )
        except PgArchitectError as exc:  # the statements' own choices stand
            log.warning("workload check failed: %s", exc)
            return results
        shapes = {m.fingerprint: shape for m, shape in self.measured}
        out = []
        for r in results:
            change = chosen.changes.get(r.fingerprint)
            if change is not None and r.recommendation is not None and r.fingerprint in current:
                rec: Recommendation = r.recommendation
                if change.outcome is None:
                    r = dataclasses.replace(
                        r, status="no_recommendation", skip_reason=change.note, rejected=(*r.rejected, change.note)
                    )
                else:
                    if rec.sql != change.outcome.candidate.ddl(self.conn) + ";":  # served by another's index
                        source = rec.measurement.parameters if rec.measurement is not None else "pg_stats"
                        rec = self._recommendation(
                            change.outcome, shapes[r.fingerprint], r.fingerprint, r.mean_ms, source
                        )
                    if change.demote and rec.action == "pr_merge":
                        rec = dataclasses.replace(rec, action="pr_review")
                    rec = dataclasses.replace(rec, reasoning=rec.reasoning + change.note)
                    r = dataclasses.replace(r, recommendation=rec)
            note = chosen.regressed.get(r.fingerprint)
            if note is not None:
                r = dataclasses.replace(r, rejected=(*r.rejected, note))
            out.append(r)
        return out

    def _recommendation(
        self,
        outcome: Outcome,
        shape: QueryShape,
        fingerprint: str,
        mean_ms: float | None = None,
        parameters: str = "pg_stats",
    ) -> Recommendation:
        m = outcome.measurement
        assert m is not None
        m = dataclasses.replace(m, parameters=parameters)
        cand = outcome.candidate
        applied_before, rejected_before = self.kb.outcome_history(fingerprint)
        kind = confidence.kind_of(cand, m.method)
        family = confidence.family_of(shape)
        evidence = confidence.score(
            outcome,
            applied_before=applied_before,
            rejected_before=rejected_before,
            write_share=cand.table.write_share,
            dml=shape.kind != "select",
            history=self.kb.accuracy(kind, family),
            recorded_mean_ms=mean_ms,  # samples far faster than the recorded calls speak less for them
            correlation=advisor.key_correlation(self.catalog, cand),
        )
        timing = (
            f"{m.before_ms:.1f} ms -> {m.after_ms:.1f} ms"
            if m.before_ms is not None and m.after_ms is not None
            else f"cost {m.before_cost:.0f} -> {m.after_cost:.0f}"
        )
        reasoning = (
            f"Index {cand.describe()}: {cand.reason}. Measured ({m.method}, {m.samples} parameter "
            f"sample(s){_SAMPLES_FROM.get(parameters, '')}): {timing}, "
            f"{m.gain_percent:.0f} % faster"
            + (f" (counting the index's upkeep: {outcome.write_note})" if outcome.write_note else "")
            + f". Plan before: {m.plan_before}. "
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
            kind=kind,
            family=family,
        )


def _writes(shape: QueryShape, tables: analysis.Tables, indexes: Sequence[IndexInfo]) -> Writes | None:
    """What a DML statement writes, for the index maintenance it is charged (auditor.measure.Writes)."""
    if shape.kind == "select" or shape.target is None:
        return None
    table = tables.get((shape.target.schema, shape.target.name))
    if table is None:
        return None
    own = [i for i in indexes if i.table_oid == table.oid]
    indexed = {c for i in own for c in i.key_columns if c is not None}
    indexed |= {d for i in own for d in i.key_definitions if "(" in d}  # expressions: matched by text
    return Writes(
        kind="update" if shape.kind in ("update", "merge") else shape.kind,
        table_oid=table.oid,
        updated=frozenset(shape.updated_columns),
        indexed=frozenset(indexed),
        indexes=len(own),
    )


def _shared_indexes(results: list[SlowQuery]) -> list[SlowQuery]:
    """One index recommended for several statements is one index: each of them says which others it serves,
    so a reviewer (and a migration) sees it once. The first statement (the heaviest: the window is ordered by
    total time) carries it; the others point to it."""
    by_sql: dict[str, list[SlowQuery]] = {}
    for r in results:
        if r.status == "recommended" and r.recommendation is not None:
            by_sql.setdefault(r.recommendation.sql, []).append(r)
    notes: dict[str, str] = {}
    for group in by_sql.values():
        if len(group) < 2:
            continue
        first = group[0]
        others = ", ".join(r.queryid for r in group[1:])
        notes[first.fingerprint] = f" The same index serves {len(group) - 1} other slow statement(s) of this audit " \
            f"(queryid {others}): one index, one migration."
        for r in group[1:]:
            notes[r.fingerprint] = (
                f" The same index is recommended for statement {first.queryid} of this audit: one index, one migration."
            )
    out = []
    for r in results:
        note = notes.get(r.fingerprint)
        if note and r.recommendation is not None and r.status == "recommended":
            rec = dataclasses.replace(r.recommendation, reasoning=r.recommendation.reasoning + note)
            r = dataclasses.replace(r, recommendation=rec)
        out.append(r)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Verdict:
    reason: str | None = None  # skip the statement, saying why
    handled_by: int | None = None  # the recommendation it waits on
    note: str = ""  # for the reasoning of a recommendation proposed again


_WAITING = {
    "pending": "is pending review",
    "pr_open": "has an open pull request",
    "merged": "is merged and waits to be deployed",
}


def _skip_for(similar: list[SimilarRecommendation], statement: window.Statement) -> _Verdict:
    """Whether a similar past recommendation already answers the statement: one waiting (pending, PR open,
    merged) does; a rejected one does unless the evidence changed materially since."""
    for s in similar:
        head = f"a similar recommendation (#{s.recommendation_id}, similarity {s.similarity:.2f})"
        if s.status in _WAITING and s.worth_applying:
            waiting = _WAITING[s.status]
            if s.decision == "accepted":
                waiting = f"was accepted and {waiting.removeprefix('is ')}".replace("pending review", "waits")
            return _Verdict(f"{head} {waiting}: {s.sql}", s.recommendation_id)
        if s.status == "rejected":
            when = s.decided_at or s.created_at
            why = f" ({s.decision_reason})" if s.decision_reason else ""
            changed = _material_change(s, statement)
            if changed is None:
                then = (
                    f"mean {s.mean_ms:.1f} ms then, {statement.mean_ms:.1f} ms now" if s.mean_ms else "no new evidence"
                )
                return _Verdict(
                    f"{head} was rejected on {when:%Y-%m-%d}{why}; the evidence has not changed materially ({then})",
                    s.recommendation_id,
                )
            return _Verdict(
                note=(
                    f" Proposed again: #{s.recommendation_id} was rejected on {when:%Y-%m-%d}{why}; "
                    f"since then {changed}."
                )
            )
    return _Verdict()


def _material_change(rejected: SimilarRecommendation, now: window.Statement) -> str | None:
    """What changed enough since a rejection to propose again, or None."""
    if rejected.mean_ms and now.mean_ms >= rejected.mean_ms * MATERIAL_MEAN_RATIO:
        return (
            f"the mean time rose from {rejected.mean_ms:.1f} ms to {now.mean_ms:.1f} ms "
            f"(x{now.mean_ms / rejected.mean_ms:.1f})"
        )
    if rejected.calls and now.calls >= rejected.calls * MATERIAL_CALLS_RATIO:
        return f"the calls per window rose from {rejected.calls} to {now.calls} (x{now.calls / rejected.calls:.1f})"
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
