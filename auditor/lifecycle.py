"""What becomes of a recommendation after the audit: its lifecycle, and whether it really helped.

``pending -> pr_open -> merged -> applied``, or ``rejected`` (a PR closed unmerged, or a person),
``superseded`` (a newer recommendation for the statement) or ``obsolete`` (the statement disappeared, or the
applied index was dropped). Each transition is an event with its time, source (github, git, catalog, person,
audit), who and why (``KnowledgeBase.transition``).

The catalog is the ground truth for ``applied``: at every snapshot and audit the audited database's indexes are
compared with each recommendation by definition, name aside (``pg_get_indexdef`` of the recommended index built
on an empty copy of the table, inside a transaction that rolls back). Once applied, the statement's mean time,
calls and rows before and after are taken from the stored pg_stat_statements snapshots and the outcome is
classified against the predicted gain.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream

from pg_architect.auditor import plans, pullrequests
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.kb import Figures, KnowledgeBase, Optimization, SnapshotRef, Tracked
from pg_architect.auditor.measure import rolled_back
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import DatabaseError, PgArchitectError, UsageError

log = logging.getLogger(__name__)

STATUSES = ("pending", "pr_open", "merged", "applied", "rejected", "superseded", "obsolete")
#: Waiting for the index to appear: a person, a PR or a deployment has it in hand.
OPEN = ("pending", "pr_open", "merged")
OUTCOMES = ("improved", "improved_less", "no_change", "regressed")
SOURCES = ("github", "git", "catalog", "person", "audit")
DECISIONS = ("accepted", "rejected")

#: A measured change within +-10 % of the mean is noise (pg_stat_statements means move that much week to week).
NOISE_PERCENT = 10.0
#: "improved" means within the predicted range: at least half the predicted gain was measured.
PREDICTED_SHARE = 0.5


class LifecycleError(PgArchitectError):
    """A decision that does not apply to the recommendation as it stands."""


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogIndex:
    name: str
    valid: bool
    signature: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Qualified:
    qualified: str | None


# -- the index's definition, name aside ---------------------------------------------------------------------


def index_signature(conn: db.Connection, sql: str) -> str | None:
    """``<schema>.<table> USING <method> (<keys>) [WHERE ...]`` of a recommended ``CREATE INDEX`` as this server
    prints it (expressions with their casts), or None when it is no ``CREATE INDEX`` or its table is gone.

    PostgreSQL normalises the definition itself: the index is built on an empty temporary copy of the table's
    columns, read back with ``pg_get_indexdef``, and everything rolls back.
    """
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.IndexStmt):
        return None
    stmt = statements[0].stmt
    rel = stmt.relation
    if rel is None or not rel.relname:
        return None
    name = db.Identifier(*([rel.schemaname] if rel.schemaname else []), rel.relname).as_string(conn)
    table = db.fetch_one(conn, db.query(conn, QUERIES, "catalog_table_name"), {"name": name}, _Qualified)
    if table is None or table.qualified is None:
        return None
    stmt.relation = ast.RangeVar(relname="pgarch_signature", inh=True, relpersistence="t")
    stmt.idxname = "pgarch_signature_idx"
    stmt.concurrent = False
    stmt.if_not_exists = False
    using: str | None = None
    with rolled_back(conn):
        db.execute(
            conn,
            db.SQL("CREATE TEMP TABLE pgarch_signature (LIKE {}) ON COMMIT DROP").format(
                db.SQL(table.qualified)  # quote_ident output from the catalog
            ),
        )
        db.execute(conn, RawStream()(stmt))
        using = db.fetch_value(conn, db.query(conn, QUERIES, "catalog_temp_signature"))
    return f"{table.qualified} {using}" if using else None


def catalog_indexes(conn: db.Connection) -> list[CatalogIndex]:
    return db.fetch(conn, db.query(conn, QUERIES, "catalog_index_signatures"), None, CatalogIndex)


# -- following the catalog ------------------------------------------------------------------------------------


def check_catalog(conn: db.Connection, kb: KnowledgeBase, tracked: Sequence[Tracked], now: datetime) -> list[str]:
    """Open index recommendations whose index now exists become ``applied``; applied ones whose index is gone
    become ``obsolete`` (the outcome keeps the drop's time). Returns what changed, one line each."""
    changes: list[str] = []
    present: dict[str, CatalogIndex] = {}
    for index in catalog_indexes(conn):
        if index.signature and (index.valid or index.signature not in present):
            present[index.signature] = index
    absent: list[int] = []
    for rec in tracked:
        if rec.type != "index":
            continue
        signature = rec.index_signature
        if signature is None:
            try:
                signature = index_signature(conn, rec.sql)
            except DatabaseError as exc:  # no TEMP privilege, a read-only server: this one stays as it is
                log.warning("recommendation #%d: cannot read its index definition: %s", rec.recommendation_id, exc)
                continue
            if signature is None:
                continue
            kb.set_signature(rec.recommendation_id, signature)
        found = present.get(signature)
        if rec.status in OPEN:
            if found is None or not found.valid:
                absent.append(rec.recommendation_id)
                continue
            if kb.transition(
                rec.recommendation_id,
                "applied",
                source="catalog",
                from_statuses=OPEN,
                reason=f"index {found.name} exists and is valid",
                at=now,
            ):
                kb.mark_applied_index(rec.recommendation_id, found.name)
                changes.append(f"#{rec.recommendation_id} applied: index {found.name} found")
        elif rec.status == "applied" and rec.applied_index is None:
            # Marked applied without the catalog having seen the index (by hand, before lifecycle tracking):
            # a drop can be told only once the index has been seen.
            if found is not None and found.valid:
                kb.mark_applied_index(rec.recommendation_id, found.name)
        elif rec.status == "applied" and (found is None or not found.valid):
            what = rec.applied_index or "the index"
            if kb.transition(
                rec.recommendation_id,
                "obsolete",
                source="catalog",
                from_statuses=("applied",),
                reason=f"{what} was applied and has been dropped (or is invalid)",
                at=now,
            ):
                kb.outcome_dropped(rec.recommendation_id, now)
                changes.append(f"#{rec.recommendation_id}: applied index {what} was dropped")
    kb.mark_absent(absent, now)
    return changes


def mark_obsolete(kb: KnowledgeBase, tracked: Sequence[Tracked], present: set[str], now: datetime) -> list[str]:
    """Waiting recommendations whose statement is no longer in pg_stat_statements become ``obsolete``."""
    changes = []
    for rec in tracked:
        if rec.status in ("pending", "pr_open") and rec.fingerprint not in present and kb.transition(
            rec.recommendation_id,
            "obsolete",
            source="audit",
            from_statuses=("pending", "pr_open"),
            reason="the statement is no longer in pg_stat_statements",
            at=now,
        ):
            changes.append(f"#{rec.recommendation_id} obsolete: its statement disappeared")
    return changes


# -- outcomes -------------------------------------------------------------------------------------------------


def classify(measured_gain: float, predicted_gain: float | None) -> str:
    """improved (at least half the predicted gain), improved_less, no_change (within noise) or regressed."""
    if measured_gain <= -NOISE_PERCENT:
        return "regressed"
    if measured_gain < NOISE_PERCENT:
        return "no_change"
    if predicted_gain is None or measured_gain >= predicted_gain * PREDICTED_SHARE:
        return "improved"
    return "improved_less"


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    recommendation_id: int
    result: str
    before: Figures
    after: Figures
    measured_gain_percent: float
    provisional: bool


def _before(
    kb: KnowledgeBase, snaps: Sequence[SnapshotRef], end: SnapshotRef, dbid: int, fp: str, min_calls: int
) -> tuple[datetime | None, Figures] | None:
    """The statement's figures up to ``end``: the shortest window back from it with enough calls, else the
    cumulative figures at ``end`` (since pg_stat_statements was reset)."""
    for start in reversed([s for s in snaps if s.taken_at < end.taken_at]):
        if end.stats_reset is not None and start.taken_at < end.stats_reset:
            break
        figures = kb.statement_figures(start.snapshot_id, end.snapshot_id, dbid, fp)
        if figures.calls >= min_calls:
            return start.taken_at, figures
    figures = kb.statement_figures(None, end.snapshot_id, dbid, fp)
    return (end.stats_reset, figures) if figures.calls >= min_calls else None


def verify(
    kb: KnowledgeBase, rec: Tracked, dbid: int, now: datetime, min_calls: int
) -> tuple[Verified, dict[str, Any]] | None:
    """Measure an applied recommendation's outcome from the stored snapshots; None while there are too few
    calls on either side.

    Before: up to the last snapshot taken while the index was still absent. After: from the first snapshot
    taken once the index was seen; until there is such a window with enough calls, from the last "absent"
    snapshot (some calls may predate the index, so the gain is a lower bound and marked provisional).
    """
    assert rec.applied_at is not None
    absent = rec.absent_checked_at or rec.created_at
    snaps = kb.snapshots_since(rec.target_id, absent - timedelta(days=8))
    before_end = next((s for s in reversed(snaps) if s.taken_at <= absent), None)
    if before_end is None:
        return None
    before = _before(kb, snaps, before_end, dbid, rec.fingerprint, min_calls)
    if before is None:
        return None
    after: tuple[datetime, datetime, Figures] | None = None
    provisional = False
    first = next((s for s in snaps if s.taken_at >= rec.applied_at), None)
    last = snaps[-1]
    if first is not None and last.taken_at > first.taken_at:
        figures = kb.statement_figures(first.snapshot_id, last.snapshot_id, dbid, rec.fingerprint)
        if figures.calls >= min_calls:
            after = (first.taken_at, last.taken_at, figures)
    if after is None and last.taken_at > before_end.taken_at:
        figures = kb.statement_figures(before_end.snapshot_id, last.snapshot_id, dbid, rec.fingerprint)
        if figures.calls >= min_calls:
            after, provisional = (before_end.taken_at, last.taken_at, figures), True
    if after is None:
        return None
    b, a = before[1], after[2]
    gain = (b.mean_ms - a.mean_ms) / b.mean_ms * 100.0 if b.mean_ms > 0 else 0.0
    result = classify(gain, rec.gain_percent)
    verified = Verified(rec.recommendation_id, result, b, a, gain, provisional)
    params = {
        "recommendation_id": rec.recommendation_id,
        "result": result,
        "before_from": before[0],
        "before_to": before_end.taken_at,
        "before_calls": b.calls,
        "before_mean_ms": b.mean_ms,
        "before_rows_per_call": b.rows_per_call,
        "after_from": after[0],
        "after_to": after[1],
        "after_calls": a.calls,
        "after_mean_ms": a.mean_ms,
        "after_rows_per_call": a.rows_per_call,
        "provisional": provisional,
        "predicted_gain_percent": rec.gain_percent,
        "measured_gain_percent": gain,
        # calls since the index x the time each saves; never negative (a regression is its own outcome)
        "time_saved_ms": a.calls * max(b.mean_ms - a.mean_ms, 0.0),
        "plan_note": None,
        "verified_at": now,
    }
    return verified, params


def regression_note(conn: db.Connection, rec: Tracked) -> str | None:
    """For a regressed outcome: the statement's plan now against the plan measured with the index."""
    current = plans.current_plan(Snapshot(conn), rec.query)
    if current is None:
        return None
    uses = rec.applied_index is not None and rec.applied_index.split(".")[-1].strip('"') in current
    note = f"plan now: {current}"
    if rec.plan_after:
        note += f"; measured with the index: {rec.plan_after}"
    if not uses:
        note += "; the plan no longer uses the applied index"
    return note


def verify_outcomes(
    conn: db.Connection, kb: KnowledgeBase, target_id: int, dbid: int, now: datetime, min_calls: int
) -> list[str]:
    """Measure (or re-measure, as the after window grows) every applied recommendation's outcome."""
    changes = []
    for rec in kb.tracked(target_id):
        if rec.status != "applied" or rec.applied_at is None:
            continue
        found = verify(kb, rec, dbid, now, min_calls)
        if found is None:
            continue
        verified, params = found
        if verified.result == "regressed":
            try:
                params["plan_note"] = regression_note(conn, rec)
            except PgArchitectError as exc:
                params["plan_note"] = f"the current plan could not be read: {exc}"
        kb.store_outcome(params)
        changes.append(
            f"#{rec.recommendation_id} {verified.result}: {verified.before.mean_ms:.2f} ms -> "
            f"{verified.after.mean_ms:.2f} ms ({verified.measured_gain_percent:.0f} %"
            f"{', provisional' if verified.provisional else ''})"
        )
    return changes


# -- one refresh, at every snapshot and audit -----------------------------------------------------------------


def refresh(
    cfg: Config,
    conn: db.Connection,
    kb: KnowledgeBase,
    target_id: int,
    dbid: int,
    snapshot_id: int | None,
    now: datetime | None = None,
) -> list[str]:
    """Follow the pull requests (when configured), the catalog and the statements; measure outcomes."""
    now = now or kb.clock()
    changes = pullrequests.sync_configured(cfg, kb, target_id, now)
    changes += check_catalog(conn, kb, kb.tracked(target_id), now)
    if snapshot_id is not None:
        present = {f.fingerprint for f in kb.window_figures(None, snapshot_id, dbid)}
        changes += mark_obsolete(kb, kb.tracked(target_id), present, now)
    changes += verify_outcomes(conn, kb, target_id, dbid, now, cfg.auditor.lifecycle.verify_min_calls)
    for line in changes:
        log.info("lifecycle: %s", line)
    return changes


# -- a person's decision --------------------------------------------------------------------------------------


def decide(kb: KnowledgeBase, recommendation_id: int, decision: str, actor: str, reason: str | None) -> Optimization:
    """Record a person's decision with who, when and why.

    ``rejected``: a waiting recommendation becomes ``rejected`` and is not proposed again unless the evidence
    changes materially. ``accepted``: it stays where it is (the catalog marks it applied once the index
    exists) but no longer waits for review; accepting a rejected one re-opens it as ``pending``.
    """
    if decision not in DECISIONS:
        raise UsageError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    current = kb.optimization(recommendation_id)
    if current is None:
        raise LifecycleError(f"no recommendation #{recommendation_id}")
    if not current.worth_applying:
        raise LifecycleError(
            f"recommendation #{recommendation_id} was never proposed (its gain was below the threshold)"
        )
    now = kb.clock()
    with db.transaction(kb.conn):
        if decision == "rejected":
            if current.status not in OPEN:
                raise LifecycleError(
                    f"recommendation #{recommendation_id} is {current.status}: only pending, pr_open or merged "
                    "ones can be rejected"
                    + (
                        " (drop the index with its rollback_sql; the catalog check will notice)"
                        if current.status == "applied"
                        else ""
                    )
                )
            kb.transition(
                recommendation_id, "rejected", source="person", from_statuses=OPEN, actor=actor, reason=reason, at=now
            )
        elif current.status == "rejected":
            kb.transition(
                recommendation_id,
                "pending",
                source="person",
                from_statuses=("rejected",),
                actor=actor,
                reason=f"accepted after rejection: {reason}" if reason else "accepted after rejection",
                at=now,
            )
        elif current.status in OPEN:
            kb.transition(
                recommendation_id,
                current.status,
                source="person",
                from_statuses=(current.status,),
                actor=actor,
                reason=f"accepted: {reason}" if reason else "accepted",
                at=now,
            )
        else:
            raise LifecycleError(f"recommendation #{recommendation_id} is {current.status}: nothing to accept")
        kb.decide(recommendation_id, decision, actor, reason, now)
    updated = kb.optimization(recommendation_id)
    assert updated is not None
    return updated


# -- what the reports say ---------------------------------------------------------------------------------------


def summary(kb: KnowledgeBase, cfg: Config, target_id: int, now: datetime) -> dict[str, Any]:
    """The report's ``lifecycle`` section (KnowledgeBase.lifecycle_report)."""
    return kb.lifecycle_report(target_id, now, cfg.auditor.lifecycle.pending_reminder_days)
