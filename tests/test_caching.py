"""Caching recommendations (issue 18, item 3) on the real embedded PostgreSQL: a hot statement over a table
nobody writes gets a cache recommendation with a TTL; the same over a write-heavy table does not."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import psycopg

from pg_architect.auditor import caching, health, window
from pg_architect.auditor import report as report_render
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.fingerprint import EMBEDDING_MODEL, embed
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import AuditReport, Kpis, SlowQuery
from pg_architect.auditor.parsing import parse_query
from pg_architect.auditor.window import identity
from pg_architect.core import db
from pg_architect.core.config import CachingConfig, load_config
from tests.conftest import ServerInfo, make_database

READ_MOSTLY = "SELECT region, count(*) FROM countries GROUP BY region"
WRITE_HEAVY = "SELECT state, count(*) FROM jobs GROUP BY state"


def _flush(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")  # the flush happens at the end of this transaction


def test_a_hot_statement_over_an_unwritten_table_gets_a_cache_recommendation_and_a_write_heavy_one_does_not(
    embedded_pg: ServerInfo,
) -> None:
    dsn = make_database(embedded_pg, "cache_shop")
    kb_dsn = make_database(embedded_pg, "cache_kb", ("vector",))
    cfg = load_config(env={})
    with psycopg.connect(dsn, autocommit=True) as app:
        app.execute(
            "CREATE TABLE countries AS SELECT g AS id, 'region ' || (g % 5) AS region FROM generate_series(1, 300) g"
        )
        app.execute("CREATE TABLE jobs AS SELECT g AS id, 'state ' || (g % 4) AS state FROM generate_series(1, 400) g")
        app.execute("ANALYZE countries; ANALYZE jobs")
        app.execute(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
        )
        for _ in range(20):  # before the window
            app.execute(READ_MOSTLY)
            app.execute(WRITE_HEAVY)
        _flush(app)
        conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            ident = identity(conn)
            target = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
            window.take(conn, kb, target, ident, kind="daily")  # the snapshots opening the window
            kb.record_health(target, health.health_metrics(conn))
            for i in range(150):  # jobs is rewritten all along, countries never
                app.execute(READ_MOSTLY)
                app.execute(WRITE_HEAVY)
                if i % 10 == 0:
                    app.execute("UPDATE jobs SET id = id WHERE id <= 100")
            _flush(app)
            # The audit two hours later (its clock moved, not the test's): 75 calls an hour each.
            win = window.take(conn, kb, target, ident, now=datetime.now(UTC) + timedelta(hours=2))
            catalog = Snapshot(conn)
            results = {}
            for s in window.select_slow(win.statements, min_calls=100, min_mean_ms=0, limit=20):
                base = SlowQuery(
                    str(s.queryids[0]), s.query, s.calls, s.mean_ms, s.total_ms, "no_recommendation", s.fingerprint
                )
                results[s.query] = caching.recommend(cfg, catalog, kb, base, s, win, target)
            # Stored like any recommendation: the knowledge base takes a cache recommendation as it is.
            run_id, started = kb.start_run(target, "manual", True)
            report = AuditReport(
                run_id=run_id,
                started_at=started,
                finished_at=win.window.end,
                status="ok",
                window=win.window,
                slow_queries=tuple(results.values()),
                kpis=Kpis.of(list(results.values())),
            )
            vectors = {q.fingerprint: embed(parse_query(q.query)) for q in results.values()}
            kb.finish_run(report, target, vectors, EMBEDDING_MODEL)
            stored = kb.run_report(run_id)
        finally:
            conn.close()
            kb.close()
    assert stored is not None
    (stored_hot,) = [q for q in stored["slow_queries"] if q["query"] == READ_MOSTLY]
    assert stored_hot["recommendation"]["type"] == "cache", stored_hot
    hot, busy = results[READ_MOSTLY], results[WRITE_HEAVY]
    assert hot.status == "recommended" and hot.recommendation is not None, (hot.status, hot.skip_reason)
    rec = hot.recommendation
    assert rec.type == "cache" and rec.measurement is None and rec.action in ("log", "flag"), rec
    assert rec.sql == f"-- cache the result of statement {hot.queryid} for 3600 s (TTL), keyed by its parameters"
    assert "runs 75 times an hour (150 calls in 2.0 h)" in rec.reasoning, rec.reasoning
    assert "public.countries: 0.0 rows written per hour (since the health snapshot of" in rec.reasoning
    assert "about 74 calls an hour would not reach the database" in rec.reasoning, rec.reasoning
    assert busy.recommendation is None or busy.recommendation.type != "cache", busy.recommendation
    text = report_render.render(report, "text")
    assert "cache: confidence 0.65 -> log, not measured" in text, text


FACTS = caching.StatementFacts(
    queryid="7",
    calls=7200,
    mean_ms=40.0,
    window_hours=24.0,
    rows_per_call=12.0,
    rows_per_call_before=12.0,
    tables=("public.plans",),
    parameters=1,
)


def test_the_ttl_is_half_the_time_between_writes_and_unstable_rows_or_unknown_rates_propose_nothing() -> None:
    cfg = CachingConfig()
    rec = caching.propose(FACTS, {"public.plans": caching.TableWrites("public.plans", 2.0, "test")}, cfg)
    assert rec is not None and "for 900 s" in rec.sql, rec  # 2 writes an hour: 30 min apart, halved
    assert "about 296 calls an hour per distinct parameter set" in rec.reasoning, rec.reasoning
    moving = dataclasses.replace(FACTS, rows_per_call=20.0)
    assert caching.propose(moving, {"public.plans": caching.TableWrites("public.plans", 0.0, "test")}, cfg) is None
    assert caching.propose(FACTS, {}, cfg) is None
    busy = {"public.plans": caching.TableWrites("public.plans", 100.0, "test")}  # 100 writes against 300 calls
    assert caching.propose(FACTS, busy, cfg) is None
    rare = dataclasses.replace(FACTS, calls=24)  # once an hour
    assert caching.propose(rare, {"public.plans": caching.TableWrites("public.plans", 0.0, "test")}, cfg) is None
