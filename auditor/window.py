"""The audit window: last week's statements, as a delta between stored pg_stat_statements snapshots.

An audit stores a snapshot, finds the baseline (the newest stored snapshot at least a week old, else the
oldest at least an hour old, never one from before the last reset) and takes the difference row by
row. Without a usable baseline it falls back to cumulative figures and says so. Rows are then merged
by the fingerprint of their normalised text, because one statement appears under several queryids
(per user, per nesting level, per parameter type the driver sends), and only then are the thresholds
applied.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pg_architect.auditor.kb import Baseline, KnowledgeBase
from pg_architect.auditor.models import Window
from pg_architect.auditor.parsing import is_internal
from pg_architect.auditor.queries import QUERIES
from pg_architect.auditor.redaction import UTILITY, SafeText, safe_text, withheld_text
from pg_architect.core import db, pgss
from pg_architect.core.pgss import PgssInfoRow, SnapshotRow, diff

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    system_identifier: str
    datname: str
    dbid: int
    server_version_num: int
    pgss_schema: str | None
    pgss_version: str | None
    hypopg_version: str | None
    hypopg_available: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """One statement of the audited database over the window, merged across its queryids."""

    fingerprint: str
    query: str
    queryids: tuple[int, ...]
    calls: int
    total_ms: float
    parse_error: str | None = None
    rows_per_call: float | None = None  # rows returned or affected per call (pg_stat_statements, cumulative)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class AuditWindow:
    window: Window
    statements: tuple[Statement, ...]
    snapshot_id: int
    excluded_internal: int
    notes: tuple[str, ...]
    baseline: Baseline | None = None  # the snapshot that opens the window (None: cumulative figures)


def identity(conn: db.Connection) -> Identity:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "identity"), None, Identity)
    assert row is not None
    return row


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """pg_stat_statements of the audited database, with text safe to keep (see auditor.redaction).

    ``rows[i].query`` is the literal-free text, or None when the row cannot reach ``min_mean_ms`` (its
    slowest call so far was faster, so no window ending now can have a mean that high): the knowledge
    base keeps the figures of such rows, for deltas, but not their text.
    """

    rows: list[SnapshotRow]
    info: PgssInfoRow | None
    fingerprints: dict[int, str]
    commands: dict[int, str]
    problems: dict[int, str]  # queryid -> why a plannable statement's text could not be kept


def read_snapshot(conn: db.Connection, ident: Identity, *, min_mean_ms: float = 0.0) -> Snapshot:
    """The audited database's pg_stat_statements rows, their text re-deparsed without literals."""
    if not ident.pgss_schema or not ident.pgss_version:
        raise db.translate(
            RuntimeError(
                f"pg_stat_statements is not created in database {ident.datname}: CREATE EXTENSION pg_stat_statements"
            )
        )
    raw = pgss.read_snapshot(conn)
    safe: dict[int, SafeText] = {}
    rows = []
    for r in raw:
        text = safe.get(r.queryid)
        if text is None:
            text = safe[r.queryid] = safe_text(r.query or "")
        # Text withheld in the row but kept for grouping in memory (internal marker included).
        keep = r.max_ms >= min_mean_ms or is_internal(text.text)
        rows.append(dataclasses.replace(r, query=text.text if keep else None))
    return Snapshot(
        rows=rows,
        info=pgss.read_info(conn),
        fingerprints={q: t.fingerprint for q, t in safe.items()},
        commands={q: t.command for q, t in safe.items()},
        problems={q: f"text withheld: {t.why}" for q, t in safe.items() if t.withheld and t.why != UTILITY},
    )


def take(
    conn: db.Connection,
    kb: KnowledgeBase,
    target_id: int,
    ident: Identity,
    *,
    kind: str = "audit",
    now: datetime | None = None,
    min_mean_ms: float = 0.0,
) -> AuditWindow:
    """Snapshot pg_stat_statements into the knowledge base and return this database's window."""
    now = now or datetime.now(UTC)
    snap = read_snapshot(conn, ident, min_mean_ms=min_mean_ms)
    rows, info, fingerprints = snap.rows, snap.info, snap.fingerprints
    stats_reset = info.stats_reset if info else None
    baseline = kb.baseline(target_id, now, stats_reset)
    snapshot_id = kb.store_snapshot(
        target_id, kind, now, rows, stats_reset, info.dealloc if info else None, fingerprints
    )
    notes: list[str] = []
    mine = rows  # the snapshot query reads only the audited database
    if baseline is not None:
        previous = {r.key: r for r in kb.snapshot_rows(baseline.snapshot_id)}
        delta = diff(previous, [r.statement() for r in mine], seconds=(now - baseline.taken_at).total_seconds())
        calls = {k: (iv.calls, iv.calls * iv.mean_s * 1000.0) for k, iv in delta.intervals.items()}
        window = Window(start=baseline.taken_at, end=now, source="snapshot-delta")
        if now - baseline.taken_at < WEEK - timedelta(hours=1):
            notes.append(
                f"the knowledge base has snapshots only since {baseline.taken_at:%Y-%m-%d %H:%M} UTC: "
                "the window is shorter than a week"
            )
    else:
        calls = {r.key: (r.calls, r.total_ms) for r in mine}
        window = Window(start=stats_reset, end=now, source="cumulative")
        notes.append(
            "no earlier snapshot in the knowledge base: figures are cumulative since pg_stat_statements "
            "was last reset" + (f" ({stats_reset:%Y-%m-%d %H:%M} UTC)" if stats_reset else "")
        )
    merged: dict[str, list[SnapshotRow]] = {}
    internal = 0
    for r in mine:
        key = r.key
        if key not in calls or calls[key][0] <= 0:
            continue
        if r.query is not None and is_internal(r.query):
            internal += 1
            continue
        merged.setdefault(fingerprints[r.queryid], []).append(r)
    statements = []
    for fp, group in merged.items():
        total_calls = sum(calls[r.key][0] for r in group)
        total_ms = sum(calls[r.key][1] for r in group)
        # The text with the most time stands for the statement (they differ only in normalisation details);
        # a group whose rows all had their text withheld is below the mean threshold (see Snapshot).
        leader = max(group, key=lambda r: (r.query is not None, calls[r.key][1]))
        text = leader.query or withheld_text(snap.commands[leader.queryid], fp, "below the thresholds")
        statements.append(
            Statement(
                fingerprint=fp,
                query=text,
                queryids=tuple(sorted({r.queryid for r in group})),
                calls=total_calls,
                total_ms=total_ms,
                parse_error=snap.problems.get(leader.queryid),
                rows_per_call=sum(r.rows for r in group) / max(sum(r.calls for r in group), 1),
            )
        )
    statements.sort(key=lambda s: -s.total_ms)
    return AuditWindow(
        window=window,
        statements=tuple(statements),
        snapshot_id=snapshot_id,
        excluded_internal=internal,
        notes=tuple(notes),
        baseline=baseline,
    )


def select_slow(statements: Sequence[Statement], *, min_calls: int, min_mean_ms: float, limit: int) -> list[Statement]:
    """Statements over both thresholds, the ``limit`` with the most total time first."""
    slow = [s for s in statements if s.calls >= min_calls and s.mean_ms >= min_mean_ms]
    return sorted(slow, key=lambda s: -s.total_ms)[:limit]
