"""Settings suggestions from the server's own statistics, each with its evidence, its SQL and its rollback.

- ``work_mem``: statements that spill sorts and hashes to temporary files (pg_stat_statements'
  ``temp_blks_written``): per statement first (``SET LOCAL`` in its transaction), server-wide only when several
  statements spill;
- ``max_wal_size``: most checkpoints are requested by WAL volume rather than timed;
- ``pg_stat_statements.max``: entries were evicted (``pg_stat_statements_info.dealloc``), so statements go
  missing from every window (needs a restart);
- autovacuum lag: tables whose dead rows pile up without a vacuum (``ALTER TABLE ... SET`` per table);
- ``shared_buffers`` and ``effective_cache_size``: the database's cache hit ratio is low. The server's memory is
  not visible over SQL: it is read from /proc/meminfo only when the server is on this machine (a Unix socket or
  a loopback address), and said so; otherwise the suggestion is relative to the current value, less confident;
- ``random_page_cost``: slow statements no index fixed, whose plans scan tables sequentially, are timed
  (EXPLAIN ANALYZE) with and without ``SET LOCAL random_page_cost = 1.1`` in a rolled-back read-only transaction
  (the verifier's settings check, auditor.verify.settings); a plan that changes and runs faster says the
  storage (SSD, or a working set that stays cached) makes random reads cheaper than the default assumes.

Advisory: confidence stays below the pull-request threshold; nothing here changes the server.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime

from pg_architect.auditor import analysis, verify
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import explain
from pg_architect.auditor.models import SettingSuggestion, SlowQuery
from pg_architect.auditor.parsing import UnparseableQuery, parse_query
from pg_architect.auditor.queries import QUERIES
from pg_architect.auditor.redaction import safe_text
from pg_architect.core import db, pgss
from pg_architect.core.config import Config
from pg_architect.core.errors import PgArchitectError
from pg_architect.core.sqlfiles import MARKER, mark

BLOCK = 8192
# Evidence bounds: below these the statistics say too little to suggest anything.
MIN_SPILL_KB_PER_CALL = 64
MIN_CHECKPOINTS = 10
REQUESTED_SHARE = 0.5
MIN_DEAD_ROWS = 10_000
DEAD_RATIO = 0.2
STALE_HOURS = 24
MIN_READ_BLOCKS = 10_000
HIT_TARGET = 0.99
MEMINFO = "/proc/meminfo"
SSD_PAGE_COST = "1.1"
MAX_TIMED_STATEMENTS = 3
TIMED_SAMPLES = 2
# Each timed statement runs about 2 x 2 x TIMED_SAMPLES times (with and without, the fastest of two): the
# timings of one audit stay within this budget, by the statements' recorded means.
TIMING_BUDGET_MS = 10_000.0


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


@dataclasses.dataclass(frozen=True, slots=True)
class _Cache:
    blks_hit: int
    blks_read: int
    shared_buffers: str
    shared_buffers_bytes: int
    effective_cache_size: str
    effective_cache_size_bytes: int
    local: bool


def visible_memory(local: bool, meminfo: str = MEMINFO) -> int | None:
    """The machine's memory in bytes when the server runs on it (MemTotal of /proc/meminfo); None otherwise."""
    if not local:
        return None
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _bytes_setting(n: float) -> str:
    """A memory setting in whole MB (GB from 1 GB up)."""
    mb = int(n // (1024 * 1024))
    return f"{mb // 1024}GB" if mb >= 1024 and mb % 1024 == 0 else f"{max(mb, 1)}MB"


def buffers(cache: _Cache, memory: int | None) -> list[SettingSuggestion]:
    """shared_buffers and effective_cache_size when the cache hit ratio is low, sized from the visible memory."""
    total = cache.blks_hit + cache.blks_read
    if cache.blks_read < MIN_READ_BLOCKS or total == 0:
        return []
    ratio = cache.blks_hit / total
    if ratio >= HIT_TARGET:
        return []
    seen = f"cache hit ratio {ratio:.1%} over {total:,} block requests (target {HIT_TARGET:.0%})"
    out: list[SettingSuggestion] = []
    if memory is not None:
        where = f"the server runs on this machine: {MEMINFO} shows {memory / 1024**3:.1f} GB"
        if cache.shared_buffers_bytes < memory // 4 * 0.9:
            suggested = _bytes_setting(memory // 4)
            out.append(_shared_buffers(cache, suggested, f"{seen}; {where}; 25 % of it is {suggested}", 0.6))
        if cache.effective_cache_size_bytes < memory // 2:
            suggested = _bytes_setting(memory * 3 // 4)
            out.append(
                _system(
                    "effective_cache_size",
                    cache.effective_cache_size,
                    suggested,
                    f"{seen}; {where}: the planner assumes {cache.effective_cache_size} of cache, the "
                    f"operating system's cache and shared_buffers together are closer to {suggested} (75 %)",
                    0.5,
                    restart=False,
                )
            )
        return out
    suggested = _bytes_setting(cache.shared_buffers_bytes * 2)
    where = (
        "the server's memory is not visible from here (a remote server): doubling is a step, keep shared_buffers "
        "near 25 % of its memory"
    )
    return [_shared_buffers(cache, suggested, f"{seen}; {where}", 0.4)]


def _shared_buffers(cache: _Cache, suggested: str, evidence: str, confidence: float) -> SettingSuggestion:
    return _system("shared_buffers", cache.shared_buffers, suggested, evidence, confidence, restart=True)


def _system(
    name: str, current: str, suggested: str, evidence: str, confidence: float, *, restart: bool, quoted: bool = True
) -> SettingSuggestion:
    """A server-wide setting through ALTER SYSTEM, reloaded (or taking effect after a restart), and its rollback."""
    value = f"'{suggested}'" if quoted else suggested
    after = "  -- takes effect after a restart" if restart else " SELECT pg_reload_conf();"
    undo = "  -- after a restart" if restart else " SELECT pg_reload_conf();"
    return SettingSuggestion(
        name=name,
        current=current,
        suggested=suggested,
        evidence=evidence,
        confidence=confidence,
        scope="server",
        sql=f"ALTER SYSTEM SET {name} = {value};{after}",
        rollback_sql=f"ALTER SYSTEM RESET {name};{undo}",
        restart=restart,
    )


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
    safe = safe_text(spill.query)  # comments and constants pg_stat_statements kept must not reach the report
    if safe.withheld:
        return None
    text = " ".join(safe.text.split())
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
            _system(
                "work_mem",
                facts.work_mem,
                suggested,
                f"{len(heavy)} statements spill to temporary files; raise it server-wide only if memory "
                "allows: every sort or hash node of every connection may use this much",
                0.45,
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
        _system(
            "max_wal_size",
            facts.max_wal_size,
            suggested,
            f"{cp.requested} of {cp.timed + cp.requested} checkpoints{since} ({share:.0%}) were forced by "
            f"WAL volume before checkpoint_timeout ({facts.checkpoint_timeout}): frequent checkpoints cost I/O and "
            "full-page writes",
            round(0.5 + 0.2 * (share - REQUESTED_SHARE) / (1 - REQUESTED_SHARE), 2),
            restart=False,
        )
    ]


def pgss_max(facts: _Facts, info: pgss.PgssInfoRow | None) -> list[SettingSuggestion]:
    if info is None or info.dealloc <= 0 or not facts.pgss_max:
        return []
    suggested = str(max(int(facts.pgss_max) * 2, 10_000))
    since = f" since {info.stats_reset:%Y-%m-%d}" if info.stats_reset else ""
    return [
        _system(
            "pg_stat_statements.max",
            facts.pgss_max,
            suggested,
            f"pg_stat_statements evicted entries {info.dealloc} time(s){since}: statements disappear from "
            "the statistics, so latency and the weekly audit miss them",
            0.7,
            restart=True,
            quoted=False,
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
        ("cache hit ratio", lambda: _buffers(conn)),
    ]
    for what, step in steps:
        try:
            out += step()
        except PgArchitectError as exc:
            notes.append(f"settings: {what} not read: {exc}")
    return out, notes


def _buffers(conn: db.Connection) -> list[SettingSuggestion]:
    cache = db.fetch_one(conn, db.query(conn, QUERIES, "settings_cache"), None, _Cache)
    return buffers(cache, visible_memory(cache.local)) if cache is not None else []


def _spills(conn: db.Connection, schema: str | None) -> list[_Spill]:
    if schema is None:
        return []
    return db.fetch(conn, db.query(conn, QUERIES, "settings_temp_spills", pgss=schema), None, _Spill)


def _lags(conn: db.Connection) -> list[_Lag]:
    params = {"min_dead": MIN_DEAD_ROWS, "ratio": DEAD_RATIO, "stale": STALE_HOURS}
    return db.fetch(conn, db.query(conn, QUERIES, "settings_vacuum_lag"), params, _Lag)


@dataclasses.dataclass(frozen=True, slots=True)
class _Timed:
    queryid: str
    before_ms: float
    after_ms: float
    gain_percent: float
    plan_before: str
    plan_after: str


def random_page_cost(
    cfg: Config, catalog: Snapshot, slow: list[SlowQuery]
) -> tuple[list[SettingSuggestion], list[str]]:
    """A lower random_page_cost when the slow statements' sequential-scan plans measure slower than the plans
    it gives; notes on what could not be timed. Nothing is changed: every timing is rolled back."""
    conn = catalog.conn
    try:
        current = str(db.fetch_value(conn, mark("SELECT pg_catalog.current_setting('random_page_cost')")))
    except PgArchitectError as exc:
        return [], [f"settings: random_page_cost not read: {exc}"]
    if float(current) <= float(SSD_PAGE_COST) * 1.5:
        return [], []
    timed: list[_Timed] = []
    notes: list[str] = []
    tried = 0
    # Statements nothing else fixed: where an index is recommended, the index is the fix.
    budget = TIMING_BUDGET_MS
    for q in [q for q in slow if q.status == "no_recommendation"]:
        cost = q.mean_ms * 4 * TIMED_SAMPLES
        if tried == MAX_TIMED_STATEMENTS or cost > budget:
            continue
        samples = _seq_scan_samples(catalog, q)
        if not samples:
            continue
        tried += 1
        budget -= cost
        m = cfg.measurement
        try:
            checked = verify.settings(
                conn,
                f"SET random_page_cost = {SSD_PAGE_COST}",
                kind="select",
                samples=samples,
                statement_timeout_ms=m.statement_timeout_ms,
                lock_timeout_ms=m.lock_timeout_ms,
                min_gain_percent=cfg.auditor.thresholds.min_gain_percent,
            )
        except PgArchitectError as exc:
            notes.append(f"settings: random_page_cost not timed on statement {q.queryid}: {exc}")
            continue
        t = checked.measurement
        if checked.worth and checked.consistent and t.plan_changed:
            timed.append(
                _Timed(
                    q.queryid,
                    t.before_ms or 0.0,
                    t.after_ms or 0.0,
                    t.gain_percent,
                    t.plan_before or "",
                    t.plan_after or "",
                )
            )
    if not timed:
        return [], notes
    shown = "; ".join(
        f"statement {t.queryid}: {t.before_ms:.1f} ms ({t.plan_before}) -> {t.after_ms:.1f} ms ({t.plan_after}), "
        f"{t.gain_percent:.0f} % faster"
        for t in timed
    )
    return [
        _system(
            "random_page_cost",
            current,
            SSD_PAGE_COST,
            f"{len(timed)} of {tried} slow statement(s) planned with sequential scans run faster with "
            f"random_page_cost = {SSD_PAGE_COST} (EXPLAIN ANALYZE with and without SET LOCAL, rolled back): "
            f"{shown}. The default {current} assumes spinning disks; SSD-backed storage, or a working set that stays "
            "in cache, makes random reads nearly as cheap as sequential ones",
            round(min(0.5 + 0.1 * (len(timed) - 1), 0.7), 2),
            restart=False,
            quoted=False,
        )
    ], notes


def _seq_scan_samples(catalog: Snapshot, q: SlowQuery) -> list[str]:
    """Executable samples of a slow SELECT whose plan scans a table sequentially; empty otherwise."""
    try:
        shape = parse_query(q.query)
        if shape.kind != "select" or shape.is_utility:
            return []
        resolved, tables = analysis.resolve(catalog, shape)
        if not tables:
            return []
        samples = list(analysis.analyse(catalog, resolved, tables, TIMED_SAMPLES, None).samples)
        if not any("Seq Scan" in node for node in explain(catalog.conn, samples[0], analyze=False).nodes):
            return []
    except (UnparseableQuery, PgArchitectError):
        return []
    return samples[:TIMED_SAMPLES]
