"""Application caching for hot statements over tables that hardly change: advisory, never a pull request.

A slow statement that no index (or rewrite) fixes gets a ``cache`` recommendation when, over the audit window,

- it runs often: at least ``auditor.caching.min_calls_per_hour``;
- its tables are read-only or nearly: their rows inserted, updated and deleted (pg_stat_user_tables, as the
  difference between the daily health snapshot opening the window and now) are at most ``max_write_share`` of
  those writes plus the statement's calls;
- its result is stable: rows per call within the window differ from before it by at most ``max_rows_change``
  (pg_stat_statements' rows and calls in the two stored snapshots bounding the window).

The TTL is half the mean time between two writes to its tables (``max_ttl_s`` when nothing was written), so a
cached result is usually replaced before a write makes it stale; the calls it saves per hour are the calls
minus one refresh per TTL (per distinct parameter set). Nothing is measured: confidence stays below the PR
threshold. :func:`propose` is a pure function of the facts; :func:`facts_for` reads them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pg_architect.auditor import analysis
from pg_architect.auditor.catalog import Snapshot, TableInfo
from pg_architect.auditor.kb import HealthPoint, KnowledgeBase
from pg_architect.auditor.models import Recommendation, SlowQuery, action_for
from pg_architect.auditor.parsing import UnparseableQuery, parse_query
from pg_architect.auditor.queries import QUERIES
from pg_architect.auditor.window import AuditWindow, Statement
from pg_architect.core import db
from pg_architect.core.config import CachingConfig, Config
from pg_architect.core.errors import PgArchitectError

log = logging.getLogger(__name__)

CONFIDENCE_READ_ONLY = 0.65
CONFIDENCE_LOW_WRITES = 0.55
MIN_TTL_S = 1


@dataclasses.dataclass(frozen=True, slots=True)
class StatementFacts:
    """One statement over the audit window."""

    queryid: str
    calls: int
    mean_ms: float
    window_hours: float
    rows_per_call: float | None  # within the window
    rows_per_call_before: float | None  # cumulative before it
    tables: tuple[str, ...]  # schema.name of every table it reads
    parameters: int  # placeholders: each distinct set is its own cache entry


@dataclasses.dataclass(frozen=True, slots=True)
class TableWrites:
    table: str
    writes_per_hour: float
    source: str  # how the rate was measured, for the evidence


def propose(facts: StatementFacts, writes: Mapping[str, TableWrites], cfg: CachingConfig) -> Recommendation | None:
    """A cache recommendation for a hot, read-mostly, stable statement; None when the evidence says no."""
    if facts.window_hours <= 0 or not facts.tables or facts.calls <= 0:
        return None
    calls_per_hour = facts.calls / facts.window_hours
    if calls_per_hour < cfg.min_calls_per_hour:
        return None
    if any(t not in writes for t in facts.tables):
        return None  # a table whose write rate is unknown: no claim about staleness
    if facts.rows_per_call is None or facts.rows_per_call_before is None:
        return None
    change = abs(facts.rows_per_call - facts.rows_per_call_before) / max(facts.rows_per_call_before, 1.0)
    if change > cfg.max_rows_change:
        return None
    written = sum(writes[t].writes_per_hour for t in facts.tables)
    share = written / (written + calls_per_hour)
    if share > cfg.max_write_share:
        return None
    ttl = cfg.max_ttl_s if written <= 0 else int(max(MIN_TTL_S, min(cfg.max_ttl_s, 3600.0 / written / 2)))
    saved = max(calls_per_hour - 3600.0 / ttl, 0.0)
    confidence = CONFIDENCE_READ_ONLY if written <= 0 else CONFIDENCE_LOW_WRITES
    rates = "; ".join(
        f"{writes[t].table}: {writes[t].writes_per_hour:,.1f} rows written per hour ({writes[t].source})"
        for t in facts.tables
    )
    per_set = " per distinct parameter set" if facts.parameters else ""
    reasoning = (
        f"Statement {facts.queryid} runs {calls_per_hour:,.0f} times an hour ({facts.calls:,} calls in "
        f"{facts.window_hours:,.1f} h) at {facts.mean_ms:,.1f} ms, and returns {facts.rows_per_call:,.1f} rows per "
        f"call as it did before the window ({facts.rows_per_call_before:,.1f}). Its tables are "
        + ("not written at all" if written <= 0 else f"rarely written ({share:.1%} of writes plus its calls)")
        + f": {rates}. Cache its result in the application for {ttl} s (half the mean time between writes"
        f"{', capped' if written <= 0 or ttl == cfg.max_ttl_s else ''}), or invalidate on writes to those "
        f"tables: about {saved:,.0f} calls an hour{per_set} would not reach the database "
        f"({saved * facts.mean_ms / 1000:,.1f} s of statement time an hour). Not measured: advisory."
    )
    return Recommendation(
        type="cache",
        sql=f"-- cache the result of statement {facts.queryid} for {ttl} s (TTL), keyed by its parameters",
        rollback_sql="-- remove the cache: the statement reads the database again",
        reasoning=reasoning,
        confidence=confidence,
        source="advisor",
        measurement=None,
        action=action_for(confidence),
        kind=f"cache:ttl={ttl}",
        family="select:" + ",".join(facts.tables),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Since:
    since: datetime


def write_rates(
    conn: db.Connection,
    tables: Sequence[TableInfo],
    history: Sequence[HealthPoint],
    now: datetime,
    window_start: datetime | None = None,
) -> dict[str, TableWrites]:
    """Rows written per hour to each table: since the oldest daily health snapshot of the window that counted
    them, else since the statistics began (a cumulative rate, said so)."""
    out: dict[str, TableWrites] = {}
    since: datetime | None = None
    # A daily snapshot taken up to half a day before the window opened still speaks for it.
    points = [p for p in history if window_start is None or p.taken_at >= window_start - timedelta(hours=12)]
    for t in tables:
        then: tuple[datetime, int] | None = None
        for point in points:  # oldest first
            for row in point.metrics.get("tables", []):
                if row.get("table") == t.qualified and "writes" in row and int(row["writes"]) <= t.writes:
                    then = (point.taken_at, int(row["writes"]))
                    break
            if then is not None:
                break
        if then is not None and (now - then[0]).total_seconds() >= 3600:
            hours = (now - then[0]).total_seconds() / 3600
            out[t.qualified] = TableWrites(
                t.qualified, (t.writes - then[1]) / hours, f"since the health snapshot of {then[0]:%Y-%m-%d %H:%M}"
            )
            continue
        if since is None:
            row = db.fetch_one(conn, db.query(conn, QUERIES, "caching_stats_since"), None, _Since)
            since = row.since if row is not None else now
        hours = max((now - since).total_seconds() / 3600, 1.0)
        out[t.qualified] = TableWrites(
            t.qualified, t.writes / hours, f"cumulative since the statistics began at {since:%Y-%m-%d %H:%M}"
        )
    return out


def facts_for(
    kb: KnowledgeBase,
    *,
    queryid: str,
    fingerprint: str,
    calls: int,
    mean_ms: float,
    window_start: datetime | None,
    window_end: datetime,
    baseline_snapshot: int | None,
    window_snapshot: int,
    tables: Sequence[TableInfo],
    parameters: int,
) -> StatementFacts | None:
    """The statement's facts over a window between two stored snapshots; None for a cumulative window
    (without a snapshot opening it, neither the rate nor the stability of its rows is known)."""
    if window_start is None or baseline_snapshot is None:
        return None
    rows = kb.rows_per_call(baseline_snapshot, window_snapshot, fingerprint)
    return StatementFacts(
        queryid=queryid,
        calls=calls,
        mean_ms=mean_ms,
        window_hours=(window_end - window_start).total_seconds() / 3600,
        rows_per_call=rows.within if rows else None,
        rows_per_call_before=rows.before if rows else None,
        tables=tuple(dict.fromkeys(t.qualified for t in tables)),
        parameters=parameters,
    )


def recommend(
    cfg: Config,
    catalog: Snapshot,
    kb: KnowledgeBase,
    result: SlowQuery,
    statement: Statement,
    win: AuditWindow,
    target_id: int,
) -> SlowQuery:
    """``result`` with a cache recommendation when the window's evidence supports one (the audit calls this for
    statements nothing else fixed); unchanged otherwise."""
    try:
        shape = parse_query(statement.query)
        if shape.kind != "select" or shape.is_utility:
            return result
        _, tables = analysis.resolve(catalog, shape)
        facts = facts_for(
            kb,
            queryid=result.queryid,
            fingerprint=statement.fingerprint,
            calls=statement.calls,
            mean_ms=statement.mean_ms,
            window_start=win.window.start if win.baseline is not None else None,
            window_end=win.window.end,
            baseline_snapshot=win.baseline.snapshot_id if win.baseline is not None else None,
            window_snapshot=win.snapshot_id,
            tables=list(tables.values()),
            parameters=len(shape.parameters),
        )
        if facts is None:
            return result
        history = kb.health_history(target_id, days=8)
        rates = write_rates(catalog.conn, list(tables.values()), history, win.window.end, win.window.start)
    except (UnparseableQuery, PgArchitectError) as exc:
        log.info("statement %s: no cache evidence: %s", result.queryid, exc)
        return result
    rec = propose(facts, rates, cfg.auditor.caching)
    if rec is None:
        return result
    return dataclasses.replace(result, status="recommended", recommendation=rec)
