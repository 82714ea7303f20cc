"""The exporter against real PostgreSQL: each metric against a hand-computed truth, and its failure modes."""

from __future__ import annotations

import itertools
import math
import os
import random
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.exporter import collectors
from pg_architect.exporter.latency import BUCKETS
from pg_architect.exporter.target import APPLICATION_NAME, Target
from tests.conftest import LOG_THRESHOLD_MS, ServerInfo, make_database
from tests.exporter_helpers import (
    Scrape,
    bucket_delta,
    config,
    histogram_quantile,
    logged_csv_durations,
    logged_durations,
    run_concurrently,
    target,
)
from tests.stack import wait_for

CONTRACT_METRICS = {
    "pg_up",
    "pg_stat_activity_count",
    "pg_settings_max_connections",
    "pg_settings_superuser_reserved_connections",
    "pg_database_size_bytes",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pgarch_connections_used_ratio",
    "pgarch_query_duration_seconds_bucket",
    "pgarch_query_duration_seconds_sum",
    "pgarch_query_duration_seconds_count",
    "pgarch_query_p95_seconds",
    "pgarch_cache_hit_ratio",
    "pgarch_disk_used_bytes",
    "pgarch_disk_size_bytes",
    "pgarch_disk_used_ratio",
    "pgarch_scrape_duration_seconds",
    "pgarch_scrape_collector_success",
    "pgarch_audit_last_run_timestamp_seconds",
    "pgarch_audit_last_success_timestamp_seconds",
    "pgarch_audit_duration_seconds",
    "pgarch_audit_slow_queries",
    "pgarch_audit_recommendations",
    "pgarch_audit_confidence_avg_ratio",
    "pgarch_audit_gain_avg_ratio",
    "pgarch_audit_stuck",
    "pgarch_audit_prs_created_total",
    "pgarch_optimizations_applied_total",
    "pgarch_knowledge_base_records",
}


def scrape(t: Target, budget: float | None = None) -> Scrape:
    return Scrape(t.scrape(budget))


def flush_stats(conn: psycopg.Connection) -> None:
    """Make this backend's pending statistics visible to others now (PostgreSQL 15+)."""
    conn.execute("SELECT pg_stat_force_next_flush()")


@pytest.fixture
def workload_table(postgresql: psycopg.Connection) -> psycopg.Connection:
    postgresql.execute("CREATE TABLE items AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 20000) g")
    postgresql.commit()
    postgresql.autocommit = True
    return postgresql


def test_every_contract_metric_is_served_with_sane_values(pg_dsn: str, workload_table: psycopg.Connection) -> None:
    t = target(pg_dsn)
    first = scrape(t)
    for _ in range(20):
        workload_table.execute("SELECT count(*) FROM items WHERE body LIKE 'a%'")
    flush_stats(workload_table)
    time.sleep(0.2)
    second = scrape(t)
    missing = CONTRACT_METRICS - second.names()
    assert not missing, f"missing from /metrics: {sorted(missing)}"
    assert first.value("pg_up") == 1 and second.value("pg_up") == 1
    failed = [lbl["collector"] for lbl, v in second.samples("pgarch_scrape_collector_success") if v != 1]
    assert not failed, f"collectors failed: {failed}"
    datname = workload_table.info.dbname
    assert 0 < (second.value("pgarch_query_p95_seconds", datname=datname) or 0) < 5
    assert 0 < (second.value("pgarch_cache_hit_ratio", datname=datname) or 0) <= 1
    assert 0 < (second.value("pgarch_disk_used_ratio", source="statvfs") or 0) < 1
    assert 0 < (second.value("pgarch_connections_used_ratio") or 0) < 1
    assert second.value("pgarch_audit_last_success_timestamp_seconds") == 0, "no audit ran yet: zero-valued"
    labels = {k for f in second.families for s in f.samples for k in s.labels}
    allowed = {"datname", "datid", "state", "mode", "le", "source", "collector", "action", "queryid", "integration"}
    allowed |= {"version", "short_version", "slot_name", "database", "slot_type", "wal_status", "status", "outcome"}
    assert labels <= allowed, labels


def test_settings_and_connections_match_the_server(
    pg_dsn: str, postgresql: psycopg.Connection, embedded_pg: ServerInfo
) -> None:
    extra = [psycopg.connect(pg_dsn, autocommit=True) for _ in range(7)]
    try:
        s = scrape(target(pg_dsn))
        row = postgresql.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,"
            " current_setting('reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            "   AND application_name <> %s)",
            (APPLICATION_NAME,),
        ).fetchone()
        assert row is not None
        max_conn, su_reserved, reserved, others = row
        assert s.value("pg_settings_max_connections") == max_conn
        assert s.value("pg_settings_superuser_reserved_connections") == su_reserved
        # The exporter's own backend is a client backend too: others + 1.
        expected = (others + 1) / (max_conn - su_reserved - reserved)
        assert s.value("pgarch_connections_used_ratio") == pytest.approx(expected), (
            s.value("pgarch_connections_used_ratio"),
            others,
            max_conn,
        )
        idle = s.value("pg_stat_activity_count", datname=postgresql.info.dbname, state="idle")
        # 7 extra + the fixture's own connection, all idle; the exporter's is active while it reads.
        assert idle == 8, f"idle backends in the test database: {idle}"
        assert s.value("pg_stat_activity_count", datname=postgresql.info.dbname, state="active") == 1
    finally:
        for c in extra:
            c.close()


def test_database_size_and_cache_counters_match_pg_stat_database(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    conn = workload_table
    datname = conn.info.dbname
    t = target(pg_dsn)
    size_before = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    first = scrape(t)
    for _ in range(5):
        conn.execute("SELECT sum(length(body)) FROM items")
    flush_stats(conn)
    time.sleep(0.3)
    second = scrape(t)
    truth = conn.execute(
        "SELECT blks_hit, blks_read, pg_database_size(datname) FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert truth is not None
    hit2 = second.one("pg_stat_database_blks_hit", datname=datname)
    read2 = second.one("pg_stat_database_blks_read", datname=datname)
    hit1 = first.one("pg_stat_database_blks_hit", datname=datname)
    read1 = first.one("pg_stat_database_blks_read", datname=datname)
    assert None not in (hit1, hit2, read1, read2)
    assert hit2 is not None and read2 is not None and hit1 is not None and read1 is not None
    # The exporter's own later reads add a few hits; the counters it published cannot exceed the truth.
    assert hit2 <= truth[0] and read2 <= truth[1] and hit2 >= hit1 + 5 * 100
    expected_ratio = (hit2 - hit1) / ((hit2 - hit1) + (read2 - read1))
    assert second.value("pgarch_cache_hit_ratio", datname=datname) == pytest.approx(expected_ratio)
    # The size is read at most every database_size_interval_s (here: at the first scrape), and the database's files
    # change beside it (autovacuum and analyze of the new table): the published size lies between the sizes read
    # before and after.
    assert size_before is not None
    low, high = sorted((size_before[0], truth[2]))
    size = second.value("pg_database_size_bytes", datname=datname)
    assert size is not None and low * 0.99 <= size <= high * 1.01, (size, size_before[0], truth[2])


def test_disk_usage_is_statvfs_of_the_data_directory(pg_dsn: str, embedded_pg: ServerInfo) -> None:
    s = scrape(target(pg_dsn))
    assert isinstance(embedded_pg.server, EmbeddedPostgres)
    st = os.statvfs(embedded_pg.server.data_dir)
    assert s.value("pgarch_disk_size_bytes", source="statvfs") == st.f_blocks * st.f_frsize
    used = s.value("pgarch_disk_used_bytes", source="statvfs")
    assert used == pytest.approx((st.f_blocks - st.f_bfree) * st.f_frsize, rel=0.01)


def test_disk_falls_back_to_configured_capacity(pg_dsn: str, postgresql: psycopg.Connection) -> None:
    t = target(pg_dsn, exporter_data_directory="/nonexistent/pgdata", exporter_disk_capacity_bytes="10000000000")
    s = scrape(t)
    sizes = postgresql.execute(
        "SELECT sum(pg_database_size(oid)) FROM pg_database WHERE NOT datistemplate AND datallowconn"
    ).fetchone()
    assert sizes is not None
    assert s.value("pgarch_disk_size_bytes", source="configured") == 10_000_000_000
    assert s.value("pgarch_disk_used_bytes", source="configured") == pytest.approx(float(sizes[0]), rel=0.01)
    assert s.value("pgarch_disk_used_ratio", source="statvfs") is None


def test_histogram_counts_exactly_the_calls_run_between_scrapes(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    conn = workload_table
    datname = conn.info.dbname
    t = target(pg_dsn)
    before = scrape(t)
    for i in range(37):
        conn.execute("SELECT body FROM items WHERE id = %s", (i,))
    total = conn.execute(
        "SELECT sum(calls), sum(total_exec_time) FROM pg_stat_statements "
        "WHERE query = 'SELECT body FROM items WHERE id = $1' AND toplevel"
    ).fetchone()
    after = scrape(t)
    count = (after.value("pgarch_query_duration_seconds_count", datname=datname) or 0) - (
        before.value("pgarch_query_duration_seconds_count", datname=datname) or 0
    )
    # Our 37 calls, plus the check above and the exporter's own few statements in this database.
    assert 37 <= count < 60, count
    assert total is not None and total[0] == 37
    buckets = bucket_delta(before, after, datname)
    values = [v for _, v in sorted(buckets)]
    assert all(v >= -1e-9 for v in values), f"negative bucket deltas: {values}"
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(values)), "buckets must be cumulative"
    assert len(buckets) == len(BUCKETS) + 1


def test_p95_matches_the_servers_own_duration_log(
    embedded_pg: ServerInfo, pg_dsn: str, postgresql: psycopg.Connection
) -> None:
    assert isinstance(embedded_pg.server, EmbeddedPostgres)
    log_file = embedded_pg.server.data_dir / "server.log"
    rng = random.Random(7)
    statements: list[tuple[str, tuple[object, ...]]] = []
    # A known mixture: two statements with log-normal latencies (medians 4 ms and 25 ms).
    statements += [("SELECT pg_sleep(%s) /* p95-mix */", (rng.lognormvariate(-5.5, 0.6),)) for _ in range(300)]
    statements += [("SELECT 1, pg_sleep(%s) /* p95-mix */", (rng.lognormvariate(-3.7, 0.4),)) for _ in range(60)]
    rng.shuffle(statements)
    t = target(pg_dsn)
    before = scrape(t)
    offset = log_file.stat().st_size
    run_concurrently(pg_dsn, statements, threads=2, session_sql="SET log_min_duration_statement = 0")
    after = scrape(t)
    truth_samples = sorted(logged_durations(log_file, "p95-mix", offset))
    assert len(truth_samples) == 360, f"logged {len(truth_samples)} statements"
    truth = statistics.quantiles(truth_samples, n=100, method="inclusive")[94]
    datname = postgresql.info.dbname
    gauge = after.value("pgarch_query_p95_seconds", datname=datname)
    assert gauge is not None
    # The exporter's own statements in this database are few and fast; they barely move the p95.
    print(f"p95: gauge {gauge:.5f}s truth {truth:.5f}s")
    assert abs(gauge - truth) / truth < 0.10, f"gauge p95 {gauge:.4f}s vs logged {truth:.4f}s"
    from_histogram = histogram_quantile(0.95, bucket_delta(before, after, datname))
    assert abs(from_histogram - truth) / truth < 0.10, f"histogram p95 {from_histogram:.4f}s vs {truth:.4f}s"


def test_pg_stat_statements_reset_between_scrapes_counts_only_new_calls(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    conn = workload_table
    datname = conn.info.dbname
    t = target(pg_dsn)
    for i in range(50):
        conn.execute("SELECT body FROM items WHERE id = %s", (i,))
    before = scrape(t)
    conn.execute("SELECT pg_stat_statements_reset()")
    for i in range(12):
        conn.execute("SELECT body FROM items WHERE id = %s", (i,))
    after = scrape(t)
    b = before.value("pgarch_query_duration_seconds_count", datname=datname) or 0
    a = after.value("pgarch_query_duration_seconds_count", datname=datname) or 0
    # 12 new calls (+ the reset call and a few of the exporter's own), never the 50 from before the reset
    # again and never a decrease.
    assert 12 <= a - b < 30, f"count rose by {a - b}"
    assert all(v >= -1e-9 for _, v in bucket_delta(before, after, datname))


def test_role_with_only_pg_monitor_gets_every_collector(
    embedded_pg: ServerInfo, postgresql: psycopg.Connection
) -> None:
    postgresql.autocommit = True
    postgresql.execute("DROP ROLE IF EXISTS monitor_only")
    postgresql.execute("CREATE ROLE monitor_only LOGIN PASSWORD 'secret-pw' IN ROLE pg_monitor")
    try:
        t = target(embedded_pg.dsn(postgresql.info.dbname, user="monitor_only", password="secret-pw"))
        scrape(t)
        postgresql.execute("SELECT pg_sleep(0.01)")
        s = scrape(t)
        failed = [lbl["collector"] for lbl, v in s.samples("pgarch_scrape_collector_success") if v != 1]
        assert s.value("pg_up") == 1 and not failed, f"failed collectors as pg_monitor: {failed}"
        assert (s.value("pgarch_query_duration_seconds_count", datname=postgresql.info.dbname) or 0) > 0
        t.close()
    finally:
        postgresql.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'monitor_only'")
        postgresql.execute("DROP ROLE monitor_only")


def test_top_statements_are_bounded_and_labelled_by_queryid_only(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    t = target(pg_dsn, exporter_top_queries="3")
    scrape(t)
    for n in range(8):
        workload_table.execute(f"SELECT count(*) FROM items WHERE id > {n} AND id < %s", (n * 10,))
        workload_table.execute(f"SELECT {n} AS c{n}, count(*) FROM items")
    s = scrape(t)
    series = s.samples("pgarch_statement_exec_seconds_total")
    assert 0 < len(series) <= 3, series
    for labels, _ in series:
        assert set(labels) == {"datname", "queryid"} and labels["queryid"].lstrip("-").isdigit(), labels


def test_concurrent_scrapes_share_one_collection(pg_dsn: str) -> None:
    t = target(pg_dsn)
    scrape(t)
    results: list[Scrape] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        barrier.wait()
        results.append(scrape(t))

    threads = [threading.Thread(target=one) for _ in range(6)]
    before = t.collections
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 6 and all(r.value("pg_up") == 1 for r in results)
    assert t.collections - before <= 2, f"{t.collections - before} collections for 6 concurrent scrapes"


# -- failure modes ----------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, to stop and start."""
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    try:
        yield server
    finally:
        server.destroy()


def test_database_stopped_mid_run_reports_down_within_budget_then_recovers(own_server: EmbeddedPostgres) -> None:
    t = Target("own", own_server.dsn(), config(exporter_scrape_budget_s="3"))
    assert scrape(t).value("pg_up") == 1
    own_server.stop()
    started = time.monotonic()
    down = scrape(t)
    elapsed = time.monotonic() - started
    assert down.value("pg_up") == 0 and elapsed < 3.5, (down.value("pg_up"), elapsed)
    stale = {n for n in down.names() if not n.startswith(("pg_up", "pgarch_scrape_"))}
    assert not stale, f"series presented while down: {sorted(stale)}"
    own_server.start()
    recovered = scrape(t)
    assert recovered.value("pg_up") == 1
    assert recovered.value("pgarch_scrape_collector_success", collector="statements") == 1


class _Blackhole:
    """A TCP port that accepts connections and never answers: a hung server, as the client sees it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def test_hung_server_answers_within_budget_with_pg_up_zero() -> None:
    hole = _Blackhole()
    try:
        t = Target(
            "hung", f"postgresql://postgres@127.0.0.1:{hole.port}/postgres", config(exporter_scrape_budget_s="2.5")
        )
        for _ in range(2):
            started = time.monotonic()
            s = scrape(t)
            elapsed = time.monotonic() - started
            assert s.value("pg_up") == 0 and elapsed < 3.0, f"pg_up={s.value('pg_up')} after {elapsed:.2f}s"
    finally:
        hole.close()


def test_lock_on_knowledge_base_fails_one_collector_within_budget_and_leaves_no_backends(
    pg_dsn: str, postgresql: psycopg.Connection
) -> None:
    postgresql.autocommit = True
    postgresql.execute((Path(__file__).parent.parent / "auditor" / "migrations" / "001_init.sql").read_text())
    locker = psycopg.connect(pg_dsn)
    locker.execute("LOCK TABLE pgarch.audit_runs IN ACCESS EXCLUSIVE MODE")
    try:
        t = target(pg_dsn, exporter_scrape_budget_s="3")
        started = time.monotonic()
        s = scrape(t)
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, elapsed
        assert s.value("pg_up") == 1
        assert s.value("pgarch_scrape_collector_success", collector="knowledge_base") == 0
        assert s.value("pgarch_scrape_collector_success", collector="statements") == 1
    finally:
        locker.rollback()
        locker.close()
    t.close()

    # A closed connection's backend leaves pg_stat_activity a moment later: wait for that, bounded.
    def backends() -> int:
        row = postgresql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: backends() == 0, 30, "the exporter's backends to go", lambda: f"{backends()} left")


@pytest.mark.server_version(170000, "pg_stat_statements_reset(minmax_only) and stats_since")
def test_min_max_only_reset_is_not_mistaken_for_a_new_statement(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    """PostgreSQL 17+: pg_stat_statements_reset(minmax_only => true) zeroes min/max while calls go on."""
    conn = workload_table
    datname = conn.info.dbname
    t = target(pg_dsn)
    for i in range(200):
        conn.execute("SELECT body FROM items WHERE id = %s", (i,))
    before = scrape(t)
    conn.execute("SELECT pg_stat_statements_reset(0, 0, 0, true)")
    for i in range(5):
        conn.execute("SELECT body FROM items WHERE id = %s", (i,))
    after = scrape(t)
    rise = (after.value("pgarch_query_duration_seconds_count", datname=datname) or 0) - (
        before.value("pgarch_query_duration_seconds_count", datname=datname) or 0
    )
    assert 5 <= rise < 20, f"count rose by {rise}: the 200 earlier calls were counted again"


def test_a_bug_in_one_collector_fails_that_collector_not_the_database(
    pg_dsn: str, postgresql: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception of ours (not a database error) inside a collector group is a failing collector: pg_up stays 1,
    the other groups report, and the connection goes back to the target instead of leaking."""

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise ZeroDivisionError("a bug in database_metrics")

    monkeypatch.setattr(collectors, "database_metrics", broken)
    t = target(pg_dsn)
    try:
        for _ in range(2):  # twice: the connection of the first scrape must be reusable by the second
            s = scrape(t)
            assert s.value("pg_up") == 1
            assert s.value("pgarch_scrape_collector_success", collector="databases") == 0
            assert s.value("pgarch_scrape_collector_success", collector="activity") == 1
            assert s.value("pgarch_scrape_collector_success", collector="knowledge_base") == 1
        postgresql.autocommit = True
        backends = postgresql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchone()
        assert backends == (1,), f"the target should hold exactly its one connection: {backends}"
    finally:
        t.close()


def test_a_bug_while_reading_the_server_is_not_reported_as_an_outage(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: object) -> object:
        raise KeyError("a bug in read_server")

    monkeypatch.setattr(collectors, "read_server", broken)
    t = target(pg_dsn)
    try:
        s = scrape(t)
        assert s.value("pg_up") == 1
        assert s.value("pgarch_scrape_collector_success", collector="server") == 0
    finally:
        t.close()


# -- postgres_exporter's core series ------------------------------------------------------------------

POSTGRES_EXPORTER = Path("/usr/bin/prometheus-postgres-exporter")
# Series both exporters emit by default on any supported server (bgwriter is compared where 0.11 can read it).
CORE_SERIES = (
    "pg_up",
    "pg_static",
    "pg_database_size_bytes",
    "pg_locks_count",
    "pg_stat_activity_count",
    "pg_stat_activity_max_tx_duration",
    "pg_settings_max_connections",
    "pg_settings_shared_buffers_bytes",
    "pg_settings_checkpoint_timeout_seconds",
    "pg_settings_random_page_cost",
    "pg_settings_autovacuum",
    "pg_stat_archiver_archived_count",
    "pg_stat_archiver_failed_count",
    "pg_replication_slots_active",
    "pg_stat_database_numbackends",
    *(
        f"pg_stat_database_{c}"
        for c in (
            "xact_commit",
            "xact_rollback",
            "blks_read",
            "blks_hit",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "conflicts",
            "temp_files",
            "temp_bytes",
            "deadlocks",
            "blk_read_time",
            "blk_write_time",
        )
    ),
    *(f"pg_stat_database_conflicts_confl_{c}" for c in ("tablespace", "lock", "snapshot", "bufferpin", "deadlock")),
)
BGWRITER_SERIES = tuple(
    f"pg_stat_bgwriter_{c}_total"
    for c in (
        "checkpoints_timed",
        "checkpoints_req",
        "checkpoint_write_time",
        "checkpoint_sync_time",
        "buffers_checkpoint",
        "buffers_clean",
        "maxwritten_clean",
        "buffers_backend",
        "buffers_backend_fsync",
        "buffers_alloc",
    )
)


def exposition_types(body: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Per series name: its TYPE and the label names of its samples (postgres_exporter 0.11's ``server`` left out)."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            keys = {part.split("=", 1)[0] for part in rest.rsplit("}", 1)[0].split('",') if "=" in part}
            labels.setdefault(name, set()).update(keys - {"server"})
    return {name: (types.get(name, "untyped"), frozenset(labels.get(name, set()))) for name in labels}


def postgres_exporter_body(dsn: str) -> str:
    """One scrape of Debian's postgres_exporter against ``dsn``."""
    import subprocess
    import urllib.request

    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    listen = port.getsockname()[1]
    port.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATA_SOURCE"))}
    env["DATA_SOURCE_NAME"] = dsn + ("&" if "?" in dsn else "?") + "sslmode=disable"
    proc = subprocess.Popen(
        [str(POSTGRES_EXPORTER), f"--web.listen-address=127.0.0.1:{listen}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def fetch() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/metrics", timeout=30) as response:
                    text = response.read().decode()
                    return text if "\npg_up " in "\n" + text else None
            except OSError:
                return None

        return wait_for(fetch, 60, "postgres_exporter to answer")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def compare_with_postgres_exporter(dsn: str, names: tuple[str, ...]) -> None:
    from pg_architect.exporter import exposition

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_catalog.pg_create_physical_replication_slot('pgarch_compat_slot')")
    try:
        ours = exposition_types(exposition.encode(target(dsn).scrape()).decode())
        theirs = exposition_types(postgres_exporter_body(dsn))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_catalog.pg_drop_replication_slot('pgarch_compat_slot')")
    differ = {n: (ours.get(n), theirs.get(n)) for n in names if ours.get(n) != theirs.get(n)}
    assert not differ, "name -> (ours, postgres_exporter's) (type, label names):\n" + "\n".join(
        f"  {n}: {o} vs {t}" for n, (o, t) in sorted(differ.items())
    )


@pytest.mark.skipif(not POSTGRES_EXPORTER.exists(), reason="apt-get install prometheus-postgres-exporter")
def test_core_series_have_postgres_exporters_names_types_and_labels(pg_dsn: str) -> None:
    # postgres_exporter 0.11 cannot read pg_stat_bgwriter on 17+ (its collector fails there): not compared here.
    compare_with_postgres_exporter(pg_dsn, CORE_SERIES)


@pytest.mark.skipif(not POSTGRES_EXPORTER.exists(), reason="apt-get install prometheus-postgres-exporter")
def test_before_17_bgwriter_series_match_postgres_exporter_too(debian_pg: ServerInfo) -> None:
    from tests.conftest import make_database

    dsn = make_database(debian_pg, "pgarch_compat", ("pg_stat_statements",))
    compare_with_postgres_exporter(dsn, CORE_SERIES + BGWRITER_SERIES)
    s = scrape(target(dsn))
    failed = [lbl["collector"] for lbl, v in s.samples("pgarch_scrape_collector_success") if v != 1]
    assert not failed, f"collectors failed before 17: {failed}"
    assert not any(n.startswith("pg_stat_checkpointer_") for n in s.names()), "pg_stat_checkpointer is 17+"


def test_core_series_values_match_the_servers_views(pg_dsn: str, workload_table: psycopg.Connection) -> None:
    conn = workload_table
    datname = conn.info.dbname
    holder = psycopg.connect(pg_dsn)
    try:
        holder.execute("LOCK TABLE items IN SHARE MODE")
        holder.execute("SELECT pg_sleep(0.05)")  # the transaction is now at least 50 ms old
        s = scrape(target(pg_dsn))
        truth = conn.execute(
            "SELECT xact_commit, tup_returned, deadlocks, temp_files FROM pg_stat_database WHERE datname = %s",
            (datname,),
        ).fetchone()
        settings = conn.execute(
            "SELECT pg_size_bytes(current_setting('shared_buffers')),"
            " extract(epoch FROM current_setting('checkpoint_timeout')::interval),"
            " current_setting('random_page_cost')::float8, current_setting('server_version_num')::int"
        ).fetchone()
    finally:
        holder.rollback()
        holder.close()
    assert truth is not None and settings is not None
    commits = s.one("pg_stat_database_xact_commit", datname=datname)
    assert commits is not None and 0 < commits <= truth[0]
    returned = s.one("pg_stat_database_tup_returned", datname=datname)
    assert returned is not None and 0 < returned <= truth[1]
    assert s.one("pg_stat_database_deadlocks", datname=datname) == truth[2]
    assert s.value("pg_locks_count", datname=datname, mode="sharelock") == 1
    assert (s.value("pg_stat_activity_max_tx_duration", datname=datname, state="idle in transaction") or 0) >= 0.05
    assert s.value("pg_settings_shared_buffers_bytes") == settings[0]
    assert s.value("pg_settings_checkpoint_timeout_seconds") == settings[1]
    assert s.value("pg_settings_random_page_cost") == settings[2]
    (static,) = s.samples("pg_static")
    version = settings[3]
    assert static[0]["short_version"] == f"{version // 10000}.{version % 10000}.0", static
    assert s.value("pg_replication_is_replica") == 0
    if version >= 170000:
        # 17 moved checkpoints to pg_stat_checkpointer: both upstream's new names and the old ones are there.
        timed = s.value("pg_stat_checkpointer_num_timed_total")
        assert timed is not None and s.value("pg_stat_bgwriter_checkpoints_timed_total") == timed
        assert s.value("pg_stat_bgwriter_buffers_backend_total") is None, "gone from 17 (pg_stat_io)"


def test_text_format_announces_each_counter_under_its_sample_name(pg_dsn: str) -> None:
    from pg_architect.exporter import exposition

    body = exposition.encode(target(pg_dsn).scrape()).decode()
    assert "# TYPE pg_stat_database_blks_hit counter\npg_stat_database_blks_hit{" in body
    assert "# TYPE pg_stat_bgwriter_buffers_alloc_total counter\npg_stat_bgwriter_buffers_alloc_total " in body
    assert "# TYPE pgarch_query_duration_seconds histogram\n" in body
    assert "# TYPE pg_static untyped\n" in body
    for name, (kind, _) in exposition_types(body).items():
        if kind == "counter":
            assert f"# TYPE {name} counter\n" in body, name


def test_statements_on_their_own_interval_serve_their_age_and_never_a_stale_collection(
    pg_dsn: str, workload_table: psycopg.Connection
) -> None:
    conn = workload_table
    datname = conn.info.dbname
    t = target(pg_dsn, exporter_statements_interval_s="0.3", exporter_scrape_budget_s="1")
    first = scrape(t)
    assert first.value("pgarch_scrape_collector_success", collector="statements") == 1
    help_text = next(f.documentation for f in first.families if f.name == "pgarch_statements_collection_age_seconds")
    assert "own interval" in help_text
    count0 = first.value("pgarch_query_duration_seconds_count", datname=datname) or 0.0
    for _ in range(10):
        conn.execute("SELECT count(*) FROM items WHERE body LIKE 'b%'")

    def counted() -> Scrape | None:
        s = scrape(t)
        return s if (s.value("pgarch_query_duration_seconds_count", datname=datname) or 0) >= count0 + 10 else None

    # The background read picks the calls up without a scrape reading pg_stat_statements itself.
    later = wait_for(counted, 60, "the background pg_stat_statements read to count the calls")
    assert (later.value("pgarch_statements_collection_age_seconds") or 0) >= 0
    assert t._pgss.conn is not None, "the background read has its own connection"

    conn.execute("DROP EXTENSION pg_stat_statements")  # every refresh fails from now on

    def stale_refused() -> Scrape | None:
        s = scrape(t)
        return s if s.value("pgarch_scrape_collector_success", collector="statements") == 0 else None

    refused = wait_for(stale_refused, 60, "an old collection to be refused")
    assert refused.value("pg_up") == 1
    assert not any(n.startswith(("pgarch_query_", "pgarch_statement")) for n in refused.names()), refused.names()
    conn.execute("CREATE EXTENSION pg_stat_statements")
    wait_for(
        lambda: scrape(t).value("pgarch_scrape_collector_success", collector="statements") == 1,
        60,
        "the statements collector to recover",
    )
    t.close()


def test_settings_are_the_servers_configuration_and_follow_a_reload(
    pg_dsn: str, postgresql: psycopg.Connection
) -> None:
    postgresql.autocommit = True
    t = target(pg_dsn, exporter_scrape_budget_s="7")
    first = scrape(t)
    # The exporter's session runs under its own timeouts (7 s here): it cannot report the server's, so it does not.
    assert first.value("pg_settings_statement_timeout_seconds") is None
    assert first.value("pg_settings_work_mem_bytes") is not None
    before = first.value("pg_settings_random_page_cost")
    postgresql.execute("ALTER SYSTEM SET random_page_cost = 1.7")
    try:
        postgresql.execute("SELECT pg_reload_conf()")
        wait_for(
            lambda: scrape(t).value("pg_settings_random_page_cost") == 1.7, 60, "the reloaded setting to be served"
        )
    finally:
        postgresql.execute("ALTER SYSTEM RESET random_page_cost")
        postgresql.execute("SELECT pg_reload_conf()")
    wait_for(lambda: scrape(t).value("pg_settings_random_page_cost") == before, 60, "the reset to be served")
    t.close()


def test_p95_above_the_duration_logs_threshold_is_the_logged_truth(logging_pg: ServerInfo) -> None:
    """With the server's duration log readable at a production-like threshold (250 ms), a window whose p95
    lies above it is exported within 5 % of the truth: here a statement whose slow mode sits above T."""
    dbname = "p95_log_backed"
    dsn = make_database(logging_pg, dbname)
    assert isinstance(logging_pg.server, EmbeddedPostgres)
    log_dir = logging_pg.server.data_dir / "log"
    # The exporter watches from the postgres database: the workload's database holds the workload alone.
    t = target(logging_pg.dsn(), exporter_duration_log="directory", exporter_duration_log_directory=str(log_dir))
    rng = random.Random(21)
    # One statement, two modes: 85 % near 3 ms, 15 % between 0.3 and 0.6 s (a lock wait, a cold read).
    sleeps = [
        rng.uniform(0.3, 0.6) if rng.random() < 0.15 else rng.lognormvariate(math.log(0.003), 0.3) for _ in range(200)
    ]
    scrape(t)  # the log reader's baseline
    before = scrape(t)
    run_concurrently(
        dsn,
        [("SELECT pg_sleep(%s) /* two-modes */", (s,)) for s in sleeps],
        threads=4,
        application_name="p95-log-test",
        simple=True,
    )
    after = scrape(t)
    truth_samples = sorted(logged_csv_durations(log_dir, dbname, "p95-log-test"))
    assert len(truth_samples) == 200, f"logged {len(truth_samples)} statements"
    truth = truth_samples[math.ceil(0.95 * len(truth_samples)) - 1]
    assert truth >= LOG_THRESHOLD_MS / 1000, f"the workload's p95 {truth:.3f}s should lie above the threshold"
    gauge = after.value("pgarch_query_p95_seconds", datname=dbname)
    assert gauge is not None
    print(f"p95: gauge {gauge:.5f}s truth {truth:.5f}s")
    assert abs(gauge - truth) / truth <= 0.05, f"gauge p95 {gauge:.4f}s vs logged {truth:.4f}s"
    assert after.value("pgarch_query_p95_source", datname=dbname, source="duration_log") == 1.0
    assert after.value("pgarch_query_p95_suspect", datname=dbname) == 0.0
    assert after.value("pgarch_duration_log_complete") == 1.0
    from_histogram = histogram_quantile(0.95, bucket_delta(before, after, dbname))
    assert abs(from_histogram - truth) / truth < 0.10, f"histogram p95 {from_histogram:.4f}s vs {truth:.4f}s"


def test_an_unreadable_duration_log_degrades_the_p95_source_not_the_scrape(
    logging_pg: ServerInfo, caplog: pytest.LogCaptureFixture
) -> None:
    dbname = "p95_log_denied"
    dsn = make_database(logging_pg, dbname)
    with psycopg.connect(logging_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS exporter_no_log")
        admin.execute("CREATE ROLE exporter_no_log LOGIN IN ROLE pg_read_all_stats")
    # pg_read_file without the grants: every scrape still answers, from pg_stat_statements alone.
    t = target(logging_pg.dsn(user="exporter_no_log"), exporter_duration_log="pg_read_file")
    scrape(t)
    run_concurrently(dsn, [("SELECT pg_sleep(%s)", (0.002,))] * 30, threads=2)
    after = scrape(t)
    assert after.value("pg_up") == 1.0
    assert after.value("pgarch_scrape_collector_success", collector="statements") == 1.0
    assert after.value("pgarch_duration_log_complete") == 0.0
    assert after.value("pgarch_query_p95_source", datname=dbname, source="pg_stat_statements") == 1.0
    assert any("pg_monitor" in r.getMessage() for r in caplog.records), "the log says which grant is missing"
