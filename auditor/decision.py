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


# Timings within this factor of the fastest are the same to the measurement (a shared machine varies more).
TIMING_NOISE = 1.25


def rank(outcome: Outcome) -> tuple[bool, float]:
    """Candidates the plan uses first, then by measured gain; ties keep the advisor's order."""
    m = outcome.measurement
    return (outcome.used_index, m.gain_percent if m is not None else float("-inf"))


def _within_noise(a: Outcome, b: Outcome) -> bool:
    """Both timed, and ``a`` is at most TIMING_NOISE times slower than ``b``."""
    ma, mb = a.measurement, b.measurement
    if ma is None or mb is None or ma.after_ms is None or mb.after_ms is None:
        return False
    return ma.after_ms <= mb.after_ms * TIMING_NOISE


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
    # Timings that differ by less than their noise do not decide: the plan's estimated cost does (the index
    # that serves the whole filter beats one that serves part of it when both are "fast"); ties keep the
    # advisor's order. Deterministic whatever the machine's load.
    close = [o for o in measured if o.used_index == best.used_index and _within_noise(o, best)]
    if len(close) > 1:
        best = min(close, key=lambda o: o.measurement.after_cost if o.measurement is not None else float("inf"))
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
