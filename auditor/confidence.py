"""How sure we are of a recommendation, from the evidence behind it, never a constant.

The score starts from how it was measured and what kind of index it is, and grows with the estimated
speed-up, both from the calibration table (auditor.calibration, docs/confidence.md); then with a plan that
visibly changed to use the index, and it moves with the knowledge base's past outcomes: people's decisions on
the same statement, and the measured accuracy of applied recommendations of the same kind (index shape,
measurement method, table size band) and of the same statement family. Every term is reported, so a reviewer
sees why.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pg_architect.auditor import calibration
from pg_architect.auditor.measure import Outcome

if TYPE_CHECKING:
    from pg_architect.auditor.advisor import Candidate
    from pg_architect.auditor.kb import Accuracy
    from pg_architect.auditor.models import Measurement
    from pg_architect.auditor.parsing import QueryShape

#: How far past accuracy moves the score: +-HISTORY_WEIGHT/2 at 0 % or 100 %, reached after HISTORY_FULL outcomes.
HISTORY_WEIGHT = 0.10
HISTORY_FULL = 5
_BANDS = ((10 << 20, "<10MB"), (1 << 30, "10MB-1GB"), (10 << 30, "1-10GB"))


def size_band(total_bytes: int) -> str:
    for limit, name in _BANDS:
        if total_bytes < limit:
            return name
    return ">10GB"


def kind_of(candidate: Candidate, method: str) -> str:
    """``btree/2keys/expr/partial rollback_build 10MB-1GB``: what past outcomes are compared by."""
    keys = len(candidate.keys)
    shape = [f"btree/{keys}key{'s' if keys > 1 else ''}"]
    if any(k.expression is not None for k in candidate.keys):
        shape.append("expr")
    if candidate.predicate:
        shape.append("partial")
    return f"{'/'.join(shape)} {method} {size_band(candidate.table.total_bytes)}"


def family_of(shape: QueryShape) -> str:
    """The statement's family: its kind and the tables it reads (``select public.orders``)."""
    return f"{shape.kind} {','.join(sorted({t.qualified for t in shape.tables}))}"


def _history_term(label: str, improved: int, verified: int) -> tuple[float, str] | None:
    if not verified:
        return None
    accuracy = improved / verified
    delta = HISTORY_WEIGHT * (accuracy - 0.5) * min(verified, HISTORY_FULL) / HISTORY_FULL
    return delta, f"{label}: {improved} of {verified} improved once applied: {delta:+.2f}"


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    score: float
    terms: tuple[str, ...]


def score(
    outcome: Outcome,
    *,
    applied_before: int = 0,
    rejected_before: int = 0,
    write_share: float = 0.0,
    dml: bool = False,
    history: Accuracy | None = None,
    recorded_mean_ms: float | None = None,
    correlation: float | None = None,
) -> Evidence:
    m = outcome.measurement
    if m is None:
        return Evidence(0.0, ("not measured",))
    # The measurement's own worth, per method and index kind, from the calibration table.
    value, terms = calibration.evidence(outcome, recorded_mean_ms, correlation)
    if outcome.used_index and m.plan_changed:
        value += 0.08
        terms.append("plan changed to use the index: +0.08")
    if outcome.consistent and m.samples > 1:
        value += 0.05
        terms.append(f"faster for all {m.samples} parameter samples: +0.05")
    elif not outcome.consistent:
        value -= 0.10
        terms.append("slower for some parameter samples: -0.10")
    if dml and write_share > 0.5:
        value -= 0.05
        terms.append(f"write-heavy table ({write_share:.0%} of its activity is writes): -0.05")
    if applied_before:
        value += 0.04
        terms.append(f"{applied_before} similar recommendation(s) applied before: +0.04")
    if rejected_before:
        value -= 0.15
        terms.append(f"{rejected_before} similar recommendation(s) rejected before: -0.15")
    if history is not None:
        for found in (
            _history_term("past recommendations of this kind", history.kind_improved, history.kind_verified),
            _history_term(
                "past recommendations for this statement family", history.family_improved, history.family_verified
            ),
        ):
            if found is not None:
                value += found[0]
                terms.append(found[1])
    return Evidence(round(min(max(value, 0.0), 1.0), 3), tuple(terms))


def timed(
    m: Measurement, *, what: str, consistent: bool, rejected_before: int = 0, equal_sets: int = 0
) -> Evidence:
    """A proposal timed beside the original statement (a rewrite, a setting): from its measured gain, whether it
    was faster on every sample, and, for a rewrite, on how many parameter sets it returned the same rows."""
    value = 0.45
    terms = [f"{what} timed beside the original: base 0.45"]
    gain = max(min(m.gain_percent, 100.0), 0.0) / 100.0
    value += 0.30 * gain
    terms.append(f"gain {m.gain_percent:.0f} %: +{0.30 * gain:.2f}")
    if consistent and m.samples > 1:
        value += 0.05
        terms.append(f"faster for all {m.samples} parameter samples: +0.05")
    elif not consistent:
        value -= 0.10
        terms.append("slower for some parameter samples: -0.10")
    if equal_sets > 1:
        value += 0.05
        terms.append(f"same rows as the original on all {equal_sets} parameter sets: +0.05")
    if rejected_before:
        value -= 0.15
        terms.append(f"{rejected_before} similar recommendation(s) rejected before: -0.15")
    return Evidence(round(min(max(value, 0.0), 1.0), 3), tuple(terms))
