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
from pg_architect.auditor.models import action_for

Evidence = Literal["timed", "costed"]
Kind = Literal["column", "expression", "partial"]
RowsUse = Literal["never", "raise"]


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line of the calibration table."""

    prior: float  # confidence before the size of the gain is looked at
    per_decade: float  # added per factor of 10 of estimated speed-up
    cap: float  # at most this much from the speed-up
    rows: RowsUse  # "raise": the rows the statement's scan keeps may raise the estimate (never lower it)


#: (evidence, kind) -> row. "timed": before/after are real timings (rollback_build, staging, SELECT);
#: "costed": planner costs (hypothetical, and DML, which is never executed). The cap keeps a costed
#: estimate below pr_merge (0.90) whatever it says: only a real timing may reach an automatic merge.
#: Set from bench/advisor's measurements (docs/confidence.md): a costed column index is used by the plan
#: whose cost it cuts, and hypopg's estimate of it is the planner's own, so it needs no correction; a
#: costed estimate of 8x or more (about the least that the indexes measured at 5x and more were costed at)
#: reaches pr_review with a plan that changed and every sample faster.
TABLE: dict[tuple[Evidence, Kind], Row] = {
    ("timed", "column"): Row(0.55, 0.20, 0.30, "never"),
    ("timed", "expression"): Row(0.55, 0.20, 0.30, "never"),
    ("timed", "partial"): Row(0.55, 0.20, 0.30, "never"),
    ("costed", "column"): Row(0.42, 0.28, 0.33, "never"),
    ("costed", "expression"): Row(0.42, 0.28, 0.33, "raise"),
    ("costed", "partial"): Row(0.42, 0.28, 0.33, "raise"),
}

#: How many rows of a sequential scan one row fetched through an index costs (random heap access):
#: reading 0.1 % of a table through an index is then about 20x faster than scanning it.
ROW_FETCH_FACTOR = 50.0
#: Without real rows to raise it, a costed expression/partial estimate is discounted.
UNCORRECTED_PENALTY = 0.10
#: The measured samples ran in at least this share of the statement's recorded mean: they did about the
#: work the application's calls do (a loaded machine makes the two differ by 2x either way).
REPRESENTATIVE = 0.40
#: What a plan that changed to use the index and every sample faster add (auditor.confidence).
PLAN_AND_SAMPLES = 0.08 + 0.05


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


def fetch_factor(correlation: float | None) -> float:
    """How many rows of a sequential scan one row fetched through the index costs, given the correlation between
    the index's order and the table's physical order (pg_stats): PostgreSQL's own cost model interpolates an
    index scan's I/O between random (uncorrelated) and sequential (perfectly correlated) by correlation², and
    so does this. Rows of one day in a table written in time order sit together on a few pages."""
    c2 = min(max(correlation or 0.0, -1.0), 1.0) ** 2
    return 1.0 + (ROW_FETCH_FACTOR - 1.0) * (1.0 - c2)


def rows_speedup(outcome: Outcome, correlation: float | None = None) -> float | None:
    """The speed-up an index reading only the rows the statement's sequential scan of the index's table keeps
    would give over that scan; None when the statement was not executed or does not scan that table.
    ``correlation``: of the index's leading key with the table's physical order (None: unknown, random)."""
    if outcome.returned_rows is None or not outcome.seq_scanned:
        return None
    table_rows = max(outcome.candidate.table.reltuples, 1.0)
    return table_rows / (fetch_factor(correlation) * (outcome.returned_rows + 1.0))


def unseen_work_bound(speedup: float, sample_ms: float, recorded_mean_ms: float) -> float:
    """The speed-up left when the application's calls do work the samples did not (``recorded_mean_ms`` -
    ``sample_ms``) and the index removes none of it: the least the index can give the recorded statement."""
    unseen = max(recorded_mean_ms - sample_ms, 0.0)
    return recorded_mean_ms / max(sample_ms / max(speedup, 1e-3) + unseen, 1e-3)


def evidence(
    outcome: Outcome, recorded_mean_ms: float | None = None, correlation: float | None = None
) -> tuple[float, list[str]]:
    """The calibrated part of the confidence: prior plus the estimated speed-up's worth, with its terms.

    ``recorded_mean_ms`` is the statement's mean in pg_stat_statements: samples that ran much faster than it
    did less work than the application's calls (a narrower range, fewer partitions, fewer groups), and the
    speed-up measured on them says less about the recorded statement. ``correlation`` is the index's leading
    key's with the table's physical order (see ``fetch_factor``), when the catalog knows it."""
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
    if row.rows == "raise":
        # hypopg has no statistics for an expression or a partial index and understates them; the rows the
        # statement's scan of the table really keeps say what an index on them reads instead.
        by_rows = rows_speedup(outcome, correlation)
        if by_rows is not None and by_rows > speedup:
            order = (
                f", in the table's physical order (correlation {correlation:.2f})"
                if correlation is not None and abs(correlation) >= 0.5
                else ""
            )
            terms.append(
                f"hypopg has no statistics for this index; the statement's scan keeps {outcome.returned_rows:.0f} of "
                f"{outcome.candidate.table.reltuples:.0f} rows{order}, which an index reads about {by_rows:.0f}x "
                f"faster than its scan (cost estimate {speedup:.1f}x)"
            )
            speedup = by_rows
        elif by_rows is None:
            value -= UNCORRECTED_PENALTY
            terms.append(f"{kind} index costed without statistics (hypopg): -{UNCORRECTED_PENALTY:.2f}")
    if recorded_mean_ms and m.before_ms and m.samples:
        sample_ms = m.before_ms / m.samples
        share = sample_ms / recorded_mean_ms
        if share < REPRESENTATIVE:
            low = unseen_work_bound(speedup, sample_ms, recorded_mean_ms)
            bounded = math.sqrt(max(speedup, 1e-3) * max(low, 1e-3))
            terms.append(
                f"the samples ran in {sample_ms:.1f} ms, {share:.0%} of the recorded mean {recorded_mean_ms:.1f} ms: "
                f"between {low:.1f}x (the work they missed gains nothing) and {speedup:.1f}x: {bounded:.1f}x"
            )
            speedup = bounded
    worth = min(max(math.log10(max(speedup, 1.0)) * row.per_decade, 0.0), row.cap)
    value += worth
    terms.append(f"estimated speed-up {speedup:.1f}x: +{worth:.2f}")
    return value, terms


# -- the published table (docs/confidence.md; tests/test_confidence_calibration.py keeps the two equal) ------

_KIND_NAMES: dict[Kind, str] = {"column": "column(s)", "expression": "expression", "partial": "partial"}
_ROWS_NAMES: dict[RowsUse, str] = {"never": "no", "raise": "may raise the estimate"}


def table_markdown() -> str:
    """The calibration table as docs/confidence.md shows it."""
    lines = [
        "| evidence | index kind | prior | per decade | cap | rows the scan keeps |",
        "|---|---|---|---|---|---|",
    ]
    for (source, kind), row in TABLE.items():
        lines.append(
            f"| {source} | {_KIND_NAMES[kind]} | {row.prior:.2f} | {row.per_decade:.2f} | {row.cap:.2f} "
            f"| {_ROWS_NAMES[row.rows]} |"
        )
    return "\n".join(lines)


def examples_markdown() -> str:
    """What the table gives for a column index, with a plan that changed and every sample faster."""
    lines = ["| estimated speed-up | timed | costed |", "|---|---|---|"]
    for speedup in (1.5, 3.0, 5.0, 8.0, 30.0, 100.0):
        cells = []
        sources: tuple[Evidence, ...] = ("timed", "costed")
        for source in sources:
            row = TABLE[(source, "column")]
            value = row.prior + min(math.log10(speedup) * row.per_decade, row.cap) + PLAN_AND_SAMPLES
            value = round(min(value, 1.0), 2)
            cells.append(f"{value:.2f} `{action_for(value)}`")
        lines.append(f"| {speedup:g}x | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
