"""Settings suggestions from the server's statistics (issue 18, item 4): each with evidence, SQL and rollback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pg_architect.auditor import settings
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.models import SlowQuery
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db, pgss
from pg_architect.core.config import load_config
from tests.test_audit import fingerprint_of_database

FACTS = settings._Facts(work_mem="4MB", work_mem_kb=4096, max_wal_size="1GB", max_wal_size_mb=1024,
                        checkpoint_timeout="5min", pgss_max="5000")


def test_temporary_file_spills_produce_a_per_statement_work_mem_suggestion_without_literals(
    postgresql: psycopg.Connection,
) -> None:
    postgresql.autocommit = True
    postgresql.execute("CREATE TABLE events AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 60000) g")
    postgresql.execute("SET work_mem = '64kB'")  # the application's too small setting: its sort spills
    for _ in range(3):
        postgresql.execute("SELECT id, body FROM events WHERE body <> 'secret@example.org' ORDER BY body LIMIT 50000")
    postgresql.execute("RESET work_mem")
    conn = db.connect(f"postgresql://{postgresql.info.user}@{postgresql.info.host}:{postgresql.info.port}/"
                      f"{postgresql.info.dbname}", db.Role.AUDITOR, db.Timeouts())
    try:
        found, notes = settings.suggest(conn, datetime.now(UTC))
    finally:
        conn.close()
    assert not notes, notes
    (spill,) = [s for s in found if s.name == "work_mem" and s.scope == "statement"]
    assert spill.sql.startswith("SET LOCAL work_mem = '") and spill.suggested.endswith("MB"), spill
    assert "temporary files per call over 3 call(s)" in spill.evidence, spill.evidence
    assert "ORDER BY body" in spill.evidence and "secret@example.org" not in spill.evidence, spill.evidence
    assert spill.confidence < 0.8 and not spill.restart


def test_a_table_whose_dead_rows_pile_up_without_a_vacuum_is_reported(postgresql: psycopg.Connection) -> None:
    postgresql.autocommit = True
    postgresql.execute(
        "CREATE TABLE queue (id int, payload text) WITH (autovacuum_enabled = false);"
        "INSERT INTO queue SELECT g, 'x' FROM generate_series(1, 50000) g;"
        "DELETE FROM queue WHERE id % 5 <> 0;"
    )
    postgresql.execute("SELECT pg_stat_force_next_flush()")
    postgresql.execute("SELECT 1")  # the flush happens at the end of this transaction
    conn = db.connect(f"postgresql://{postgresql.info.user}@{postgresql.info.host}:{postgresql.info.port}/"
                      f"{postgresql.info.dbname}", db.Role.AUDITOR, db.Timeouts())
    try:
        found, _ = settings.suggest(conn, datetime.now(UTC))
    finally:
        conn.close()
    (lag,) = [s for s in found if s.scope == "table public.queue"]
    assert "40,000 dead rows against 10,000 live ones (never vacuumed)" in lag.evidence, lag.evidence
    assert lag.sql == (
        "ALTER TABLE public.queue SET (autovacuum_vacuum_scale_factor = 0.02); VACUUM (ANALYZE) public.queue;"
    )
    assert lag.rollback_sql == "ALTER TABLE public.queue RESET (autovacuum_vacuum_scale_factor);"


def test_checkpoints_forced_by_wal_volume_suggest_a_larger_max_wal_size() -> None:
    forced = settings._Checkpoints(timed=10, requested=30, since=None)
    (s,) = settings.max_wal_size(FACTS, forced)
    assert (s.current, s.suggested, s.restart) == ("1GB", "2048MB", False)
    assert "30 of 40 checkpoints (75%) were forced by WAL volume" in s.evidence
    assert s.rollback_sql.startswith("ALTER SYSTEM RESET max_wal_size")
    assert settings.max_wal_size(FACTS, settings._Checkpoints(timed=30, requested=10, since=None)) == []
    assert settings.max_wal_size(FACTS, settings._Checkpoints(timed=1, requested=4, since=None)) == []


def test_evicted_pg_stat_statements_entries_suggest_a_larger_max_that_needs_a_restart() -> None:
    (s,) = settings.pgss_max(FACTS, pgss.PgssInfoRow(dealloc=12, stats_reset=None))
    assert (s.suggested, s.restart) == ("10000", True)
    assert settings.pgss_max(FACTS, pgss.PgssInfoRow(dealloc=0, stats_reset=None)) == []


def test_many_spilling_statements_add_a_cautious_server_wide_suggestion() -> None:
    spills = [settings._Spill(queryid=i, calls=10, temp_blks_written=10 * 2000, query=f"SELECT {i}") for i in range(4)]
    ours = settings._Spill(queryid=9, calls=1, temp_blks_written=9000, query="SELECT 1 /* pg-architect */")
    build = settings._Spill(queryid=8, calls=1, temp_blks_written=9000, query="CREATE INDEX i ON t (a)")
    found = settings.work_mem(FACTS, [ours, build, *spills])
    assert [s.scope for s in found] == ["statement", "statement", "statement", "server"]
    # Neither our own statement nor a utility one; the text is shown without its literal.
    assert "statement 0 (SELECT $1)" in found[0].evidence, found[0].evidence
    assert found[-1].confidence < found[0].confidence
    assert found[-1].rollback_sql == "ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf();"


def _cache(hit: int, read: int, local: bool) -> settings._Cache:
    return settings._Cache(
        blks_hit=hit, blks_read=read, shared_buffers="128MB", shared_buffers_bytes=128 * 1024**2,
        effective_cache_size="4GB", effective_cache_size_bytes=4 * 1024**3, local=local,
    )


def test_a_low_cache_hit_ratio_on_a_local_server_sizes_shared_buffers_from_its_visible_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16777216 kB\nMemFree:         1000000 kB\n")
    memory = settings.visible_memory(True, str(meminfo))
    assert memory == 16 * 1024**3 and settings.visible_memory(False, str(meminfo)) is None
    shared, cache = settings.buffers(_cache(hit=900_000, read=100_000, local=True), memory)
    assert (shared.name, shared.suggested, shared.restart) == ("shared_buffers", "4GB", True)
    assert "cache hit ratio 90.0% over 1,000,000 block requests" in shared.evidence, shared.evidence
    assert "shows 16.0 GB" in shared.evidence and shared.rollback_sql.startswith("ALTER SYSTEM RESET shared_buffers")
    assert (cache.name, cache.suggested, cache.restart) == ("effective_cache_size", "12GB", False)
    assert shared.confidence < 0.8 and cache.confidence < 0.8


def test_a_remote_server_gets_a_relative_and_less_confident_shared_buffers_step_and_a_good_ratio_nothing() -> None:
    (shared,) = settings.buffers(_cache(hit=900_000, read=100_000, local=False), None)
    assert shared.suggested == "256MB" and shared.confidence == 0.4
    assert "not visible from here" in shared.evidence
    assert settings.buffers(_cache(hit=9_990_000, read=10_000, local=True), 16 * 1024**3) == []
    assert settings.buffers(_cache(hit=1_000, read=9_000, local=True), 16 * 1024**3) == []  # too few reads to judge


def test_the_cache_facts_are_read_from_the_server_and_a_loopback_server_counts_as_local(
    postgresql: psycopg.Connection,
) -> None:
    conn = db.connect(f"postgresql://{postgresql.info.user}@127.0.0.1:{postgresql.info.port}/"
                      f"{postgresql.info.dbname}", db.Role.AUDITOR, db.Timeouts())
    try:
        cache = db.fetch_one(conn, db.query(conn, QUERIES, "settings_cache"), None, settings._Cache)
        _, notes = settings.suggest(conn, datetime.now(UTC))
    finally:
        conn.close()
    assert cache is not None and cache.local and cache.shared_buffers == "256MB", cache
    assert not [n for n in notes if "cache hit ratio" in n], notes


JOIN = "SELECT count(*), max(b.pad) FROM small s JOIN big b ON b.k = s.k"


def test_sequential_scan_plans_that_measure_slower_than_index_plans_suggest_a_lower_random_page_cost(
    postgresql: psycopg.Connection,
) -> None:
    postgresql.autocommit = True
    postgresql.execute(
        "CREATE TABLE big AS SELECT g AS id, (g * 7919 % 200000) AS k, repeat('x', 300) AS pad "
        "FROM generate_series(1, 200000) g;"
        "CREATE INDEX ON big (k);"
        "CREATE TABLE small AS SELECT g AS k FROM generate_series(1, 200000, 80) g;"
        "ANALYZE big; ANALYZE small;"
    )
    dsn = f"postgresql://{postgresql.info.user}@127.0.0.1:{postgresql.info.port}/{postgresql.info.dbname}"
    cfg = load_config(env={})
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    try:
        before = fingerprint_of_database(dsn)
        slow = [SlowQuery("42", JOIN, 10, 60.0, 600.0, "no_recommendation")]
        found, notes = settings.random_page_cost(cfg, Snapshot(conn), slow)
        assert fingerprint_of_database(dsn) == before
        current = db.fetch_value(conn, "SHOW random_page_cost")
    finally:
        conn.close()
    assert current == "4", "the setting leaked out of the rolled-back measurement"
    assert not notes, notes
    (s,) = found
    assert (s.name, s.current, s.suggested, s.restart) == ("random_page_cost", "4", "1.1", False)
    assert "1 of 1 slow statement(s) planned with sequential scans run faster" in s.evidence, s.evidence
    assert "Seq Scan on big" in s.evidence and "Index" in s.evidence, s.evidence
    assert s.sql == "ALTER SYSTEM SET random_page_cost = 1.1; SELECT pg_reload_conf();"
    assert s.rollback_sql == "ALTER SYSTEM RESET random_page_cost; SELECT pg_reload_conf();"
    assert s.confidence < 0.8


def test_a_table_read_past_shared_buffers_lowers_the_hit_ratio_and_suggests_buffers_from_local_memory(
    postgresql: psycopg.Connection,
) -> None:
    postgresql.autocommit = True
    # Over a quarter of shared_buffers (256MB here): sequential scans go through a small ring, so every scan
    # reads the table from outside the buffer cache.
    postgresql.execute("CREATE TABLE wide AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 80000) g")
    for _ in range(2):
        postgresql.execute("SELECT count(*) FROM wide WHERE pad <> ''")
    postgresql.execute("SELECT pg_stat_force_next_flush()")
    postgresql.execute("SELECT 1")
    conn = db.connect(f"postgresql://{postgresql.info.user}@127.0.0.1:{postgresql.info.port}/"
                      f"{postgresql.info.dbname}", db.Role.AUDITOR, db.Timeouts())
    try:
        found, notes = settings.suggest(conn, datetime.now(UTC))
    finally:
        conn.close()
    assert not notes, notes
    memory = settings.visible_memory(True)
    assert memory is not None, "/proc/meminfo is readable on the test machine"
    (shared,) = [s for s in found if s.name == "shared_buffers"]
    assert shared.current == "256MB" and shared.restart and shared.confidence == 0.6, shared
    assert "the server runs on this machine: /proc/meminfo shows" in shared.evidence, shared.evidence
    assert shared.suggested == settings._bytes_setting(memory // 4), (shared.suggested, memory)
