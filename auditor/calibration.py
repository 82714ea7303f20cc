"""What a measured speed-up is worth as confidence, per measurement method and index kind.

A hypothetical (hypopg) measurement is a planner cost; a rolled-back or staging build is a real timing. They
predict the speed-up a built index really gives with different reliability, and per index kind: hypopg has no
statistics for an expression or a partial index, so its cost estimate for them understates the gain (the
``lower(email)`` index that measures 100x+ came out of hypopg at a 2x cost ratio). This module turns one
candidate's measurement into the evidence part of its confidence, from the table below; the table and the
outcomes it was set from are published in docs/confidence.md. History terms (past outcomes of similar
recommendations) are not here: see auditor.confidence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from pg_architect.auditor.measure import Outcome

Evidence = Literal["timed", "costed"]
Kind = Literal["column", "expression", "partial"]


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line of the calibration table."""

    prior: float  # confidence before the size of the gain is looked at
    per_decade: float  # added per factor of 10 of estimated speed-up
    cap: float  # at most this much from the speed-up
    corrected: bool  # the estimate is checked against the rows the statement's scan really keeps


#: (evidence, kind) -> row. "timed": before/after are real timings (rollback_build, staging, SELECT);
#: "costed": planner costs (hypothetical, and DML, which is never executed). The cap keeps a costed
#: estimate below pr_merge (0.90) whatever it says: only a real timing may reach an automatic merge.
TABLE: dict[tuple[Evidence, Kind], Row] = {
    ("timed", "column"): Row(0.55, 0.20, 0.30, False),
    ("timed", "expression"): Row(0.55, 0.20, 0.30, False),
    ("timed", "partial"): Row(0.55, 0.20, 0.30, False),
    ("costed", "column"): Row(0.42, 0.20, 0.33, True),
    ("costed", "expression"): Row(0.42, 0.20, 0.33, True),
    ("costed", "partial"): Row(0.42, 0.20, 0.33, True),
}

#: How many rows of a sequential scan one row fetched through an index costs (random heap access):
#: reading 0.1 % of a table through an index is then about 20x faster than scanning it.
ROW_FETCH_FACTOR = 50.0
#: Without real rows to correct it, a costed expression/partial estimate is discounted.
UNCORRECTED_PENALTY = 0.10


def kind_of(outcome: Outcome) -> Kind:
    cand = outcome.candidate
    if any(k.column is None for k in cand.keys):
        return "expression"
    if cand.predicate:
        return "partial"
    return "column"


def estimated_speedup(outcome: Outcome) -> float:
    """before / after, from real timings when the measurement has them, else from planner costs."""
    m = outcome.measurement
    if m is None:
        return 1.0
    if m.method != "hypothetical" and m.before_ms is not None and m.after_ms is not None and m.before_ms > 0:
        return m.before_ms / max(m.after_ms, 1e-3)
    if m.before_cost > 0:
        return m.before_cost / max(m.after_cost, 1e-3)
    return 1.0


def rows_speedup(outcome: Outcome) -> float | None:
    """The speed-up an index reading only the rows the statement's sequential scan of the index's table keeps
    would give over that scan; None when the statement was not executed or does not scan that table."""
    if outcome.returned_rows is None or not outcome.seq_scanned:
        return None
    table_rows = max(outcome.candidate.table.reltuples, 1.0)
    return table_rows / (ROW_FETCH_FACTOR * (outcome.returned_rows + 1.0))


def evidence(outcome: Outcome) -> tuple[float, list[str]]:
    """The calibrated part of the confidence: prior plus the estimated speed-up's worth, with its terms."""
    m = outcome.measurement
    if m is None:
        return 0.0, ["not measured"]
    timed = m.method != "hypothetical" and m.before_ms is not None and m.after_ms is not None
    source: Evidence = "timed" if timed else "costed"
    kind = kind_of(outcome)
    row = TABLE[(source, kind)]
    terms = [f"{m.method} measurement ({source}, {kind} index): base {row.prior:.2f}"]
    value = row.prior
    speedup = estimated_speedup(outcome)
    if row.corrected and kind == "column":
        # hypopg costs a column index from the column's statistics, for the sampled values; what the scan of
        # the table really kept checks it: the geometric mean of the two (bench/advisor: a 13x cost estimate for
        # a 500x index, a 53x one for a decoy whose scan kept 5 % of the table).
        by_rows = rows_speedup(outcome)
        if by_rows is not None:
            combined = math.sqrt(max(speedup, 1e-3) * max(by_rows, 1e-3))
            terms.append(
                f"the scan keeps {outcome.returned_rows:.0f} of {outcome.candidate.table.reltuples:.0f} rows "
                f"(about {by_rows:.1f}x for an index), cost estimate {speedup:.1f}x: {combined:.1f}x"
            )
            speedup = combined
    elif row.corrected:
        by_rows = rows_speedup(outcome)
        if by_rows is not None and by_rows > speedup:
            terms.append(
                f"hypopg has no statistics for this index; the statement's scan keeps {outcome.returned_rows:.0f} of "
                f"{outcome.candidate.table.reltuples:.0f} rows, which an index reads about {by_rows:.0f}x faster "
                f"than its scan (cost estimate {speedup:.1f}x)"
            )
            speedup = by_rows
        elif by_rows is None:
            value -= UNCORRECTED_PENALTY
            terms.append(f"{kind} index costed without statistics (hypopg): -{UNCORRECTED_PENALTY:.2f}")
    worth = min(max(math.log10(max(speedup, 1.0)) * row.per_decade, 0.0), row.cap)
    value += worth
    terms.append(f"estimated speed-up {speedup:.1f}x: +{worth:.2f}")
    return value, terms
