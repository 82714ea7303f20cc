"""Partitioning from the growth forecasts (issue 18, item 2), on the real embedded PostgreSQL: a growing table
whose slow statements filter on a time range gets a measured plan, the scratch schema is dropped, and the
audited database is left as it was."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pg_architect.auditor import partitioning
from pg_architect.auditor import report as report_render
from pg_architect.auditor.audit import AuditOptions, Auditor
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.delivery import html as delivery_html
from pg_architect.auditor.delivery import slack, weekly
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import SlowQuery
from pg_architect.auditor.parsing import TableRef
from pg_architect.auditor.window import identity
from pg_architect.core import db
from pg_architect.core.config import Config, load_config
from pg_architect.core.errors import ConfigError
from tests.conftest import ServerInfo, make_database
from tests.test_audit import fingerprint_of_database

RANGE = "SELECT count(*), sum(kind) FROM events WHERE created_at >= %s AND created_at < %s"


@pytest.fixture(scope="module")
def growing(embedded_pg: ServerInfo) -> Iterator[str]:
    """Two years of events, 100,000 rows, and a slow monthly range statement run a few times."""
    dsn = make_database(embedded_pg, "part_growing")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_at timestamptz NOT NULL,"
            " kind int NOT NULL, payload text NOT NULL)"
        )
        conn.execute(
            "INSERT INTO events (created_at, kind, payload) SELECT timestamptz '2024-01-01 00:00+00' + "
            "(g * interval '630 seconds'), g % 7, repeat(md5(g::text), 3) FROM generate_series(1, 100000) g"
        )
        conn.execute("ANALYZE events")
        conn.execute(  # this database's entries only: other tests' statements and the reset time stay
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
        )
        for month in range(1, 6):
            start = datetime(2025, month, 1, tzinfo=UTC)
            conn.execute(RANGE, (start, start + timedelta(days=30)))
    yield dsn


def _config(**env: str) -> Config:
    base = {
        "PG_ARCHITECT_AUDITOR_PARTITIONING_MIN_PROJECTED_BYTES": str(64 * 1024 * 1024),
        "PG_ARCHITECT_AUDITOR_PARTITIONING_SAMPLE_ROWS": "40000",
        "PG_ARCHITECT_AUDITOR_THRESHOLDS_MIN_CALLS": "3",
        "PG_ARCHITECT_AUDITOR_THRESHOLDS_MIN_MEAN_MS": "0",
    }
    return load_config(env=base | env)


def _audit(cfg: Config, dsn: str, kb_dsn: str, days_of_growth: int, staging_dsn: str | None) -> dict[str, Any]:
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    staging = db.connect(staging_dsn, db.Role.STAGING, db.policy(cfg, db.Role.STAGING)) if staging_dsn else None
    kb = KnowledgeBase.open(kb_dsn, cfg)
    try:
        ident = identity(conn)
        target = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
        size = db.fetch_value(conn, "SELECT pg_total_relation_size('public.events')")
        now = datetime.now(UTC)
        for day in range(days_of_growth, 0, -1):  # the daily snapshots: 1 MB a day of growth up to today
            metrics = {"tables": [{"table": "public.events", "size_bytes": size - day * 1024 * 1024, "rows": 0}]}
            db.execute(
                kb.conn,
                "INSERT INTO pgarch.health_snapshots (target_id, taken_at, metrics) VALUES (%s, %s, %s)",
                (target, now - timedelta(days=day), json.dumps(metrics)),
            )
        options = AuditOptions.from_config(cfg, dry_run=True)
        report = Auditor(cfg, conn, kb, options, staging=staging).run()
    finally:
        for c in (conn, staging, kb.conn):
            if c is not None:
                c.close()
    doc = report.as_json()
    doc["_markdown"] = report_render.render(report, "markdown")
    doc["_text"] = report_render.render(report, "text")
    return doc


def _staging_copy(server: ServerInfo, source: str, name: str) -> str:
    """A staging database as users have one: a copy of the audited database."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{psycopg.conninfo.conninfo_to_dict(source)["dbname"]}"')
    return server.dsn(name)


def _scratch_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgarch_scratch%'")]


def test_a_growing_table_filtered_on_a_time_range_gets_a_measured_monthly_partition_plan(
    growing: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "part_kb", ("vector",))
    staging = _staging_copy(embedded_pg, growing, "part_staging")
    before = fingerprint_of_database(growing)
    doc = _audit(_config(), growing, kb, days_of_growth=6, staging_dsn=staging)
    assert fingerprint_of_database(growing) == before, "the audited database changed"
    assert _scratch_schemas(staging) == [], "the scratch schema was left on the staging server"
    (forecast,) = [f for f in doc["forecasts"] if f["table"] == "public.events"]
    rec, plan = forecast["recommendation"], forecast["partition"]
    assert rec is not None, f"no partition recommendation: {forecast['note']} / {doc['notes']} / " + str(
        [(q["query"][:80], q["status"], q["skip_reason"]) for q in doc["slow_queries"]]
    )
    assert (rec["type"], plan["key"], plan["interval"]) == ("partition", "created_at", "1 month"), (rec, plan)
    m = rec["measurement"]
    assert m["method"] == "partitioned_copy" and m["before_cost"] > m["after_cost"] > 0, m
    assert m["before_ms"] > 0 and m["after_ms"] > 0, m  # timed too, shown beside the planner's estimate
    assert m["gain_percent"] > 20 and m["worth_applying"], m
    assert plan["where_measured"] == "staging server"
    assert 1 <= plan["partitions_scanned"] < plan["partitions_measured"] / 2, plan
    assert rec["confidence"] < 0.8 and rec["action"] in ("log", "flag"), rec
    sql = rec["sql"]
    assert 'PARTITION BY RANGE ("created_at")' in sql, sql
    assert """FOR VALUES FROM ('2024-01-01 00:00:00+00:00') TO ('2024-02-01 00:00:00+00:00')""" in sql, sql
    assert 'INSERT INTO "public"."events_partitioned" SELECT * FROM "public"."events" WHERE "created_at" >=' in sql
    assert 'ALTER TABLE "public"."events_partitioned" RENAME TO "events";' in sql
    assert 'DROP TABLE IF EXISTS "public"."events_partitioned";' in rec["rollback_sql"]
    assert 'ALTER TABLE "public"."events_unpartitioned" RENAME TO "events";' in rec["rollback_sql"]
    assert "partition created_at, 1 month" in doc["_markdown"], doc["_markdown"]
    assert "partition created_at, 1 month" in doc["_text"]
    # The weekly report's renderers (markdown, Slack, HTML) show it with the other advisory recommendations.
    run = {k: v for k, v in doc.items() if not k.startswith("_")}
    line = "Partition public.events by range of created_at, 1 month per partition (measured on a copy (staging server)"
    weekly_report = weekly.WeeklyReport(
        generated_at=datetime.now(UTC),
        run=run,
        deliveries=(),
        pending=(),
        applied=(),
        trends=weekly.Trends((), (), (), (), (), (), ()),
        report_url="http://127.0.0.1:3001/admin/database/report",
    )
    assert line in weekly.markdown(weekly_report)
    assert line in json.dumps(slack.blocks(weekly_report))
    assert html.escape(line) in delivery_html.run_page(run) and html.escape(line) in delivery_html.weekly_page(
        weekly_report
    )


def test_without_daily_snapshots_the_report_says_so_and_invents_no_forecast(
    growing: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "part_kb_first_run", ("vector",))
    doc = _audit(_config(), growing, kb, days_of_growth=0, staging_dsn=None)
    assert doc["forecasts"] == []
    assert any("no growth forecast: the knowledge base holds 0 daily health snapshot(s)" in n for n in doc["notes"])


def test_without_staging_the_copy_is_measured_on_an_embedded_server_never_on_the_audited_one(
    growing: str, embedded_pg: ServerInfo
) -> None:
    kb = make_database(embedded_pg, "part_kb_embedded", ("vector",))
    before = fingerprint_of_database(growing)
    doc = _audit(_config(), growing, kb, days_of_growth=3, staging_dsn=None)
    assert fingerprint_of_database(growing) == before
    assert _scratch_schemas(growing) == []
    (forecast,) = [f for f in doc["forecasts"] if f["table"] == "public.events"]
    assert forecast["partition"]["where_measured"] == "embedded server", forecast
    assert forecast["recommendation"]["measurement"]["gain_percent"] > 20


def test_partitioning_and_caching_keys_are_validated_and_every_bad_one_is_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            env={
                "PG_ARCHITECT_AUDITOR_PARTITIONING_HORIZON_DAYS": "0",
                "PG_ARCHITECT_AUDITOR_PARTITIONING_SAMPLE_ROWS": "-5",
                "PG_ARCHITECT_AUDITOR_CACHING_MAX_WRITE_SHARE": "1.5",
            }
        )
    message = str(caught.value)
    assert "auditor.partitioning.horizon_days: must be between 1 and 365 days, got 0" in message, message
    assert "auditor.partitioning.sample_rows: must be > 0" in message, message
    assert "auditor.caching.max_write_share: must be between 0 and 1, got 1.5" in message, message
    defaults = load_config(env={}).auditor
    assert (defaults.partitioning.min_projected_bytes, defaults.partitioning.horizon_days) == (64 * 1024**3, 90)
    assert (defaults.caching.min_calls_per_hour, defaults.caching.max_ttl_s) == (60.0, 3600)


def test_an_integer_key_gets_a_round_step_and_its_partitions_reach_the_projected_ids(growing: str) -> None:
    cfg = _config()
    conn = db.connect(growing, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    try:
        catalog = Snapshot(conn)
        table = catalog.tables([TableRef("public", "events")])[("public", "events")]
        by_id = SlowQuery("9", "SELECT kind FROM events WHERE id BETWEEN $1 AND $2", 50, 30.0, 1500.0, "recommended")
        by_time = SlowQuery("8", "SELECT kind FROM events WHERE created_at > $1", 5, 30.0, 150.0, "recommended")
        filters = partitioning.range_filters(catalog, table, [by_id, by_time])
        assert {(r.column, r.statement.queryid) for r in filters} == {("id", "9"), ("created_at", "8")}
        key = partitioning.choose_key(catalog, table, filters, horizon_days=90, growth_ratio=2.0)
        assert key is not None and (key.column, key.interval, key.step) == ("id", "10000", 10000), key
        bounds = partitioning.partition_bounds(key)
        assert bounds[0] == (0, 10000) and bounds[-1][1] > 2 * 99_000, bounds  # the ids doubled by the horizon
        sql, rollback = partitioning.migration(conn, table, key, catalog.indexes([table.oid]), 90000)
    finally:
        conn.close()
    assert '"public"."events_p0" PARTITION OF "public"."events_partitioned" FOR VALUES FROM (0) TO (10000);' in sql
    assert 'WHERE "id" >= 80000 AND "id" < 90000;' in sql and 'WHERE "id" >= 90000;' in sql, sql
    assert 'DELETE FROM "public"."events_unpartitioned" WHERE "id" >= 90000;' in rollback, rollback
