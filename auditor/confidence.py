"""How sure we are of a recommendation, from the evidence behind it, never a constant.

The score starts from how it was measured and what kind of index it is, and grows with the estimated
speed-up, both from the calibration table (auditor.calibration, docs/confidence.md); then with a plan that
visibly changed to use the index, and it moves with the knowledge base's past outcomes for similar
statements. Every term is reported, so a reviewer sees why.
"""

from __future__ import annotations

import dataclasses

from pg_architect.auditor import calibration
from pg_architect.auditor.measure import Outcome


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    score: float
    terms: tuple[str, ...]


def score(
    outcome: Outcome, *, applied_before: int = 0, rejected_before: int = 0, write_share: float = 0.0, dml: bool = False
) -> Evidence:
    m = outcome.measurement
    if m is None:
        return Evidence(0.0, ("not measured",))
    # The measurement's own worth, per method and index kind, from the calibration table.
    value, terms = calibration.evidence(outcome)
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
    return Evidence(round(min(max(value, 0.0), 1.0), 3), tuple(terms))
