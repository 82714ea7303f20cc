"""Settings suggestions from the server's own statistics, each with its evidence, its SQL and its rollback.

- ``work_mem``: statements that spill sorts and hashes to temporary files (pg_stat_statements'
  ``temp_blks_written``): per statement first (``SET LOCAL`` in its transaction), server-wide only when several
  statements spill;
- ``max_wal_size``: most checkpoints are requested by WAL volume rather than timed;
- ``pg_stat_statements.max``: entries were evicted (``pg_stat_statements_info.dealloc``), so statements go
  missing from every window (needs a restart);
- autovacuum lag: tables whose dead rows pile up without a vacuum (``ALTER TABLE ... SET`` per table).

Advisory: confidence stays below the pull-request threshold; nothing here changes the server.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime

from pg_architect.auditor.models import SettingSuggestion
from pg_architect.auditor.parsing import UnparseableQuery, parse_query
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db, pgss
from pg_architect.core.errors import PgArchitectError
from pg_architect.core.sqlfiles import MARKER

BLOCK = 8192
# Evidence bounds: below these the statistics say too little to suggest anything.
MIN_SPILL_KB_PER_CALL = 64
MIN_CHECKPOINTS = 10
REQUESTED_SHARE = 0.5
MIN_DEAD_ROWS = 10_000
DEAD_RATIO = 0.2
STALE_HOURS = 24


@dataclasses.dataclass(frozen=True, slots=True)
class _Facts:
    work_mem: str
    work_mem_kb: int
    max_wal_size: str
    max_wal_size_mb: int
    checkpoint_timeout: str
    pgss_max: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Spill:
    queryid: int
    calls: int
    temp_blks_written: int
    query: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Checkpoints:
    timed: int
    requested: int
    since: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Lag:
    qualified: str
    live: int
    dead: int
    last_vacuum: datetime | None
    changes: int


def _memory(kb: float) -> str:
    """A work_mem value: the next power of two in MB (4MB, 8MB, 16MB ...), at most 2GB."""
    mb = max(1, 2 ** math.ceil(math.log2(max(kb, 1024) / 1024)))
    return f"{min(mb, 2048)}MB"


def _statement(spill: _Spill) -> str | None:
    """How to name a workload statement without carrying a literal (its normalised text and queryid); None for
    what work_mem does not govern: utility statements (CREATE INDEX sorts under maintenance_work_mem), text the
    parser cannot read, and pg-architect's own statements."""
    if MARKER in spill.query:
        return None
    try:
        shape = parse_query(spill.query)
    except UnparseableQuery:
        return None
    if shape.is_utility:
        return None
    text = " ".join(shape.text.split())
    return f"statement {spill.queryid} ({text[:80]}{'…' if len(text) > 80 else ''})"


def work_mem(facts: _Facts, spills: list[_Spill]) -> list[SettingSuggestion]:
    out: list[SettingSuggestion] = []
    heavy = [
        s
        for s in spills
        if s.temp_blks_written * BLOCK / 1024 / s.calls >= MIN_SPILL_KB_PER_CALL and _statement(s) is not None
    ]
    for s in heavy[:3]:
        per_call_kb = s.temp_blks_written * BLOCK / 1024 / s.calls
        # A sort in memory needs about as much as it wrote to disk, more for hashes: twice the spill, rounded up.
        suggested = _memory(max(per_call_kb * 2, facts.work_mem_kb * 2))
        out.append(
            SettingSuggestion(
                name="work_mem",
                current=facts.work_mem,
                suggested=suggested,
                evidence=f"{_statement(s)} wrote {per_call_kb / 1024:.1f} MB of temporary files per call over "
                f"{s.calls} call(s): its sorts or hashes do not fit in work_mem ({facts.work_mem})",
                confidence=0.6,
                scope="statement",
                sql=f"SET LOCAL work_mem = '{suggested}';  -- in that statement's transaction",
                rollback_sql="-- SET LOCAL ends with the transaction: nothing to roll back",
                restart=False,
            )
        )
    if len(heavy) >= 3:
        suggested = _memory(facts.work_mem_kb * 4)
        out.append(
            SettingSuggestion(
                name="work_mem",
                current=facts.work_mem,
                suggested=suggested,
                evidence=f"{len(heavy)} statements spill to temporary files; raise it server-wide only if memory "
                "allows: every sort or hash node of every connection may use this much",
                confidence=0.45,
                scope="server",
                sql=f"ALTER SYSTEM SET work_mem = '{suggested}'; SELECT pg_reload_conf();",
                rollback_sql="ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf();",
                restart=False,
            )
        )
    return out


def max_wal_size(facts: _Facts, cp: _Checkpoints | None) -> list[SettingSuggestion]:
    if cp is None or cp.timed + cp.requested < MIN_CHECKPOINTS:
        return []
    share = cp.requested / (cp.timed + cp.requested)
    if share < REQUESTED_SHARE:
        return []
    suggested = f"{facts.max_wal_size_mb * 2}MB" if facts.max_wal_size_mb < 1024 * 64 else facts.max_wal_size
    since = f" since {cp.since:%Y-%m-%d}" if cp.since else ""
    return [
        SettingSuggestion(
            name="max_wal_size",
            current=facts.max_wal_size,
            suggested=suggested,
            evidence=f"{cp.requested} of {cp.timed + cp.requested} checkpoints{since} ({share:.0%}) were forced by "
            f"WAL volume before checkpoint_timeout ({facts.checkpoint_timeout}): frequent checkpoints cost I/O and "
            "full-page writes",
            confidence=round(0.5 + 0.2 * (share - REQUESTED_SHARE) / (1 - REQUESTED_SHARE), 2),
            scope="server",
            sql=f"ALTER SYSTEM SET max_wal_size = '{suggested}'; SELECT pg_reload_conf();",
            rollback_sql="ALTER SYSTEM RESET max_wal_size; SELECT pg_reload_conf();",
            restart=False,
        )
    ]


def pgss_max(facts: _Facts, info: pgss.PgssInfoRow | None) -> list[SettingSuggestion]:
    if info is None or info.dealloc <= 0 or not facts.pgss_max:
        return []
    suggested = str(max(int(facts.pgss_max) * 2, 10_000))
    since = f" since {info.stats_reset:%Y-%m-%d}" if info.stats_reset else ""
    return [
        SettingSuggestion(
            name="pg_stat_statements.max",
            current=facts.pgss_max,
            suggested=suggested,
            evidence=f"pg_stat_statements evicted entries {info.dealloc} time(s){since}: statements disappear from "
            "the statistics, so latency and the weekly audit miss them",
            confidence=0.7,
            scope="server",
            sql=f"ALTER SYSTEM SET pg_stat_statements.max = {suggested};  -- takes effect after a restart",
            rollback_sql="ALTER SYSTEM RESET pg_stat_statements.max;  -- after a restart",
            restart=True,
        )
    ]


def vacuum_lag(lags: list[_Lag], now: datetime) -> list[SettingSuggestion]:
    out = []
    for lag in lags:
        last = (
            f"last vacuumed {(now - lag.last_vacuum).total_seconds() / 3600:.0f} h ago"
            if lag.last_vacuum is not None
            else "never vacuumed"
        )
        table = lag.qualified
        out.append(
            SettingSuggestion(
                name="autovacuum_vacuum_scale_factor",
                current="server default",
                suggested="0.02",
                evidence=f"{table} has {lag.dead:,} dead rows against {lag.live:,} live ones ({last}): autovacuum "
                "is not keeping up; bloat slows its scans and indexes",
                confidence=0.55,
                scope=f"table {table}",
                sql=f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02); VACUUM (ANALYZE) {table};",
                rollback_sql=f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor);",
                restart=False,
            )
        )
    return out


def suggest(conn: db.Connection, now: datetime) -> tuple[list[SettingSuggestion], list[str]]:
    """Every suggestion the statistics support, and notes on what could not be read (no error ever escapes)."""
    out: list[SettingSuggestion] = []
    notes: list[str] = []
    try:
        facts = db.fetch_one(conn, db.query(conn, QUERIES, "settings_facts"), None, _Facts)
    except PgArchitectError as exc:
        return [], [f"settings not read: {exc}"]
    assert facts is not None
    schema = db.server_facts(conn).extension_schema("pg_stat_statements")
    def checkpoints() -> list[SettingSuggestion]:
        sql = db.query(conn, QUERIES, "settings_checkpoints")
        return max_wal_size(facts, db.fetch_one(conn, sql, None, _Checkpoints))

    steps: list[tuple[str, Callable[[], list[SettingSuggestion]]]] = [
        ("temporary files", lambda: work_mem(facts, _spills(conn, schema))),
        ("checkpoints", checkpoints),
        ("pg_stat_statements evictions", lambda: pgss_max(facts, pgss.read_info(conn) if schema else None)),
        ("autovacuum", lambda: vacuum_lag(_lags(conn), now)),
    ]
    for what, step in steps:
        try:
            out += step()
        except PgArchitectError as exc:
            notes.append(f"settings: {what} not read: {exc}")
    return out, notes


def _spills(conn: db.Connection, schema: str | None) -> list[_Spill]:
    if schema is None:
        return []
    return db.fetch(conn, db.query(conn, QUERIES, "settings_temp_spills", pgss=schema), None, _Spill)


def _lags(conn: db.Connection) -> list[_Lag]:
    params = {"min_dead": MIN_DEAD_ROWS, "ratio": DEAD_RATIO, "stale": STALE_HOURS}
    return db.fetch(conn, db.query(conn, QUERIES, "settings_vacuum_lag"), params, _Lag)
