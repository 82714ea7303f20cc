"""The model's part of an audit, per statement, after the advisor: explain, propose one optimisation, verify it.

Optional and never trusted. Without ``llm.model`` (or with ``llm.enabled: false``, or the audited database in
``llm.disabled_targets``) :func:`for_audit` returns None and the audit runs exactly as without this module.
Any failure of the model (timeouts, errors, malformed answers, a spent budget) becomes a note on the
statement; the audit goes on. A proposal becomes a recommendation (``source: llm``) only when it passed
the allow-list and its measurement beat the threshold; otherwise it is kept, refused, with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pg_architect.auditor import advisor, analysis, confidence, verify
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.fingerprint import EMBEDDING_MODEL
from pg_architect.auditor.kb import KnowledgeBase, SimilarRecommendation
from pg_architect.auditor.llm import context, prompts, store
from pg_architect.auditor.llm.errors import BudgetExhausted, ModelError
from pg_architect.auditor.llm.sanitize import NotShareable, carries_mention_or_link, model_text, statement_for_model
from pg_architect.auditor.measure import Measurer, Plan, explain
from pg_architect.auditor.models import (
    AuditReport,
    Equivalence,
    LlmReview,
    ModelExplanation,
    ModelProposal,
    Recommendation,
    SlowQuery,
    action_for,
)
from pg_architect.auditor.parsing import QueryShape
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import PgArchitectError

if TYPE_CHECKING:
    from pg_architect.auditor.llm.client import ModelClient

log = logging.getLogger(__name__)

N_SAMPLES = 2
REEMBED_LIMIT = 1000  # per audit; the rest next time
EMBED_BATCH = 32
MODEL_WEIGHT = 0.05  # the most the model's own confidence moves a score, either way
LLM_INDEX_CAP = 0.89  # a model's proposal is reviewed by a person: never "recommend merge"
LLM_REWRITE_CAP = 0.85  # and a rewrite changes application code


def enabled_for(cfg: Config, datname: str) -> bool:
    """Whether the model takes part in the audit of ``datname``."""
    llm = cfg.llm
    return bool(llm.model) and llm.enabled and datname not in llm.disabled_targets


def for_audit(cfg: Config, conn: db.Connection, catalog: Snapshot, kb: KnowledgeBase, datname: str) -> Architect | None:
    """The audit's architect, or None when no model takes part (nothing else changes then)."""
    if not enabled_for(cfg, datname):
        return None
    # Imported here: the openai package takes about a second to import, which audits without a model never pay.
    from pg_architect.auditor.llm.client import ModelClient

    found = Architect(cfg, conn, catalog, kb, ModelClient.from_config(cfg))
    found.prepare_embeddings()
    return found


class Architect:
    def __init__(
        self, cfg: Config, conn: db.Connection, catalog: Snapshot, kb: KnowledgeBase, client: ModelClient
    ) -> None:
        self.cfg = cfg
        self.conn = conn
        self.catalog = catalog
        self.kb = kb
        self.client = client
        self.embedding_model = cfg.llm.embedding_model
        self.vectors: dict[str, list[float]] = {}  # fingerprint -> embedding-model vector, stored with its rec
        self.notes: list[str] = []

    @property
    def model(self) -> str:
        return self.client.model

    def usage(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "embedding_model": self.embedding_model,
            **self.client.usage.as_json(),
            "notes": list(self.notes),
        }

    # -- the embedding option ----------------------------------------------------------------------
    def prepare_embeddings(self) -> int:
        """Embed the stored recommendations that lack a vector of ``llm.embedding_model`` (after a switch of
        models); vectors of other models stay, unused. Returns how many were embedded."""
        model = self.embedding_model
        if not model:
            return 0
        done = 0
        missing = store.missing_embeddings(self.kb.conn, model, REEMBED_LIMIT)
        shareable: list[tuple[int, str]] = []
        for row in missing:
            try:
                shareable.append((row.recommendation_id, statement_for_model(row.query)))
            except NotShareable:
                continue
        for start in range(0, len(shareable), EMBED_BATCH):
            batch = shareable[start : start + EMBED_BATCH]
            try:
                vectors = self.client.embed([text for _, text in batch])
            except ModelError as exc:
                self.notes.append(f"re-embedding with {model} stopped after {done} recommendation(s): {exc}")
                break
            with db.transaction(self.kb.conn):
                for (recommendation_id, _), vector in zip(batch, vectors, strict=True):
                    store.store_embedding(self.kb.conn, recommendation_id, model, vector)
            done += len(batch)
        if done:
            log.info("embedded %d stored recommendation(s) with %s", done, model)
        return done

    def similar(
        self, query: str, fingerprint: str, structural: list[float], target_id: int
    ) -> list[SimilarRecommendation]:
        """Past recommendations like this statement: in the embedding model's space when one is configured
        (falling back to the structural space, never mixing the two), else structurally."""
        if self.embedding_model:
            try:
                vector = self.client.embed([statement_for_model(query)])[0]
            except (NotShareable, ModelError) as exc:
                self.notes.append(f"statement {fingerprint}: structural similarity used: {exc}")
            else:
                self.vectors[fingerprint] = vector
                return store.similar(self.kb.conn, vector, self.embedding_model, target_id=target_id)
        return self.kb.similar(structural, EMBEDDING_MODEL, target_id=target_id)

    def storer(self, report: AuditReport, target_id: int) -> Callable[[db.Connection, dict[str, int]], None]:
        """What KnowledgeBase.finish_run calls, in its transaction, to store the model's part of ``report``."""

        def write(conn: db.Connection, recommendation_ids: dict[str, int]) -> None:
            store.write(
                conn,
                report,
                target_id,
                recommendation_ids,
                model=self.model,
                embedding_model=self.embedding_model,
                vectors=self.vectors,
            )

        return write

    def close(self) -> None:
        self.client.close()

    # -- one statement -----------------------------------------------------------------------------
    def review(self, result: SlowQuery, shape: QueryShape, measurer: Measurer) -> SlowQuery:
        """``result`` (the advisor's) with the model's explanation and verified proposal added."""
        if result.status == "skipped" or shape.is_utility:
            return result
        notes: list[str] = []
        try:
            resolved, tables = analysis.resolve(self.catalog, shape)
        except PgArchitectError as exc:
            return dataclasses.replace(result, llm=LlmReview(notes=(f"not sent to the model: {exc}",)))
        facts: analysis.Analysis | None = None
        plan: Plan | None = None
        if tables and all(t.readable for t in tables.values()):
            try:
                facts = analysis.analyse(self.catalog, resolved, tables, N_SAMPLES)
                plan = explain(self.conn, facts.samples[0], analyze=False)
            except PgArchitectError as exc:
                notes.append(f"no plan for the model: {context.scrub_note(str(exc))}")
        try:
            ctx = context.build(
                self.catalog,
                text=resolved.text,
                kind=resolved.kind,
                tables=list({t.oid: t for t in tables.values()}.values()),
                plan=plan,
                calls=result.calls,
                mean_ms=result.mean_ms,
                parse_explanation=result.explanation.intent if result.explanation else "",
                advisor=_advisor_facts(result),
                share_stats=self.cfg.llm.share_column_stats,
            )
        except NotShareable as exc:
            return dataclasses.replace(result, llm=LlmReview(notes=(str(exc),)))
        explanation = None
        try:
            explanation = self._explain(ctx, [t.qualified for t in tables.values()])
        except BudgetExhausted as exc:
            return dataclasses.replace(result, llm=LlmReview(notes=(*notes, f"explanation skipped: {exc}")))
        except ModelError as exc:
            notes.append(f"explanation failed: {exc}")
        proposal: ModelProposal | None = None
        try:
            answer = self.client.complete_json(prompts.propose_messages(ctx), prompts.PROPOSE_SCHEMA, name="propose")
        except ModelError as exc:
            notes.append(f"proposal skipped: {exc}" if isinstance(exc, BudgetExhausted) else f"proposal failed: {exc}")
            return dataclasses.replace(result, llm=LlmReview(explanation, None, tuple(notes)))
        proposal, recommendation = self._verify(answer, result, resolved, tables, facts, measurer)
        review = LlmReview(explanation, proposal, tuple(notes))
        result = dataclasses.replace(result, llm=review)
        if recommendation is None:
            return result
        return _prefer(result, recommendation)

    def _explain(self, ctx: context.StatementContext, known_tables: list[str]) -> ModelExplanation:
        answer = self.client.complete_json(prompts.explain_messages(ctx), prompts.EXPLAIN_SCHEMA, name="explain")
        complexity = str(answer.get("complexity", "")).lower()
        if complexity not in ("low", "medium", "high"):
            raise ModelError("explain: the answer's complexity is not low, medium or high")
        intent = model_text(answer.get("intent"), 300)
        if not intent:
            raise ModelError("explain: the answer has no intent")
        # Only tables the statement really reads: the model may not introduce names into the report.
        named = {str(t).lower() for t in answer.get("tables") or [] if isinstance(t, str)}
        tables = tuple(t for t in known_tables if t.lower() in named or t.split(".")[-1].lower() in named)
        return ModelExplanation(
            intent=intent,
            tables=tables,
            complexity=complexity,  # type: ignore[arg-type]
            business_context=model_text(answer.get("business_context"), 400),
            model=self.model,
        )

    def _verify(
        self,
        answer: dict[str, Any],
        result: SlowQuery,
        shape: QueryShape,
        tables: analysis.Tables,
        facts: analysis.Analysis | None,
        measurer: Measurer,
    ) -> tuple[ModelProposal | None, Recommendation | None]:
        kind = str(answer.get("type", "")).lower()
        raw_sql = str(answer.get("sql") or "")
        reasoning = model_text(answer.get("reasoning"), 500)
        try:
            stated = float(answer.get("confidence", 0.5))
        except (TypeError, ValueError):
            stated = 0.5
        stated = min(max(stated, 0.0), 1.0)

        def refused(reason: str) -> tuple[ModelProposal, None]:
            # Our checks quote parts of the model's SQL (names, tokens): inert text too.
            log.info("model proposal for %s refused: %s", result.queryid, reason)
            return ModelProposal(
                model_text(kind, 40) or "?", None, "refused", model_text(reason), self.model, stated
            ), None

        if kind == "none":
            return ModelProposal("none", None, "not_better", "the model proposed nothing", self.model, stated), None
        if kind not in prompts.PROPOSAL_TYPES:
            return refused(f"refused: unknown proposal type {kind[:40]!r}")
        if kind not in ("index", "rewrite", "settings"):
            return refused(
                f"not verified: a {kind} proposal cannot be measured by pg-architect, so it is not recommended "
                f"(the model's reasoning: {reasoning})"
            )
        if carries_mention_or_link(raw_sql):
            # The SQL would reach a pull request verbatim; it cannot be made inert without changing it.
            return refused("refused: the SQL carries a mention or a link")
        if facts is None:
            return refused("not verified: the statement could not be planned with sampled values here")
        min_gain = self.cfg.auditor.thresholds.min_gain_percent
        try:
            if kind == "index":
                checked = verify.index(
                    self.conn,
                    self.catalog,
                    measurer,
                    raw_sql,
                    kind=facts.kind,
                    samples=facts.samples,
                    tables=tables,
                    min_gain_percent=min_gain,
                )
            elif kind == "settings":
                checked = verify.settings(
                    measurer.staging or self.conn,
                    raw_sql,
                    kind=facts.kind,
                    samples=facts.samples,
                    statement_timeout_ms=self.cfg.measurement.statement_timeout_ms,
                    lock_timeout_ms=self.cfg.measurement.lock_timeout_ms,
                    min_gain_percent=min_gain,
                )
            else:
                checked = verify.rewrite(
                    measurer.staging or self.conn,
                    self.catalog,
                    raw_sql,
                    shape=facts.shape,
                    types=facts.types,
                    n_samples=N_SAMPLES,
                    statement_timeout_ms=self.cfg.measurement.statement_timeout_ms,
                    lock_timeout_ms=self.cfg.measurement.lock_timeout_ms,
                    min_gain_percent=min_gain,
                )
        except verify.Refused as exc:
            return refused(str(exc))
        m = checked.measurement
        timing = (
            f"{m.before_ms:.1f} ms -> {m.after_ms:.1f} ms"
            if m.before_ms is not None and m.after_ms is not None
            else f"cost {m.before_cost:.0f} -> {m.after_cost:.0f}"
        )
        if not checked.worth:
            reason = f"measured ({m.method}, {m.samples} sample(s)): {timing}, gain {m.gain_percent:.0f} %"
            reason += "" if m.gain_percent > min_gain else f", not above {min_gain:.0f} %"
            return ModelProposal(kind, checked.sql, "not_better", reason, self.model, stated), None
        score, terms = self._confidence(
            kind, checked, stated, result.fingerprint, shape.kind != "select", result.mean_ms
        )
        what = {"index": "Index", "rewrite": "Rewrite", "settings": "Setting"}[kind]
        equal = f" Same rows as the original for all {m.samples} sampled parameter set(s)." if kind == "rewrite" else ""
        text = (
            f"{what} proposed by the model ({self.model}), verified by pg-architect: measured ({m.method}, "
            f"{m.samples} parameter sample(s)): {timing}, {m.gain_percent:.0f} % faster.{equal} Plan before: "
            f"{m.plan_before}. Plan after: {m.plan_after}. Confidence: {'; '.join(terms)}. "
            f"Model's reasoning (model output): {reasoning}"
        )
        recommendation = Recommendation(
            type="index" if kind == "index" else "rewrite" if kind == "rewrite" else "settings",
            sql=checked.sql,
            rollback_sql=checked.rollback_sql,
            reasoning=text,
            confidence=score,
            source="llm",
            measurement=m,
            action=action_for(score),
            equivalence=Equivalence(
                original_sql=result.query,
                rule=None,
                verified=True,
                sets_compared=m.samples,
                rows=checked.rows,
                plan_before=m.plan_before,
                plan_after=m.plan_after,
            )
            if kind == "rewrite"
            else None,
        )
        proposal = ModelProposal(
            kind, checked.sql, "verified", f"measured: {timing}, gain {m.gain_percent:.0f} %", self.model, stated
        )
        return proposal, recommendation

    def _confidence(
        self,
        kind: str,
        checked: verify.Verified,
        stated: float,
        fingerprint: str,
        dml: bool,
        recorded_mean_ms: float | None = None,
    ) -> tuple[float, list[str]]:
        applied_before, rejected_before = self.kb.outcome_history(fingerprint)
        if checked.outcome is not None:
            evidence = confidence.score(
                checked.outcome,
                applied_before=applied_before,
                rejected_before=rejected_before,
                write_share=checked.table.write_share if checked.table is not None else 0.0,
                dml=dml,
                # Samples far faster than the recorded calls speak less for a model's index too (calibration).
                recorded_mean_ms=recorded_mean_ms,
                correlation=advisor.key_correlation(self.catalog, checked.outcome.candidate),
            )
            value, terms = evidence.score, list(evidence.terms)
            cap = LLM_INDEX_CAP
        else:
            evidence = confidence.timed(
                checked.measurement, what=kind, consistent=checked.consistent, rejected_before=rejected_before
            )
            value, terms = evidence.score, list(evidence.terms)
            cap = LLM_REWRITE_CAP
        nudge = MODEL_WEIGHT * (2 * stated - 1)
        value += nudge
        terms.append(f"the model's own confidence {stated:.2f}: {nudge:+.2f}")
        if value > cap:
            terms.append(f"proposed by a model, so a person reviews it: at most {cap:.2f}")
        return round(min(max(value, 0.0), cap), 3), terms


def _advisor_facts(result: SlowQuery) -> dict[str, Any]:
    rec = result.recommendation
    return {
        "status": result.status,
        "reason": context.scrub_note(result.skip_reason or ""),
        "measured_best": None
        if rec is None
        else {
            "sql": _masked(rec.sql),
            "gain_percent": round(rec.measurement.gain_percent, 1) if rec.measurement else None,
            "recommended": result.status == "recommended",
        },
        "rejected": [context.scrub_note(r) for r in result.rejected[:10]],
    }


def _masked(sql: str) -> str:
    try:
        return statement_for_model(sql)
    except NotShareable:
        return "(not shown)"


def _prefer(result: SlowQuery, llm: Recommendation) -> SlowQuery:
    """The statement's recommendation: the model's verified one when the advisor has none or gains less."""
    current = result.recommendation if result.status == "recommended" else None
    llm_gain = llm.measurement.gain_percent if llm.measurement else 0.0
    if current is not None:
        gain = current.measurement.gain_percent if current.measurement else 0.0
        if gain >= llm_gain:
            return dataclasses.replace(
                result, rejected=(*result.rejected, f"model's {llm.type}: verified, gain {llm_gain:.0f} % (less)")
            )
        return dataclasses.replace(
            result,
            recommendation=llm,
            rejected=(*result.rejected, f"advisor's {current.sql}: gain {gain:.0f} % (the model's gains more)"),
        )
    return dataclasses.replace(result, status="recommended", recommendation=llm, skip_reason=None)
