"""Every measurement method on real servers, the cases where none applies, and what the advisor must
not propose (indexes that exist) or do (execute DML)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pg_architect import demo
from pg_architect.auditor import window
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core import db
from tests.conftest import ServerInfo, make_database
from tests.test_audit import BLOCKING_BUILDS, SCALE, find, fingerprint_of_database


def audit(dsn: str, kb_dsn: str, min_mean_ms: str = "0.5", **env: str) -> dict[str, Any]:
    variables = {f"PG_ARCHITECT_{k.upper()}": v for k, v in env.items()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_architect",
            "audit",
            "--dsn",
            dsn,
            "--config",
            "/dev/null",
            "--format",
            "json",
            "--min-calls",
            "4",
            "--min-mean-ms",
            min_mean_ms,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # The test owns this database: real builds are opted in unless a test says otherwise.
        env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn, **BLOCKING_BUILDS, **variables},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def small_shop(server: ServerInfo, name: str, orders: int) -> str:
    """A small shop database whose workload has run (5,000 customers)."""
    dsn = demo.load(server.dsn(), server.dsn, name=name, progress=lambda m: None, reset_statements=False,
                    customers=5000, orders=orders, jobs=5000)
    demo.run_workload(dsn, demo.workload(5000, calls=5))
    return dsn


@pytest.fixture(scope="module")
def debian_shop(debian_pg: ServerInfo) -> Iterator[str]:
    dsn = demo.load(
        debian_pg.dsn(),
        debian_pg.dsn,
        name="measure_shop",
        progress=lambda m: None,
        reset_statements=False,
        knowledge_base=False,
        **SCALE,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM jobs WHERE id % 2 = 0")  # dead tuples and a changed table, as in production
        conn.execute("VACUUM ANALYZE jobs")
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))
    yield dsn


def test_hypothetical_method_with_hypopg_builds_nothing_and_leaves_no_extension(
    debian_shop: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "measure_kb_hypo", ("vector",))
    before = fingerprint_of_database(debian_shop)
    report = audit(debian_shop, kb)
    assert fingerprint_of_database(debian_shop) == before, "audit changed the database (or left hypopg behind)"
    q = find(report, "orders WHERE customer_id")
    assert q["status"] == "recommended", q
    m = q["recommendation"]["measurement"]
    assert m["method"] == "hypothetical" and m["before_cost"] > m["after_cost"] * 2, m
    # What can be measured without a lock is: the statement's time now. The index itself only has costs.
    assert m["before_ms"] > 0 and m["after_ms"] is None, m
    # Planner estimates, not timings: confidence is capped below "merge without review".
    assert q["recommendation"]["confidence"] < 0.9 and q["recommendation"]["action"] == "pr_review"
    decoy = find(report, "GROUP BY country")
    assert decoy["status"] != "recommended", decoy


def test_dml_is_compared_by_cost_and_never_executed(debian_shop: str, embedded_pg: ServerInfo) -> None:
    with psycopg.connect(debian_shop, autocommit=True) as conn:
        before = conn.execute("SELECT count(*), sum(total) FROM orders").fetchone()
        for customer in range(1, 9):
            conn.execute(
                "UPDATE orders SET total = total WHERE customer_id = %s AND status = %s", (customer * 1000, "cancelled")
            )
    kb = make_database(embedded_pg, "measure_kb_dml", ("vector",))
    report = audit(debian_shop, kb)
    q = find(report, "UPDATE orders")
    assert q["status"] == "recommended", q
    assert "customer_id" in q["recommendation"]["sql"]
    assert q["recommendation"]["measurement"]["before_ms"] is None, "DML must not be timed by running it"
    with psycopg.connect(debian_shop) as conn:
        after = conn.execute("SELECT count(*), sum(total) FROM orders").fetchone()
        updates = conn.execute("SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE 'UPDATE orders%'").fetchone()
    assert before == after
    assert updates == (8,), f"the UPDATE ran {updates} times: the audit must never execute it"


def test_staging_method_measures_on_the_staging_server(embedded_pg: ServerInfo) -> None:
    prod = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="measure_prod",
        progress=lambda m: None,
        reset_statements=False,
        **SCALE,
    )
    demo.run_workload(prod, demo.workload(SCALE["customers"], calls=6))
    staging = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="measure_staging",
        progress=lambda m: None,
        reset_statements=False,
        **SCALE,
    )
    kb = make_database(embedded_pg, "measure_kb_staging", ("vector",))
    with psycopg.connect(prod) as conn:
        locks_before = conn.execute("SELECT count(*) FROM pg_stat_user_indexes").fetchone()
    report = audit(prod, kb, measurement_staging_dsn=staging)
    q = find(report, "orders WHERE customer_id")
    assert q["status"] == "recommended", (q["status"], q.get("skip_reason"), q.get("rejected"))
    assert q["recommendation"]["measurement"]["method"] == "staging", q
    assert q["recommendation"]["measurement"]["before_ms"] > q["recommendation"]["measurement"]["after_ms"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_user_indexes").fetchone() == locks_before


def test_forced_hypothetical_without_hypopg_says_why_nothing_was_measured(embedded_pg: ServerInfo) -> None:
    prod = small_shop(embedded_pg, "measure_nohypo", orders=20000)
    kb = make_database(embedded_pg, "measure_kb_nohypo", ("vector",))
    report = audit(prod, kb, min_mean_ms="0.05", measurement_mode="hypothetical")
    q = find(report, "orders WHERE customer_id")
    assert q["status"] == "no_recommendation" and "hypopg is not available" in q["skip_reason"], q


def test_tables_over_the_size_limit_are_not_built_on_production(embedded_pg: ServerInfo) -> None:
    prod = small_shop(embedded_pg, "measure_big", orders=20000)
    kb = make_database(embedded_pg, "measure_kb_big", ("vector",))
    report = audit(prod, kb, min_mean_ms="0.05", measurement_max_table_bytes="100000")
    q = find(report, "orders WHERE customer_id")
    assert q["status"] == "no_recommendation", q
    assert "over measurement.max_table_bytes" in q["skip_reason"], q["skip_reason"]


def test_existing_index_is_never_recommended_again(embedded_pg: ServerInfo) -> None:
    prod = small_shop(embedded_pg, "measure_covered", orders=60000)
    # Created after the statistics were collected, as the notes warn: the catalog as it is now counts.
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("CREATE INDEX orders_by_customer ON orders (customer_id, created_at, status)")
    kb = make_database(embedded_pg, "measure_kb_covered", ("vector",))
    report = audit(prod, kb, min_mean_ms="0.05")
    q = find(report, "orders WHERE customer_id")
    assert q["status"] != "recommended", q
    assert "already covered by index public.orders_by_customer" in (q["skip_reason"] or ""), q
    # A measured candidate that is not worth applying is stored, but the exporter counts it as no recommendation.
    from pg_architect.exporter.target import Target
    from tests.exporter_helpers import Scrape, config

    not_worth = [x for x in report["slow_queries"] if x["recommendation"] and x["status"] != "recommended"]
    recommended = sum(1 for x in report["slow_queries"] if x["status"] == "recommended")
    assert not_worth, "expected a measured candidate that was not worth applying"
    target = Target("covered", prod, config(), kb_dsn=kb)
    s = Scrape(target.scrape())
    target.close()
    counted = sum(
        s.value("pgarch_audit_recommendations", action=a) or 0 for a in ("pr_merge", "pr_review", "log", "flag")
    )
    assert counted == recommended, (counted, recommended)
    assert (s.value("pgarch_knowledge_base_records") or 0) >= recommended + len(not_worth)


def test_audit_window_is_the_delta_since_a_stored_snapshot(embedded_pg: ServerInfo) -> None:
    prod = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="measure_window",
        progress=lambda m: None,
        reset_statements=False,
        customers=2000,
        orders=5000,
        jobs=1000,
    )
    shapes = demo.workload(2000, calls=5)
    demo.run_workload(prod, shapes)
    kb = KnowledgeBase.open(make_database(embedded_pg, "measure_kb_window", ("vector",)))
    conn = db.connect(prod, db.Role.AUDITOR, db.Timeouts())
    try:
        ident = window.identity(conn)
        target = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
        snap = window.read_snapshot(conn, ident)
        info = snap.info
        kb.store_snapshot(
            target,
            "daily",
            datetime.now(UTC),
            snap.rows,
            info.stats_reset if info else None,
            info.dealloc if info else None,
            snap.fingerprints,
        )
        demo.run_workload(prod, [s for s in shapes if "GROUP BY country" in s.sql])
        # A week later (a snapshot older than the last pg_stat_statements reset could not be a baseline).
        win = window.take(conn, kb, target, ident, now=datetime.now(UTC) + timedelta(days=7))
    finally:
        conn.close()
        kb.close()
    assert win.window.source == "snapshot-delta", win.window
    counted = {s.query: s.calls for s in win.statements}
    country = next(c for q, c in counted.items() if "GROUP BY country" in q)
    assert country == 5, f"the window must count only the calls after the snapshot: {counted}"
    assert not any("customer_id = $1 ORDER BY" in q for q in counted), "statements idle in the window are out"


def test_one_failing_candidate_does_not_spoil_the_others_and_parameterised_expressions_are_explained(
    debian_pg: ServerInfo, embedded_pg: ServerInfo
) -> None:
    dsn = make_database(debian_pg, "measure_events", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, account_id int NOT NULL, kind text NOT NULL,"
                     " occurred_at timestamp NOT NULL)")
        conn.execute("INSERT INTO events SELECT g, g % 5000, (ARRAY['a','b','c'])[1 + g % 3], "
                     "timestamp '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 200000) g")
        conn.execute("CREATE TABLE jobs AS SELECT g AS id, 0 AS attempts, 'ref-' || g AS external_ref "
                     "FROM generate_series(1, 200000) g")
        conn.execute("ANALYZE events")
        conn.execute("ANALYZE jobs")
        for n in range(6):
            # Placeholders inside arithmetic: only the server can tell their types.
            conn.execute("SELECT kind, count(*) FROM events WHERE occurred_at >= %s AND occurred_at < %s + "
                         "interval '2 hours' GROUP BY kind", (datetime(2026, 3, n + 1), datetime(2026, 3, n + 1)))
            conn.execute("UPDATE jobs SET attempts = attempts + %s WHERE external_ref = %s", (1, f"ref-{n * 99}"))
            conn.execute("SELECT count(*) FROM events WHERE date_trunc('day', occurred_at) = %s",
                         (f"2026-02-0{n + 1}",))
            conn.execute("SELECT id FROM events WHERE account_id = %s AND occurred_at >= now() - interval '30 days'",
                         (n * 7,))
    kb = make_database(embedded_pg, "measure_kb_events", ("vector",))
    report = audit(dsn, kb, min_mean_ms="0.5")
    trunc = find(report, "date_trunc")
    assert trunc["status"] == "no_recommendation", trunc
    assert "replaced a constant inside this expression" in trunc["skip_reason"], trunc["skip_reason"]
    for fragment, column in (("GROUP BY kind", "occurred_at"), ("UPDATE jobs", "external_ref")):
        q = find(report, fragment)
        assert q["status"] == "recommended", q
        assert column in q["recommendation"]["sql"], q["recommendation"]["sql"]
    ranged = find(report, "account_id")
    assert ranged["status"] == "recommended", ranged
    assert "account_id" in ranged["recommendation"]["sql"]


def test_parameters_are_measured_as_the_workload_uses_them(embedded_pg: ServerInfo) -> None:
    """A range the application uses wide (94 % of rows) gets no index; the same shape used narrowly does.

    Samples are matched to the rows pg_stat_statements recorded per call. (An aggregate's output rows do not
    follow its filter, so there this cannot tell; see the issue notes.)"""
    prod = small_shop(embedded_pg, "measure_representative", orders=150_000)
    with psycopg.connect(prod, autocommit=True) as conn:
        for _ in range(6):
            conn.execute("SELECT id, total FROM orders WHERE created_at >= %s",
                         (datetime.now(UTC) - timedelta(days=343),))
            conn.execute("SELECT id, total FROM orders WHERE created_at >= %s AND created_at < %s AND status = %s",
                         (datetime.now(UTC) - timedelta(days=3), datetime.now(UTC) - timedelta(days=2), "pending"))
    kb = make_database(embedded_pg, "measure_kb_representative", ("vector",))
    report = audit(prod, kb, min_mean_ms="0.05")
    wide = next(q for q in report["slow_queries"] if q["query"].rstrip().endswith("WHERE created_at >= $1"))
    assert wide["status"] != "recommended", wide["recommendation"]
    narrow = find(report, "status = $3")
    assert narrow["status"] == "recommended" and "created_at" in narrow["recommendation"]["sql"], narrow
