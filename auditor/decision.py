"""What the audit concludes for one statement: a pure function of the measured outcomes and the thresholds.

No database, no clock, no knowledge base: the same outcomes give the same decision, which the unit tests
(tests/test_decision.py) check in milliseconds. The audit builds the recommendation's text around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from pg_architect.auditor.measure import COST_NOISE, TIME_NOISE, TIME_NOISE_MS, Outcome, clears_threshold

Status = Literal["recommended", "no_recommendation", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    best: Outcome | None  # the candidate the statement's report shows (recommended, or the best rejected)
    reason: str | None  # why nothing is recommended; None when something is
    rejected: tuple[str, ...]  # every other candidate, with why it lost


def worth_applying(outcome: Outcome, min_gain_percent: float) -> bool:
    """The plan uses the index and the measured gain clears the threshold by more than timing noise."""
    m = outcome.measurement
    return m is not None and outcome.used_index and clears_threshold(m, min_gain_percent)


def rank(outcome: Outcome) -> tuple[bool, float]:
    """Candidates the plan uses first, then by measured gain; ties keep the advisor's order."""
    m = outcome.measurement
    return (outcome.used_index, m.gain_percent if m is not None else float("-inf"))


#: Within one family (one candidate's keys begin with the other's, on the same table) the two serve the same
#: lookups; on a loaded machine they were timed up to twice apart run after run, and the pick flipped between
#: ``(col1)`` and ``(col1, date_col)``. Within a family, times this far apart are the same.
FAMILY_NOISE = 1.0


def same_family(a: Outcome, b: Outcome) -> bool:
    """One candidate's keys begin with the other's on the same table: ``(customer_id)`` and
    ``(customer_id, created_at)``."""
    x, y = a.candidate, b.candidate
    if x.table.oid != y.table.oid or x.predicate != y.predicate:
        return False
    kx, ky = [k.normalised() for k in x.keys], [k.normalised() for k in y.keys]
    n = min(len(kx), len(ky))
    return kx[:n] == ky[:n]


#: Two candidates that both leave under this share of the statement's cost, or of its time, save the same
#: time: the difference is within the cost model's error, or within a loaded machine's sub-millisecond noise.
#: hypopg costed ``jobs(state)`` at 117 and ``jobs(queue, state, run_at)`` at about 200 for a 55,000 statement
#: (built, 73x and 222x); the peer suite's MI3 timed ``(status, sale_date)`` and ``(sale_date)`` at 0.39-0.64 ms
#: against 100 ms, apart by more than the timing band in one run of three. The advisor's first then stays.
SHARE_FLOOR = 0.005


def as_good(outcome: Outcome, best: Outcome, noise: float = TIME_NOISE) -> bool:
    """``outcome`` measured as well as ``best`` up to the noise of one measurement (``noise``).

    Each candidate's time is taken relative to the statement's time measured next to it (the machine's load
    drifts from one candidate to the next): its time after is scaled to ``best``'s time before. Costs compare
    within COST_NOISE; both with a floor of SHARE_FLOOR of the statement's cost or time before."""
    m, b = outcome.measurement, best.measurement
    if m is None or b is None:
        return False
    if m.after_ms is not None and b.after_ms is not None:
        scale = b.before_ms / m.before_ms if m.before_ms and b.before_ms else 1.0
        floor_ms = max(TIME_NOISE_MS, SHARE_FLOOR * (b.before_ms or 0.0))
        return m.after_ms * scale <= b.after_ms * (1 + noise) + floor_ms
    return m.after_cost <= b.after_cost * (1 + COST_NOISE) + SHARE_FLOOR * max(b.before_cost, 0.0)


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
    # Timing noise must not pick the index: among the candidates as good as the best within noise (same table or
    # not, one's keys the other's prefix or not), the advisor's first wins. Its order comes from the statement and
    # the catalog, never from a timing, so the same data gives the same recommendation each run.
    # Within a family the band is wider (FAMILY_NOISE); never so wide that a candidate below the threshold
    # replaces one above it.
    best = next(
        (
            o
            for o in measured
            if o.used_index == best.used_index
            and (as_good(o, best) or (same_family(o, best) and as_good(o, best, FAMILY_NOISE)))
            and (worth_applying(o, min_gain_percent) or not worth_applying(best, min_gain_percent))
        ),
        best,
    )
    rejected += [
        f"{o.candidate.describe()}: gain {o.measurement.gain_percent:.0f} %"
        for o in measured
        if o is not best and o.measurement is not None
    ]
    if worth_applying(best, min_gain_percent):
        return Decision("recommended", best, None, tuple(rejected))
    assert best.measurement is not None
    if not best.used_index:
        why = "the plan does not use it"
    elif best.measurement.gain_percent > min_gain_percent:
        why = (
            f"gain {best.measurement.gain_percent:.0f} % is above {min_gain_percent:.0f} % by less than timing "
            f"noise ({TIME_NOISE * 100:.0f} % between two runs of one statement here)"
        )
    else:
        why = f"gain {best.measurement.gain_percent:.0f} % is not above {min_gain_percent:.0f} %"
    reason = "; ".join(
        [*notes, f"no new index helps enough: best candidate {best.candidate.describe()} ({method}): {why}"]
    )
    return Decision("no_recommendation", best, reason, tuple(rejected))


#: Azure's rule for a workload's indexes: no other statement may get more than 10 % slower.
REGRESSION = 0.10


def regression_percent(with_other: Outcome, own: Outcome | None) -> float | None:
    """How much slower a statement runs with another statement's index in place (``with_other``, measured with
    the statement's own choice alongside) than with its own choice alone (``own``, or as it is now when it has
    none), in percent; None unless that is more than ``REGRESSION`` beyond timing noise.

    Timings are compared after the noise of one measurement: only a slowdown of more than
    (1 + REGRESSION) x (1 + TIME_NOISE) counts, or a good index would be withdrawn for a loaded machine's hiccup.
    Planner costs (DML's include the upkeep of every index it writes to) have no noise: more than REGRESSION
    counts.
    """
    m = with_other.measurement
    ref = own.measurement if own is not None else None
    if m is None or (own is not None and ref is None):
        return None
    ref_ms = ref.after_ms if ref is not None else m.before_ms
    ref_cost = ref.after_cost if ref is not None else m.before_cost
    if m.after_ms is not None and ref_ms is not None and ref_ms > 0:
        limit = ref_ms * (1 + REGRESSION) * (1 + TIME_NOISE) + TIME_NOISE_MS * max(m.samples, 1)
        return (m.after_ms / ref_ms - 1) * 100.0 if m.after_ms > limit else None
    if ref_cost > 0 and m.after_cost > ref_cost * (1 + REGRESSION):
        return (m.after_cost / ref_cost - 1) * 100.0
    return None
