"""One pipeline for a statement's proposals, whatever their type: verified, scored, the best by measured gain.

The index advisor's candidates are measured by auditor.measure and decided by auditor.decision (the audit's
``_advise``); the rewrite rules' proposals (auditor.rewrites) go through auditor.verify, the same check a
model's rewrite goes through (auditor.llm.architect): the allow-list, a rolled-back READ ONLY transaction,
the rows of the original and the rewrite compared as multisets on every sampled parameter set, then both
timed. A rewrite is recommended only when it returned the same rows on every set and is measurably faster;
then the statement's recommendation is whichever proposal gained most. Its confidence comes from the same
evidence terms (auditor.confidence.timed) and the contract's action table. A rewrite is never a migration: it
is a report item and, with a repository configured, an issue (auditor.delivery.issues).

Advisory rewrites (keyset pagination, a count's estimate) change what the statement takes or returns, so
they cannot be compared: they are shown with the plan that motivates them and a confidence below the
pull-request threshold, and only when nothing verified helps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from pg_architect.auditor import analysis, confidence, rewrites, verify
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import explain
from pg_architect.auditor.models import Equivalence, Recommendation, SlowQuery, action_for
from pg_architect.auditor.parsing import QueryShape
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import PgArchitectError, UnsafeSQLError

log = logging.getLogger(__name__)

#: Parameter sets a rewrite's rows are compared on (each also timed, twice, for both forms).
N_SETS = 3
#: A rewrite changes application code, which a person changes: never "recommend merge".
REWRITE_CAP = 0.89
#: Advisory rewrites are not verified: logged and flagged for a person to look at, never at the PR threshold.
ADVISORY_CONFIDENCE = 0.55


@dataclasses.dataclass(frozen=True, slots=True)
class RewriteFindings:
    verified: tuple[Recommendation, ...] = ()  # equal on every set and faster beyond the threshold
    advisory: tuple[Recommendation, ...] = ()
    notes: tuple[str, ...] = ()  # declined rules, refused or not-faster rewrites, with why


def rewrite_findings(
    cfg: Config,
    conn: db.Connection,
    catalog: Snapshot,
    shape: QueryShape,
    *,
    rejected_before: int = 0,
    staging: db.Connection | None = None,
) -> RewriteFindings:
    """The rewrite rules' proposals for one statement, each verified (or, advisory, explained)."""
    if shape.kind != "select" or shape.is_utility:
        return RewriteFindings()
    try:
        resolved, tables = analysis.resolve(catalog, shape)
        if not tables:
            return RewriteFindings()
        found = rewrites.propose(catalog, resolved.text)
        if not found.rewrites:
            return RewriteFindings(notes=found.declined)
        facts = analysis.analyse(catalog, resolved, tables, 1)
    except (PgArchitectError, UnsafeSQLError) as exc:
        return RewriteFindings(notes=(f"rewrite rules: not applied: {exc}",))
    min_gain = cfg.auditor.thresholds.min_gain_percent
    family = confidence.family_of(resolved)
    verified: list[Recommendation] = []
    advisory: list[Recommendation] = []
    notes = list(found.declined)
    for rw in found.rewrites:
        if rw.advisory:
            advisory.append(_advisory(conn, rw, facts.samples, shape.text, family))
            continue
        try:
            checked = verify.rewrite(
                staging or conn,
                catalog,
                rw.sql,
                shape=facts.shape,
                types=facts.types,
                n_samples=N_SETS,
                statement_timeout_ms=cfg.measurement.statement_timeout_ms,
                lock_timeout_ms=cfg.measurement.lock_timeout_ms,
                min_gain_percent=min_gain,
            )
        except verify.Refused as exc:
            notes.append(f"rewrite {rw.rule}: {exc}")
            continue
        m = checked.measurement
        timing = f"{m.before_ms or 0:.1f} ms -> {m.after_ms or 0:.1f} ms"
        if not checked.worth:
            notes.append(
                f"rewrite {rw.rule}: same rows on {m.samples} parameter set(s), but {timing}, gain "
                f"{m.gain_percent:.0f} %, not above {min_gain:.0f} %"
            )
            continue
        evidence = confidence.timed(
            m, what="rewrite", consistent=checked.consistent, rejected_before=rejected_before, equal_sets=m.samples
        )
        terms = list(evidence.terms)
        score = evidence.score
        if score > REWRITE_CAP:
            terms.append(f"a rewrite changes application code, so a person makes it: at most {REWRITE_CAP:.2f}")
            score = REWRITE_CAP
        verified.append(
            Recommendation(
                type="rewrite",
                sql=checked.sql,
                rollback_sql=None,
                reasoning=(
                    f"Rewrite ({rw.rule}): {rw.reason}. Verified: the same rows as the original on all {m.samples} "
                    f"sampled parameter set(s) ({', '.join(str(r) for r in checked.rows)} row(s)), compared as "
                    f"multisets in a rolled-back read-only transaction; timed {timing}, {m.gain_percent:.0f} % "
                    f"faster. Plan before: {m.plan_before}. Plan after: {m.plan_after}. Confidence: "
                    + "; ".join(terms)
                    + ". Change the statement where the application sends it: this is not a migration."
                ),
                confidence=score,
                source="advisor",
                measurement=m,
                action=action_for(score),
                kind=f"rewrite/{rw.rule}",
                family=family,
                equivalence=Equivalence(
                    original_sql=shape.text,
                    rule=rw.rule,
                    verified=True,
                    sets_compared=m.samples,
                    rows=checked.rows,
                    plan_before=m.plan_before,
                    plan_after=m.plan_after,
                    reason=rw.reason,
                ),
            )
        )
    verified.sort(key=lambda r: -(r.measurement.gain_percent if r.measurement else 0.0))
    return RewriteFindings(tuple(verified), tuple(advisory), tuple(notes))


def _advisory(conn: db.Connection, rw: rewrites.Rewrite, samples: Sequence[str], original: str, family: str) -> (
    Recommendation
):
    """An advisory rewrite, with the original's executed plan as its evidence."""
    evidence = "the original could not be planned here"
    plan_text: str | None = None
    try:
        plan = explain(conn, samples[0], analyze=True)
        plan_text = plan.text
        evidence = (
            f"the original with sampled values: {plan.ms or 0:.1f} ms, {plan.actual_rows or 0:.0f} row(s) returned; "
            f"plan: {plan.text}"
        )
    except PgArchitectError as exc:
        log.info("advisory rewrite %s: no plan: %s", rw.rule, exc)
    return Recommendation(
        type="rewrite",
        sql=rw.sql + ";",
        rollback_sql=None,
        reasoning=(
            f"Advisory rewrite ({rw.rule}): {rw.reason}. Evidence: {evidence}. Confidence: advisory, not verified "
            f"equal: {ADVISORY_CONFIDENCE:.2f} (below the pull-request threshold)."
        ),
        confidence=ADVISORY_CONFIDENCE,
        source="advisor",
        measurement=None,
        action=action_for(ADVISORY_CONFIDENCE),
        kind=f"rewrite/{rw.rule}",
        family=family,
        equivalence=Equivalence(
            original_sql=original, rule=rw.rule, verified=False, plan_before=plan_text, reason=rw.reason
        ),
    )


def _gain(rec: Recommendation | None) -> float:
    return rec.measurement.gain_percent if rec is not None and rec.measurement is not None else float("-inf")


def best(result: SlowQuery, found: RewriteFindings) -> SlowQuery:
    """``result`` (the index advisor's decision) with the rewrites weighed in: the most measured gain wins."""
    rejected = [*result.rejected, *found.notes]
    current = result.recommendation if result.status == "recommended" else None
    top = found.verified[0] if found.verified else None
    losers = [f"rewrite {r.kind}: verified, gain {_gain(r):.0f} % (less)" for r in found.verified[1:]]
    if top is not None and _gain(top) > _gain(current):
        if current is not None:
            losers.append(f"advisor's {current.sql}: gain {_gain(current):.0f} % (the rewrite gains more)")
        elif result.skip_reason:
            losers.append(f"index advisor: {result.skip_reason}")
        return dataclasses.replace(
            result, status="recommended", recommendation=top, skip_reason=None, rejected=(*rejected, *losers)
        )
    if top is not None:
        losers.insert(0, f"rewrite {top.kind}: verified, gain {_gain(top):.0f} % (the index gains more)")
    if current is None and result.recommendation is None and found.advisory and result.status != "error":
        advice = found.advisory[0]
        reason = f"{result.skip_reason}; " if result.skip_reason else ""
        return dataclasses.replace(
            result,
            recommendation=advice,
            skip_reason=f"{reason}an advisory rewrite is shown for a person to weigh (not verified equal)",
            rejected=(*rejected, *losers),
        )
    return dataclasses.replace(result, rejected=(*rejected, *losers))
