"""The weekly audit against real PostgreSQL: recommendations that are measured, decoys left alone, the
audited database untouched, one audit at a time, interrupted runs marked failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from pg_architect import demo
from tests.conftest import ServerInfo, make_database

SCALE = {"customers": 40_000, "orders": 200_000, "jobs": 60_000}
MISSING_INDEX = {
    "orders WHERE customer_id": "customer_id",
    "lower(email)": "lower(email)",
    "jobs WHERE finished_at IS NULL": "finished_at IS NULL",
    "created_at >= now()": "created_at",
}
DECOYS = ("GROUP BY country", "GROUP BY status")
# Only a rewrite helps these: date() hides the indexed created_at (auditor.rewrites).
REWRITES = {"date(created_at)": "sargable_predicate"}


def fingerprint_of_database(dsn: str) -> dict[str, Any]:
    """Everything an audit must leave as it found: data, sequences, indexes, extensions."""
    with psycopg.connect(dsn) as conn:
        tables = {}
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1"
        ).fetchall():
            row = conn.execute(
                f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM \"{name}\" t"
            ).fetchone()
            tables[name] = row
        return {
            "tables": tables,
            "indexes": conn.execute(
                "SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname NOT IN"
                " ('pg_catalog', 'pgarch') ORDER BY 1, 2"
            ).fetchall(),
            "sequences": conn.execute(
                "SELECT schemaname, sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = 'public' ORDER BY 1, 2"
            ).fetchall(),
            "extensions": conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall(),
        }


@pytest.fixture(scope="module")
def shop(embedded_pg: ServerInfo) -> Iterator[str]:
    """A shop database whose slow statements have run (and a workload that keeps them in pgss)."""
    dsn = demo.load(
        embedded_pg.dsn(), embedded_pg.dsn, name="audit_shop", progress=lambda m: None, reset_statements=False, **SCALE
    )
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))
    yield dsn


BLOCKING_BUILDS = {"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true"}


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def audit_json(dsn: str, kb_dsn: str, *extra: str) -> dict[str, Any]:
    env_kb = ["--config", "/dev/null"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_architect",
            "audit",
            "--dsn",
            dsn,
            "--format",
            "json",
            "--min-calls",
            "4",
            "--min-mean-ms",
            "1",
            *env_kb,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # The test owns this database and the embedded server has no hypopg: real builds, opted in.
        env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn, **BLOCKING_BUILDS},
    )
    assert proc.returncode == 0, f"audit failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def find(report: dict[str, Any], fragment: str) -> dict[str, Any]:
    for q in report["slow_queries"]:
        if fragment in q["query"]:
            return q
    raise AssertionError(
        f"no slow statement containing {fragment!r} in {[q['query'][:60] for q in report['slow_queries']]}"
    )


def test_audit_recommends_measured_indexes_only_where_they_help_and_changes_nothing(
    shop: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "audit_kb_main", ("vector",))
    before = fingerprint_of_database(shop)
    report = audit_json(shop, kb)
    after = fingerprint_of_database(shop)
    assert before == after, "the audited database changed"
    assert report["status"] == "ok" and report["window"]["source"] == "cumulative"
    for fragment, key in MISSING_INDEX.items():
        q = find(report, fragment)
        rec = q["recommendation"]
        assert q["status"] == "recommended", f"{fragment}: {q['status']} ({q['skip_reason']})"
        assert key in rec["sql"].replace('"', ""), f"{fragment}: expected an index on {key}, got {rec['sql']}"
        m = rec["measurement"]
        assert m["method"] == "rollback_build" and m["before_ms"] > m["after_ms"] > 0, m
        assert m["gain_percent"] > 50 and m["worth_applying"], m
        assert rec["rollback_sql"].startswith("DROP INDEX CONCURRENTLY")
        assert rec["action"] in ("pr_merge", "pr_review") and rec["confidence"] >= 0.8, rec
    for fragment, rule in REWRITES.items():
        q = find(report, fragment)
        rec = q["recommendation"]
        assert q["status"] == "recommended" and rec["type"] == "rewrite", f"{fragment}: {q['status']} {rec}"
        assert rec["equivalence"]["rule"] == rule and rec["equivalence"]["verified"], rec
        assert rec["measurement"]["method"] == "equivalence" and rec["rollback_sql"] is None, rec
    for fragment in DECOYS:
        q = find(report, fragment)
        assert q["status"] != "recommended", f"decoy {fragment} got {q['recommendation']}"
        assert q["skip_reason"], "a decoy must say why nothing is recommended"
    k = report["kpis"]
    recommended = len(MISSING_INDEX) + len(REWRITES)
    assert k["recommended"] == recommended and k["slow_queries"] >= recommended + len(DECOYS)
    with psycopg.connect(kb) as conn:
        stored = conn.execute(
            "SELECT count(*) FILTER (WHERE worth_applying), count(*) FROM pgarch.recommendations"
        ).fetchone()
        run = conn.execute("SELECT status, recommended FROM pgarch.audit_runs").fetchall()
    assert stored is not None and stored[0] == recommended, stored
    assert run == [("ok", recommended)]


def test_recommended_index_really_speeds_up_the_statement(shop: str, embedded_pg: ServerInfo) -> None:
    """Apply the recommendation on a copy and time it: the measured gain is real, not a planner guess."""
    kb = make_database(embedded_pg, "audit_kb_apply", ("vector",))
    report = audit_json(shop, kb)
    rec = find(report, "orders WHERE customer_id")["recommendation"]
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS audit_shop_copy WITH (FORCE)")
        admin.execute("CREATE DATABASE audit_shop_copy TEMPLATE audit_shop")
    copy = embedded_pg.dsn("audit_shop_copy")
    with psycopg.connect(copy, autocommit=True) as conn:

        def timed() -> float:
            best = float("inf")
            for customer in (11, 222, 3333):
                started = time.perf_counter()
                conn.execute(
                    "SELECT id, status, total, created_at FROM orders WHERE customer_id = %s "
                    "ORDER BY created_at DESC LIMIT 20",
                    (customer,),
                ).fetchall()
                best = min(best, time.perf_counter() - started)
            return best

        slow = timed()
        conn.execute(rec["sql"])
        fast = timed()
        conn.execute(rec["rollback_sql"])
    assert fast < slow * 0.5, f"applied index: {slow * 1000:.2f} ms -> {fast * 1000:.2f} ms"


def test_similar_pending_recommendation_is_skipped_and_applied_one_reports_regression(
    shop: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "audit_kb_similar", ("vector",))
    first = audit_json(shop, kb)
    assert first["kpis"]["recommended"] == len(MISSING_INDEX) + len(REWRITES)
    second = audit_json(shop, kb)
    assert second["window"]["source"] in ("cumulative", "snapshot-delta")
    q = find(second, "orders WHERE customer_id")
    assert q["status"] == "skipped" and "pending review" in q["skip_reason"], q
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute("UPDATE pgarch.recommendations SET status = 'applied' WHERE sql LIKE '%customer_id%'")
        conn.execute("UPDATE pgarch.recommendations SET status = 'rejected' WHERE sql LIKE '%lower(email)%'")
    third = audit_json(shop, kb)
    regressed = find(third, "orders WHERE customer_id")
    assert regressed["regression_of"] is not None and regressed["status"] == "recommended", regressed
    assert "Regression" in regressed["recommendation"]["reasoning"]
    rejected = find(third, "lower(email)")
    assert rejected["status"] == "skipped" and "rejected" in rejected["skip_reason"], rejected


def audit_lock_of(kb_dsn: str, audited_dsn: str) -> int:
    """The advisory lock key an audit of ``audited_dsn`` takes in the knowledge base (one per target)."""
    from pg_architect.auditor import window
    from pg_architect.auditor.kb import KnowledgeBase, audit_lock_key
    from pg_architect.core import db

    kb = KnowledgeBase.open(kb_dsn)
    conn = db.connect(audited_dsn, db.Role.AUDITOR, db.Timeouts())
    try:
        ident = window.identity(conn)
        return audit_lock_key(kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num))
    finally:
        conn.close()
        kb.close()


def test_second_audit_is_refused_while_one_runs(shop: str, embedded_pg: ServerInfo) -> None:
    kb = make_database(embedded_pg, "audit_kb_lock", ("vector",))
    from pg_architect.auditor.kb import KnowledgeBase

    key = audit_lock_of(kb, shop)
    holder = KnowledgeBase.open(kb)
    try:
        with psycopg.connect(kb, autocommit=True) as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
            proc = subprocess.run(
                [sys.executable, "-m", "pg_architect", "audit", "--dsn", shop, "--config", "/dev/null"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb},
            )
    finally:
        holder.close()
    assert proc.returncode == 1 and "another audit of this database is running" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_audit_leaves_a_failed_run_and_no_half_written_rows(
    shop: str, embedded_pg: ServerInfo, sig: signal.Signals
) -> None:
    kb = make_database(embedded_pg, f"audit_kb_kill_{sig.name.lower()}", ("vector",))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pg_architect",
            "audit",
            "--dsn",
            shop,
            "--config",
            "/dev/null",
            "--min-calls",
            "4",
            "--min-mean-ms",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # kill it in the middle of measuring
        if line.startswith("[1/"):
            break
    proc.send_signal(sig)
    proc.wait(timeout=60)
    with psycopg.connect(kb) as conn:
        runs = conn.execute("SELECT status, error FROM pgarch.audit_runs").fetchall()
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM pgarch.slow_queries), (SELECT count(*) FROM pgarch.recommendations)"
        ).fetchone()
    assert rows == (0, 0), f"half-written rows: {rows}"
    if sig == signal.SIGTERM:
        assert runs and runs[0][0] == "failed", runs
    else:
        assert runs and runs[0][0] == "running", runs  # nobody could mark it: the next audit will
        audit_json(shop, kb)
        with psycopg.connect(kb) as conn:
            statuses = conn.execute("SELECT status, error FROM pgarch.audit_runs ORDER BY started_at").fetchall()
        assert statuses[0][0] == "failed" and "interrupted" in statuses[0][1], statuses
        assert statuses[1][0] == "ok"


def test_exporter_kpis_match_the_last_audit_with_the_knowledge_base_elsewhere(
    shop: str, embedded_pg: ServerInfo
) -> None:
    from pg_architect.exporter.target import Target
    from tests.exporter_helpers import Scrape, config

    kb = make_database(embedded_pg, "audit_kb_kpis", ("vector",))
    target = Target("kpis", shop, config(), kb_dsn=kb)
    empty = Scrape(target.scrape())
    assert empty.value("pgarch_audit_last_run_timestamp_seconds") == 0
    assert empty.value("pgarch_scrape_collector_success", collector="knowledge_base") == 1
    report = audit_json(shop, kb)
    s = Scrape(target.scrape())
    target.close()
    k = report["kpis"]
    stored = [q["recommendation"] for q in report["slow_queries"] if q["recommendation"]]
    recs = [q["recommendation"] for q in report["slow_queries"] if q["status"] == "recommended"]
    by_action = {a: sum(1 for r in recs if r["action"] == a) for a in ("pr_merge", "pr_review", "log", "flag")}
    assert s.value("pgarch_audit_slow_queries") == k["slow_queries"]
    for action, count in by_action.items():
        assert s.value("pgarch_audit_recommendations", action=action) == count, (action, by_action)
    assert s.value("pgarch_audit_confidence_avg_ratio") == pytest.approx(k["avg_confidence"], abs=1e-3)
    assert s.value("pgarch_audit_gain_avg_ratio") == pytest.approx(k["avg_gain_percent"] / 100, abs=1e-3)
    assert s.value("pgarch_knowledge_base_records") == len(stored)
    assert s.value("pgarch_audit_stuck") == 0
    finished = datetime.fromisoformat(report["finished_at"]).timestamp()
    assert s.value("pgarch_audit_last_success_timestamp_seconds") == pytest.approx(finished, abs=0.01)
    assert 0 < (s.value("pgarch_audit_duration_seconds") or 0) < 300
