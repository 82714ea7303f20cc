"""The auditor on a production database: no blocked writes by default, one locked table never sinks an
audit, and an audit that could do nothing says so (issue 14, items 1, 4 and 5)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from pg_architect import demo
from tests.conftest import ServerInfo, make_database
from tests.test_audit import find, fingerprint_of_database


def audit(dsn: str, kb_dsn: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``pg-architect audit`` in its default configuration (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", "audit", "--dsn", dsn, "--config", "/dev/null", "--format", "json",
         "--min-calls", "4", "--min-mean-ms", "0.5"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn, **(env or {})},
    )


@pytest.fixture(scope="module")
def shop(embedded_pg: ServerInfo) -> str:
    dsn = demo.load(embedded_pg.dsn(), embedded_pg.dsn, name="safety_shop", progress=lambda m: None,
                    reset_statements=False, customers=20_000, orders=100_000, jobs=20_000)
    demo.run_workload(dsn, demo.workload(20_000, calls=6))
    return dsn


def test_by_default_no_index_is_built_on_the_audited_server_and_writers_never_wait(
    shop: str, embedded_pg: ServerInfo
) -> None:
    """Without hypopg or staging, the default configuration measures nothing that locks: every statement an
    index could help says why and how to fix it, and INSERTs running beside the audit never wait on a lock."""
    kb = make_database(embedded_pg, "safety_kb_default", ("vector",))
    stop = threading.Event()
    waited: list[str] = []
    inserted = [0]

    def writer() -> None:
        with psycopg.connect(shop, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '50ms'")
            while not stop.is_set():
                try:
                    conn.execute(
                        "INSERT INTO orders (customer_id, status, total, created_at) VALUES (1, 'new', 1, now())"
                    )
                    inserted[0] += 1
                except psycopg.errors.LockNotAvailable as exc:
                    waited.append(str(exc))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        proc = audit(shop, kb)
    finally:
        stop.set()
        thread.join(30)
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE status = 'new'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert inserted[0] > 0 and not waited, f"{len(waited)} INSERT(s) waited on a lock: {waited[:3]}"
    report = json.loads(proc.stdout)
    q = find(report, "orders WHERE customer_id")
    assert q["status"] == "no_recommendation", q
    assert "cannot measure safely without hypopg or a staging server" in q["skip_reason"], q["skip_reason"]
    assert "measurement.allow_blocking_builds: true" in q["skip_reason"], q["skip_reason"]


def test_a_table_locked_by_another_session_fails_only_its_statements(shop: str, embedded_pg: ServerInfo) -> None:
    kb = make_database(embedded_pg, "safety_kb_lock", ("vector",))
    before = fingerprint_of_database(shop)
    with psycopg.connect(shop) as locker:
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        proc = audit(
            shop, kb, env={"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true",
                           "PG_ARCHITECT_MEASUREMENT_LOCK_TIMEOUT_MS": "300"},
        )
        locker.rollback()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["status"] == "ok"
    jobs = find(report, "FROM jobs")
    assert jobs["status"] == "error" and "jobs" in jobs["skip_reason"], jobs
    # The other tables' statements were measured and recommended as usual.
    assert find(report, "orders WHERE customer_id")["status"] == "recommended"
    assert find(report, "lower(email)")["status"] == "recommended"
    assert any("public.jobs" in note for note in report.get("notes", [])), report.get("notes")
    with psycopg.connect(kb) as conn:
        stored = conn.execute("SELECT status, recommended FROM pgarch.audit_runs").fetchall()
    assert stored == [("ok", report["kpis"]["recommended"])], stored
    assert fingerprint_of_database(shop) == before


def test_an_audit_where_every_statement_failed_is_a_failed_run_with_a_non_zero_exit(
    shop: str, embedded_pg: ServerInfo
) -> None:
    """A role that may not read the tables: every statement errors, and the audit says so."""
    kb = make_database(embedded_pg, "safety_kb_denied", ("vector",))
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS safety_monitor")
        conn.execute("CREATE ROLE safety_monitor LOGIN IN ROLE pg_monitor")
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO safety_monitor")
        conn.execute("GRANT CREATE ON DATABASE safety_kb_denied TO safety_monitor")
    monitor = shop.replace("postgres@", "safety_monitor@")
    proc = audit(monitor, kb.replace("postgres@", "safety_monitor@"),
                 env={"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true"})
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    report = json.loads(proc.stdout)
    assert report["status"] == "failed", report["status"]
    assert "failed" in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"may not read public\.\w+: GRANT SELECT ON public\.\w+ TO", report["error"]), report["error"]
    with psycopg.connect(kb) as conn:
        assert conn.execute("SELECT status FROM pgarch.audit_runs").fetchall() == [("failed",)]


def test_functions_that_lie_about_their_volatility_never_run_during_an_audit(embedded_pg: ServerInfo) -> None:
    """The canary: a sequence advanced by IMMUTABLE and STABLE functions (one also notifies), and a committed
    remote write through dblink from an IMMUTABLE SQL function. The workload ran them; the audit, which plans
    and times what it may, must not."""
    shop = make_database(embedded_pg, "safety_canary", ("pg_stat_statements",))
    remote = f"host={embedded_pg.host} port={embedded_pg.port} dbname=safety_canary user=postgres"
    with psycopg.connect(shop, autocommit=True) as conn:
        dblink = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'").fetchone() == (1,)
        conn.execute(
            "CREATE TABLE items AS SELECT g AS id, g % 1000 AS k, md5(g::text) AS body"
            " FROM generate_series(1, 200000) g;"
            "CREATE TABLE canary (note text); CREATE SEQUENCE canary_seq;"
            "CREATE FUNCTION lying_next() RETURNS int LANGUAGE plpgsql IMMUTABLE AS"
            " $$ BEGIN RETURN nextval('canary_seq') % 1000; END $$;"
            "CREATE FUNCTION lying_log() RETURNS int LANGUAGE plpgsql STABLE AS"
            " $$ BEGIN PERFORM pg_notify('canary', 'x'); PERFORM nextval('canary_seq'); RETURN 7; END $$;"
            "ANALYZE items"
        )
        statements = ["SELECT body FROM items WHERE k = lying_next()", "SELECT body FROM items WHERE k = lying_log()"]
        if dblink:
            conn.execute("CREATE EXTENSION dblink")
            conn.execute(
                "CREATE FUNCTION lying_remote() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT 7 FROM"
                f" dblink_exec('{remote}', 'INSERT INTO canary VALUES (''remote'')') $$"
            )
            statements.append("SELECT body FROM items WHERE k = lying_remote()")
        for sql in statements:
            for _ in range(5):
                conn.execute(sql)
        conn.execute("UPDATE items SET body = body WHERE k = lying_next() AND false")
        conn.execute("TRUNCATE canary")
        seq_before = conn.execute("SELECT last_value FROM canary_seq").fetchone()
    kb = make_database(embedded_pg, "safety_kb_canary", ("vector",))
    before = fingerprint_of_database(shop)
    proc = audit(shop, kb, env={"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true"})
    after = fingerprint_of_database(shop)
    with psycopg.connect(shop, autocommit=True) as conn:
        canary = conn.execute("SELECT note FROM canary").fetchall()
        seq_after = conn.execute("SELECT last_value FROM canary_seq").fetchone()
    assert canary == [] and seq_after == seq_before, (canary, seq_before, seq_after)
    assert after == before
    report = json.loads(proc.stdout)
    for fragment in ("lying_next()", "lying_log()", *(["lying_remote()"] if dblink else [])):
        q = find(report, f"k = {fragment}")
        assert q["status"] == "error" and "refused" in q["skip_reason"], q
