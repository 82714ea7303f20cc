"""Every query of the Grafana dashboard evaluates and shows data against the real thing.

A real Prometheus (Debian package) with the shipped rules scrapes the real exporter every second; the exporter
watches a real PostgreSQL database that runs a small shop workload between scrapes, and that a real audit
(``pg-architect audit``) has already examined, so the knowledge base the auditor KPIs come from exists. The
expressions are the dashboard's own, with Grafana's variables filled in by tests/dashboard_exprs.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ServerInfo, make_database
from tests.dashboard_exprs import DashboardQuery, dashboard_queries
from tests.stack import Prometheus, needs_prometheus, prometheus_config, start_exporter, start_prometheus, wait_for

DATABASE = "pgarch_dashboard_live"
QUERIES = dashboard_queries()

# Queries that legitimately return nothing here, with the reason. Each still has to evaluate without error.
NO_DATA_EXPECTED = {
    "annotation 'Firing alerts'": "the server is healthy and the shipped alerts wait minutes (`for`) before firing",
    "panel 'Disk usage and 7-day forecast' target C": "the forecast is shown after a day of history, as the "
    "PostgresDiskFillPredicted alert waits: a line fitted to minutes of data is noise",
}

SCHEMA = [
    "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL)",
    """CREATE TABLE orders (
        id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
        total numeric(10, 2) NOT NULL, created_at timestamptz NOT NULL)""",
    "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g",
    """INSERT INTO orders
       SELECT g, 1 + g % 5000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], (g % 1000) / 10.0,
              now() - make_interval(mins => g)
       FROM generate_series(1, 200000) g""",
    "ANALYZE",
]


def _shop_round(conn: psycopg.Connection, rng: random.Random) -> None:
    """One round of the shop's statements: point lookups, a scan on an unindexed column, an aggregate, a write."""
    customer = rng.randint(1, 5000)
    conn.execute("SELECT name FROM customers WHERE id = %s", (customer,)).fetchall()
    conn.execute("SELECT id, total FROM orders WHERE customer_id = %s", (customer,)).fetchall()
    conn.execute(
        "SELECT status, count(*), sum(total) FROM orders WHERE created_at > now() - interval '1 day' GROUP BY status"
    ).fetchall()
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (rng.randint(1, 200000),))


def _workload(dsn: str, stop: threading.Event, errors: list[BaseException]) -> None:
    """The shop's traffic, a few rounds per second, so every scrape window has statements and block reads."""
    rng = random.Random(42)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(0.2):
                _shop_round(conn, rng)
    except BaseException as exc:  # reported by the fixture
        errors.append(exc)


def _audit(dsn: str) -> dict[str, object]:
    """A real audit of the database: creates the knowledge base and one finished run."""
    args = ["audit", "--dsn", dsn, "--config", "/dev/null", "--min-calls", "1", "--min-mean-ms", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "pg_architect", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"audit exited {result.returncode}\n{result.stderr[-3000:]}"
    report: dict[str, object] = json.loads(result.stdout)
    assert report["status"] == "ok", report
    return report


def _empty(prometheus: Prometheus, queries: list[DashboardQuery]) -> list[str]:
    """The queries (not expected to be empty) that fail or return no series right now."""
    out = []
    for query in queries:
        body = prometheus.query(query.expr)
        if body.get("status") != "success" or not body["data"]["result"]:
            out.append(query.where)
    return out


def _drop_database(server: ServerInfo) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="module")
def prometheus(embedded_pg: ServerInfo) -> Iterator[Prometheus]:
    """Prometheus with the shipped rules scraping the exporter over an audited database under a workload."""
    dsn = make_database(embedded_pg, DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        rng = random.Random(7)
        for _ in range(20):  # history for the audit to find
            _shop_round(conn, rng)
    _audit(dsn)

    tmp = Path(tempfile.mkdtemp(prefix="pgarch-dashboard-live-"))
    stop = threading.Event()
    errors: list[BaseException] = []
    worker = threading.Thread(target=_workload, args=(dsn, stop, errors), daemon=True)
    with contextlib.ExitStack() as stack:
        stack.callback(_drop_database, embedded_pg)
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        exporter = start_exporter(stack, dsn, tmp)
        prom = start_prometheus(stack, prometheus_config(exporter.address), tmp)
        worker.start()
        stack.callback(worker.join, 10)
        stack.callback(stop.set)
        # Ready once every panel shows data: a few scrapes for rate() and a rule evaluation for the forecast.
        waiting = [q for q in QUERIES if q.where not in NO_DATA_EXPECTED]
        wait_for(
            lambda: not errors and not _empty(prom, waiting),
            60,
            "every dashboard query returning data",
            lambda: (
                f"workload errors: {errors}\nstill empty: {_empty(prom, waiting)}\n"
                f"{exporter.process.log()}\n{prom.process.log()}"
            ),
            interval=1,
        )
        yield prom
        assert not errors, f"the workload failed: {errors}"


def test_the_list_of_queries_without_data_names_real_queries() -> None:
    wheres = {q.where for q in QUERIES}
    assert set(NO_DATA_EXPECTED) <= wheres, f"unknown: {set(NO_DATA_EXPECTED) - wheres}; queries: {sorted(wheres)}"
    assert len([q for q in QUERIES if q.kind == "panel"]) >= 20, QUERIES


@needs_prometheus
@pytest.mark.slow
@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_dashboard_query_returns_data_from_the_real_exporter(prometheus: Prometheus, query: DashboardQuery) -> None:
    body = prometheus.query(query.expr)
    assert body.get("status") == "success", f"{query.where}\n{query.expr}\n-> {body}"
    if query.where in NO_DATA_EXPECTED:
        return
    result = body["data"]["result"]
    assert result, f"{query.where} returned no data\n{query.expr}"
    # NaN is what histogram_quantile and ratios give for an idle database: Grafana would show "NaN".
    nan = [series["metric"] for series in result if math.isnan(float(series["value"][1]))]
    assert not nan, f"{query.where} returned NaN for {nan}\n{query.expr}"


@needs_prometheus
@pytest.mark.slow
def test_auditor_kpi_panels_show_the_audit_that_ran(prometheus: Prometheus) -> None:
    """The KPIs are the audit's, not the zeros of a missing knowledge base."""
    since = prometheus.vector("time() - max(pgarch_audit_last_success_timestamp_seconds > 0)")
    assert since and 0 <= float(since[0]["value"][1]) < 600, since
    slow = prometheus.vector("max(pgarch_audit_slow_queries)")
    assert slow and float(slow[0]["value"][1]) >= 1, slow
