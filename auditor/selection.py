"""The indexes for the whole workload, chosen after each statement chose its own.

Each statement's measurement picks the best index for that statement alone. Over a workload that can go
wrong in two ways, and this module checks both with the method and the very samples each statement was
measured with (rollback_build builds in a transaction that is rolled back, hypopg plans hypothetical indexes):

1. Two statements want ``(a)`` and ``(a, b)``: the wider index may serve both, and one index costs less to keep
   up than two. The narrower one's statements are measured again with the wider index; when it is as good
   within a family's noise (decision.FAMILY_NOISE) and still clears the threshold, they get the wider one, and
   one index serves them all.
2. An index chosen for one statement may change another statement's plan for the worse (a LIMIT that hopes
   to stop early on an index walks it to the end), and every DML statement on its table must write to it. With
   the whole set in place every measured statement on those tables is planned again; one whose plan now uses
   another statement's index, or that writes to it, is measured with that index beside its own choice against
   its own choice alone. More than ``REGRESSION`` slower (beyond timing noise) is reported on that statement. A
   read measured slower withdraws the index when the workload loses more time than the index saves; otherwise
   (or when the loss is DML's modelled upkeep) the index stays, says so, and goes to a review.

One index recommended for several statements is then one index (``audit._shared_indexes`` names it once).
Deterministic: where two indexes could be chosen (two equally wide ones that serve a narrower one, two
definitions with one signature) the index's name decides, never the window's order (which follows timings);
timings only pass or fail thresholds that carry a noise margin.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from pg_architect.auditor.advisor import Candidate
from pg_architect.auditor.catalog import TableInfo
from pg_architect.auditor.decision import FAMILY_NOISE, REGRESSION, as_good, regression_percent, worth_applying
from pg_architect.auditor.measure import SAMPLE_TIMEOUT_FACTOR, Measurer, Outcome, Recorded, Writes
from pg_architect.core.errors import PgArchitectError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    """One statement as its own measurement left it: what the workload check measures again."""

    fingerprint: str
    queryid: str
    kind: str
    samples: tuple[str, ...]  # the samples its measurement kept
    tables: tuple[TableInfo, ...]
    recorded: Recorded
    writes: Writes | None
    total_ms: float  # calls x mean in the window: its weight in the workload
    chosen: Outcome | None  # the recommended index's outcome, None when nothing was recommended


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What the workload check changed for one statement's recommendation."""

    outcome: Outcome | None  # the index it gets now (measured for it), None when its index is withdrawn
    note: str  # why, for the reasoning (or the skip reason when withdrawn)
    demote: bool = False  # kept, but it slows another statement: never merged without a review


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    changes: dict[str, Change]  # by fingerprint
    regressed: dict[str, str]  # fingerprint of a statement another's index would slow -> what was done


def extends(wider: Candidate, narrower: Candidate) -> bool:
    """``wider``'s keys begin with all of ``narrower``'s (and more), on the same table, with the same predicate."""
    if wider.table.oid != narrower.table.oid or wider.predicate != narrower.predicate:
        return False
    w, n = wider.signature()[1], narrower.signature()[1]
    return len(w) > len(n) and w[: len(n)] == n


def select(measurer: Measurer, statements: Sequence[Measured], *, min_gain_percent: float) -> Selection:
    """The workload-level changes to the statements' own choices (``statements`` in the window's order)."""
    current: dict[str, Outcome] = {s.fingerprint: s.chosen for s in statements if s.chosen is not None}
    changes: dict[str, Change] = {}
    by_fingerprint = {s.fingerprint: s for s in statements}
    queryid = {s.fingerprint: s.queryid for s in statements}

    # 1. One wider index for the statements a narrower one was chosen for.
    for s in statements:
        mine = current.get(s.fingerprint)
        if mine is None:
            continue
        wider = _widest_extending(mine.candidate, [current[f] for f in current if f != s.fingerprint])
        if wider is None:
            continue
        outcomes = _measure(measurer, s, [mine.candidate, wider.candidate])
        if outcomes is None:
            continue
        again, theirs = outcomes
        # A wider index that begins with the narrower one's keys is of its family: within FAMILY_NOISE the two
        # serve the statement alike (as auditor.decision judges a statement's own candidates), and one index
        # then does the work of two. With the narrower band the merge came and went with the machine's load.
        if theirs.used_index and worth_applying(theirs, min_gain_percent) and as_good(theirs, again, FAMILY_NOISE):
            served = [queryid[f] for f, o in current.items() if o.candidate.signature() == wider.candidate.signature()]
            current[s.fingerprint] = theirs
            changes[s.fingerprint] = Change(
                theirs,
                f" Chosen for the workload: {wider.candidate.describe()}, the index of statement(s) "
                f"{', '.join(served)}, serves this one as well as {mine.candidate.describe()} did (measured again "
                "with both), so one index does the work of two.",
            )
            log.info("workload: %s served by %s", s.queryid, wider.candidate.describe())

    # 2. With the whole set in place, no other statement's plan may get worse by more than REGRESSION.
    chosen: dict[tuple[int, tuple[str, ...], str | None], Candidate] = {}
    for outcome in sorted(current.values(), key=lambda o: o.candidate.name()):
        chosen.setdefault(outcome.candidate.signature(), outcome.candidate)
    if not chosen:
        return Selection(changes, {})
    touched = {c.table.oid for c in chosen.values()}
    check = [s for s in statements if s.samples and any(t.oid in touched for t in s.tables)]
    tables = list({t.oid: t for s in check for t in s.tables}.values())
    try:
        used = measurer.indexes_used_with(list(chosen.values()), [(s.kind, s.samples) for s in check], tables)
    except PgArchitectError as exc:
        log.warning("workload check skipped: %s", exc)
        return Selection(changes, {})
    harm: dict[tuple[int, tuple[str, ...], str | None], list[tuple[Measured, float]]] = {}
    for s, names in zip(check, used, strict=True):
        own = current.get(s.fingerprint)
        own_name = own.candidate.name() if own is not None else None
        # Another statement's index matters to this one when its plan uses it with the whole set in place, or
        # when it is DML that must write to it (and may lose its HOT updates), used or not.
        others = [
            c
            for c in chosen.values()
            if c.name() != own_name
            and (
                c.name() in names
                or (s.writes is not None and c.table.oid == s.writes.table_oid and s.writes.per_row(c)[1] is not None)
            )
        ]
        if not others:
            continue
        reference = _measure(measurer, s, [own.candidate]) if own is not None else None
        if own is not None and reference is None:
            continue
        for other in others:
            outcomes = _measure(
                measurer, s, [other], alongside=[own.candidate] if own is not None else [], too_slow_counts=True
            )
            if outcomes is None:
                continue
            worse = (
                # Cancelled at SAMPLE_TIMEOUT_FACTOR times the recorded mean: slower by at least that much.
                (SAMPLE_TIMEOUT_FACTOR - 1.0) * 100.0
                if outcomes[0].too_slow
                else regression_percent(outcomes[0], reference[0] if reference is not None else None)
            )
            if worse is not None:
                harm.setdefault(other.signature(), []).append((s, worse))
                log.info("workload: %s is %.0f %% slower with %s", s.queryid, worse, other.describe())

    regressed: dict[str, str] = {}
    for signature, hurt in harm.items():
        index = chosen[signature]
        owners = [f for f, o in current.items() if o.candidate.signature() == signature]
        saved = sum(by_fingerprint[f].total_ms * max(_gain(current[f]), 0.0) / 100.0 for f in owners)
        lost = sum(s.total_ms * worse / 100.0 for s, worse in hurt)
        which = "; ".join(f"statement {s.queryid} {worse:.0f} % slower" for s, worse in hurt)
        # A read's plan measured slower is evidence like the gain itself: it can withdraw the index. DML is only
        # planned, and what an index adds to it is a modelled upkeep (auditor.measure.Writes): stated, and the
        # index goes to a review, but a model does not outweigh a measured gain.
        measured_loss = sum(s.total_ms * worse / 100.0 for s, worse in hurt if s.writes is None)
        withdraw = measured_loss > 0 and measured_loss >= saved
        for f in owners:
            merged = changes[f].note if f in changes else ""
            changes[f] = Change(
                None if withdraw else current[f],
                (
                    f"withdrawn for the workload: with {index.describe()} in place, another slow statement's plan "
                    f"uses it and gets worse by more than {REGRESSION * 100:.0f} % ({which}), which costs the "
                    f"workload more time ({lost:.0f} ms in the window) than the index saves ({saved:.0f} ms)"
                )
                if withdraw
                else merged
                + (
                    f" Workload check: with this index in place another slow statement (its plan uses it, or it "
                    f"writes to it) gets worse by more than {REGRESSION * 100:.0f} % ({which}); the index saves "
                    f"more time in the window ({saved:.0f} ms) than that costs ({lost:.0f} ms), so it stays, for a "
                    "review."
                ),
                demote=not withdraw,
            )
        for s, worse in hurt:
            regressed[s.fingerprint] = (
                f"index {index.describe()}, recommended for statement(s) {', '.join(queryid[f] for f in owners)}, "
                f"makes this statement {worse:.0f} % slower: " + ("withdrawn" if withdraw else "kept for a review")
            )
    return Selection(changes, regressed)


def _gain(outcome: Outcome) -> float:
    return outcome.measurement.gain_percent if outcome.measurement is not None else 0.0


def _widest_extending(candidate: Candidate, others: Sequence[Outcome]) -> Outcome | None:
    """Of the other chosen indexes, the one with most keys that begins with all of ``candidate``'s."""
    wider = [o for o in others if extends(o.candidate, candidate)]
    # Most keys first, then by name: the window's order follows timings, a tie must not.
    return min(wider, key=lambda o: (-len(o.candidate.keys), o.candidate.name()), default=None)


def _measure(
    measurer: Measurer,
    s: Measured,
    candidates: list[Candidate],
    alongside: Sequence[Candidate] = (),
    *,
    too_slow_counts: bool = False,
) -> list[Outcome] | None:
    """``candidates`` measured for ``s`` one after the other (each with ``alongside`` in place too), with its own
    samples; None when any could not be (a sample cancelled as too slow with the index is an outcome when
    ``too_slow_counts``)."""
    try:
        _, outcomes = measurer.measure(
            s.kind,
            s.samples,
            candidates,
            s.tables,
            s.recorded,
            keep=len(s.samples),
            writes=s.writes,
            alongside=alongside,
        )
    except PgArchitectError as exc:
        log.info("workload: statement %s not measured again: %s", s.queryid, exc)
        return None
    if len(outcomes) != len(candidates) or any(
        o.measurement is None and not (too_slow_counts and o.too_slow) for o in outcomes
    ):
        return None
    return outcomes
