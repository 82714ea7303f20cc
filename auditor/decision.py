"""What the audit concludes for one statement: a pure function of the measured outcomes and the thresholds.

No database, no clock, no knowledge base: the same outcomes give the same decision, which the unit tests
(tests/test_decision.py) check in milliseconds. The audit builds the recommendation's text around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from pg_architect.auditor.measure import Outcome

Status = Literal["recommended", "no_recommendation", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    best: Outcome | None  # the candidate the statement's report shows (recommended, or the best rejected)
    reason: str | None  # why nothing is recommended; None when something is
    rejected: tuple[str, ...]  # every other candidate, with why it lost


def worth_applying(outcome: Outcome, min_gain_percent: float) -> bool:
    """The plan uses the index and the measured gain clears the threshold."""
    m = outcome.measurement
    return m is not None and outcome.used_index and m.gain_percent > min_gain_percent


def rank(outcome: Outcome) -> tuple[bool, float]:
    """Candidates the plan uses first, then by measured gain; ties keep the advisor's order."""
    m = outcome.measurement
    return (outcome.used_index, m.gain_percent if m is not None else float("-inf"))


#: Two measurements this close are the same to us: timings within 25 % (and 0.05 ms; a shared, loaded machine
#: varies that much between two runs of one statement), costs within 2 %.
TIME_NOISE = 0.25
TIME_NOISE_MS = 0.05
COST_NOISE = 0.02


def same_family(a: Outcome, b: Outcome) -> bool:
    """One candidate's keys begin with the other's on the same table: ``(customer_id)`` and
    ``(customer_id, created_at)``, which timing noise alone tells apart."""
    x, y = a.candidate, b.candidate
    if x.table.oid != y.table.oid or x.predicate != y.predicate:
        return False
    kx, ky = [k.normalised() for k in x.keys], [k.normalised() for k in y.keys]
    n = min(len(kx), len(ky))
    return kx[:n] == ky[:n]


def as_good(outcome: Outcome, best: Outcome) -> bool:
    """``outcome`` measured as well as ``best`` up to the noise of one measurement."""
    m, b = outcome.measurement, best.measurement
    if m is None or b is None:
        return False
    if m.after_ms is not None and b.after_ms is not None:
        return m.after_ms <= b.after_ms * (1 + TIME_NOISE) + TIME_NOISE_MS
    return m.after_cost <= b.after_cost * (1 + COST_NOISE)


def decide(
    outcomes: Sequence[Outcome], *, method: str, notes: Sequence[str] = (), min_gain_percent: float
) -> Decision:
    """The status of a statement whose candidates were measured by ``method``.

    ``notes`` are the advisor's findings (an existing index already covers a candidate, say); they lead
    the reason when nothing is recommended, because they are what a reviewing DBA checks first.
    """
    rejected = [f"{o.candidate.describe()}: {o.error}" for o in outcomes if o.error]
    measured = [o for o in outcomes if o.measurement is not None]
    if not measured:
        return Decision("error", None, "no candidate could be measured: " + "; ".join(rejected), tuple(rejected))
    best = measured[0]
    for o in measured[1:]:
        if rank(o) > rank(best):
            best = o
    # Timing noise must not pick the index: among the best's family (one's keys begin with the other's) as good
    # as it within noise, the advisor's first wins, so the same data gives the same recommendation each run.
    best = next(
        (o for o in measured if o.used_index == best.used_index and same_family(o, best) and as_good(o, best)), best
    )
    rejected += [
        f"{o.candidate.describe()}: gain {o.measurement.gain_percent:.0f} %"
        for o in measured
        if o is not best and o.measurement is not None
    ]
    if worth_applying(best, min_gain_percent):
        return Decision("recommended", best, None, tuple(rejected))
    assert best.measurement is not None
    why = (
        "the plan does not use it"
        if not best.used_index
        else f"gain {best.measurement.gain_percent:.0f} % is not above {min_gain_percent:.0f} %"
    )
    reason = "; ".join(
        [*notes, f"no new index helps enough: best candidate {best.candidate.describe()} ({method}): {why}"]
    )
    return Decision("no_recommendation", best, reason, tuple(rejected))
