"""Settings suggestions from the server's statistics (issue 18, item 4): each with evidence, SQL and rollback."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from pg_architect.auditor import settings
from pg_architect.core import db, pgss

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
    assert "statement 0 (SELECT 0)" in found[0].evidence  # neither our own statement nor a utility one
    assert found[-1].confidence < found[0].confidence
    assert found[-1].rollback_sql == "ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf();"
