"""Every query of the Grafana dashboard, against two real PostgreSQL servers in one Prometheus, keeps them apart.

A real Prometheus (Debian package) with the shipped rules scrapes two real exporters every second, each watching
its own PostgreSQL server: the session's embedded server and a second embedded server started here. Both have a
database of the same name (the collision a fleet has), a workload between scrapes, and an audit already run
(``pg-architect audit``), so the auditor KPIs come from a real knowledge base on each. Server "slow" runs mostly
0.5 s statements, server "fast" a quick shop workload, so their p95s are far apart.

The expressions are the dashboard's own, with Grafana's variables filled in by tests/dashboard_exprs.py: once per
server (``$instance`` = that exporter, as a user picks it) and once with every server ("All"). A panel mixes
servers if a query scoped to one server returns another's series, or if "All" shows a server differently from
the query scoped to it (a sum across servers, a top-k taken over all of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_architect.core.embedded import EmbeddedPostgres
from tests.conftest import ServerInfo, make_database
from tests.dashboard_exprs import DashboardQuery, dashboard_queries, regex_value
from tests.stack import Prometheus, needs_prometheus, prometheus_config, start_exporter, start_prometheus, wait_for

DATABASE = "pgarch_dashboard_live"
QUERIES = dashboard_queries()
P95_PANEL = "panel 'Query latency p95 (SLA 2 s)' target A"
SLOW_STATEMENT_S = 0.5

# Queries that legitimately return nothing here, with the reason. Each still has to evaluate without error.
NO_DATA_EXPECTED = {
    "annotation 'Firing alerts'": "the servers are healthy and the shipped alerts wait minutes (`for`) before firing",
    "panel 'Disk usage and 7-day forecast' target C": "the forecast is shown after a day of history, as the "
    "PostgresDiskFillPredicted alert waits: a line fitted to minutes of data is noise",
}
# Variable queries list label values (job, instance, datname), not series of one server.
PER_SERVER = [q for q in QUERIES if q.kind != "variable"]

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


def _shop(dsn: str, pause: float, stop: threading.Event, errors: list[BaseException]) -> None:
    """The shop's traffic, a round every ``pause`` seconds, so every scrape window has statements and block reads."""
    rng = random.Random(42)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(pause):
                _shop_round(conn, rng)
    except BaseException as exc:  # reported by the fixture
        errors.append(exc)


def _slow(dsn: str, stop: threading.Event, errors: list[BaseException]) -> None:
    """Back-to-back statements of SLOW_STATEMENT_S: most of the slow server's statements, so its p95 is theirs."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(%s)", (SLOW_STATEMENT_S,))
    except BaseException as exc:
        errors.append(exc)


def _audit(dsn: str) -> None:
    """A real audit of the database: creates the knowledge base and one finished run."""
    args = ["audit", "--dsn", dsn, "--config", "/dev/null", "--min-calls", "1", "--min-mean-ms", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "pg_architect", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"audit exited {result.returncode}\n{result.stderr[-3000:]}"
    report: dict[str, object] = json.loads(result.stdout)
    assert report["status"] == "ok", report


def _prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        rng = random.Random(7)
        for _ in range(20):  # history for the audit to find
            _shop_round(conn, rng)
    _audit(dsn)


@dataclasses.dataclass
class Fleet:
    prometheus: Prometheus
    fast: str  # the exporters' instance labels
    slow: str

    @property
    def instances(self) -> tuple[str, str]:
        return (self.fast, self.slow)

    def query(self, where: str, instance: str | None) -> DashboardQuery:
        """The dashboard's query as Grafana sends it with only ``instance`` picked in $instance (None: "All")."""
        variables = {} if instance is None else {"instance": regex_value(instance)}
        return next(q for q in dashboard_queries(variables=variables) if q.where == where)

    def evaluate(self, where: str, instance: str | None, at: float) -> dict[str, Any]:
        return self.prometheus.query(self.query(where, instance).expr, at)


def _settled() -> float:
    """An evaluation time whose scrapes and rule evaluations (every second) are all stored, with room for a
    loaded machine: ten seconds ago. Two queries compared at it see the same data even if a scrape or a rule
    evaluation lands between them."""
    return time.time() - 10


def _missing_data(fleet: Fleet) -> list[str]:
    """(query, instance) pairs, not expected to be empty, that fail or return no series for that server."""
    out = []
    at = _settled()
    for query in PER_SERVER:
        if query.where in NO_DATA_EXPECTED:
            continue
        for instance in fleet.instances:
            body = fleet.evaluate(query.where, instance, at)
            if body.get("status") != "success" or not body["data"]["result"]:
                out.append(f"{query.where} @ {instance}")
    return out


@pytest.fixture(scope="module")
def fleet(embedded_pg: ServerInfo) -> Iterator[Fleet]:
    """Prometheus with the shipped rules scraping two exporters of two servers, each audited and under load."""
    tmp = Path(tempfile.mkdtemp(prefix="pgarch-dashboard-live-"))
    stop = threading.Event()
    errors: list[BaseException] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        second = EmbeddedPostgres(tmp / "second-pgdata")
        stack.callback(second.destroy)
        second.start()
        with psycopg.connect(second.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        slow_dsn = second.dsn(DATABASE)
        with psycopg.connect(slow_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        fast_dsn = make_database(embedded_pg, DATABASE)
        stack.callback(_drop_database, embedded_pg)
        _prepare(fast_dsn)
        _prepare(slow_dsn)

        (tmp / "fast").mkdir()
        (tmp / "slow").mkdir()
        fast = start_exporter(stack, fast_dsn, tmp / "fast")
        slow = start_exporter(stack, slow_dsn, tmp / "slow")
        labels = [{"env": "test", "cluster": "fast"}, {"env": "test", "cluster": "slow"}]
        config = prometheus_config([fast.address, slow.address], target_labels=labels)
        prom = start_prometheus(stack, config, tmp)

        workers = [
            threading.Thread(target=_shop, args=(fast_dsn, 0.2, stop, errors), daemon=True),
            threading.Thread(target=_shop, args=(slow_dsn, 1.0, stop, errors), daemon=True),
            *(threading.Thread(target=_slow, args=(slow_dsn, stop, errors), daemon=True) for _ in range(4)),
        ]
        for worker in workers:
            worker.start()
            stack.callback(worker.join, 10)
        stack.callback(stop.set)
        result = Fleet(prom, fast.address, slow.address)
        # Ready once every panel shows data for each server: a few scrapes for rate() and rule evaluations.
        wait_for(
            lambda: not errors and not _missing_data(result),
            120,
            "every dashboard query returning data for each server",
            lambda: (
                f"workload errors: {errors}\nstill empty: {_missing_data(result)}\n"
                f"{fast.process.log()}\n{slow.process.log()}\n{prom.process.log()}"
            ),
            interval=1,
        )
        yield result
        assert not errors, f"the workload failed: {errors}"


def _drop_database(server: ServerInfo) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def _series(body: dict[str, Any]) -> dict[str, float]:
    """Result series as {sorted labels: value}."""
    assert body.get("status") == "success", body
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in body["data"]["result"]}


def test_the_list_of_queries_without_data_names_real_queries() -> None:
    wheres = {q.where for q in QUERIES}
    assert set(NO_DATA_EXPECTED) <= wheres, f"unknown: {set(NO_DATA_EXPECTED) - wheres}; queries: {sorted(wheres)}"
    assert len([q for q in QUERIES if q.kind == "panel"]) >= 20, QUERIES
    assert P95_PANEL in wheres, sorted(wheres)


@needs_prometheus
@pytest.mark.slow
@pytest.mark.parametrize("query", PER_SERVER, ids=[q.id for q in PER_SERVER])
def test_query_scoped_to_one_server_shows_that_server_only(fleet: Fleet, query: DashboardQuery) -> None:
    at = _settled()
    for instance in fleet.instances:
        expr = fleet.query(query.where, instance).expr
        body = fleet.prometheus.query(expr, at)
        assert body.get("status") == "success", f"{query.where} @ {instance}\n{expr}\n{body}"
        result = body["data"]["result"]
        if query.where not in NO_DATA_EXPECTED:
            assert result, f"{query.where} returned no data for {instance}\n{expr}"
        others = [s["metric"] for s in result if s["metric"].get("instance") != instance]
        assert not others, f"{query.where} scoped to {instance} returned other series: {others}"
        # NaN is what histogram_quantile and ratios give for an idle database: Grafana would show "NaN".
        nan = [s["metric"] for s in result if math.isnan(float(s["value"][1]))]
        assert not nan, f"{query.where} returned NaN for {nan}"


@needs_prometheus
@pytest.mark.slow
@pytest.mark.parametrize("query", PER_SERVER, ids=[q.id for q in PER_SERVER])
def test_all_servers_show_each_server_as_it_shows_alone(fleet: Fleet, query: DashboardQuery) -> None:
    """With "All" picked, each server's series are exactly those of the query scoped to it: nothing summed,
    averaged or ranked across servers."""
    at = _settled()
    together = _series(fleet.evaluate(query.where, None, at))
    alone: dict[str, float] = {}
    for instance in fleet.instances:
        alone |= _series(fleet.evaluate(query.where, instance, at))
    assert together.keys() == alone.keys(), f"{query.where}: series differ\nAll: {together}\nalone: {alone}"
    differ = {k: (together[k], v) for k, v in alone.items() if together[k] != pytest.approx(v, nan_ok=True)}
    assert not differ, f"{query.where}: (All, alone) values differ: {differ}"


@needs_prometheus
@pytest.mark.slow
def test_instance_and_database_variables_offer_each_server_and_its_databases(fleet: Fleet) -> None:
    instances = {
        s["metric"]["instance"] for s in fleet.evaluate("variable $instance", None, _settled())["data"]["result"]
    }
    assert instances == set(fleet.instances), instances
    for instance in fleet.instances:
        result = fleet.evaluate("variable $datname", instance, _settled())["data"]["result"]
        databases = {s["metric"]["datname"] for s in result}
        assert DATABASE in databases, (instance, databases)


@needs_prometheus
@pytest.mark.slow
def test_p95_panel_is_each_servers_own_p95(fleet: Fleet) -> None:
    """The slow server's p95 is its 0.5 s statements (within the histogram bucket holding 0.5 s), the fast
    server's is far below: a p95 per server, not a sum or a blend of the two."""
    at = _settled()
    p95 = {
        instance: [float(s["value"][1]) for s in fleet.evaluate(P95_PANEL, instance, at)["data"]["result"]]
        for instance in fleet.instances
    }
    assert len(p95[fleet.slow]) == 1 and len(p95[fleet.fast]) == 1, p95  # one database each
    buckets = sorted(
        float(s["metric"]["le"])
        for s in fleet.prometheus.vector(f'pgarch_query_duration_seconds_bucket{{instance="{fleet.slow}"}}', at)
        if s["metric"]["le"] != "+Inf"
    )
    upper = min(b for b in buckets if b >= SLOW_STATEMENT_S)
    lower = max(b for b in buckets if b < SLOW_STATEMENT_S)
    assert lower <= p95[fleet.slow][0] <= upper, (p95, lower, upper)
    assert p95[fleet.fast][0] < lower, p95


@needs_prometheus
@pytest.mark.slow
def test_recorded_series_keep_each_targets_labels(fleet: Fleet) -> None:
    """The shipped recording rules keep the static labels of each scrape target (here env and cluster)."""
    series = fleet.prometheus.vector("datname:pgarch_query_duration_seconds:p95_5m")
    clusters = {(s["metric"]["instance"], s["metric"].get("env"), s["metric"].get("cluster")) for s in series}
    assert clusters == {(fleet.fast, "test", "fast"), (fleet.slow, "test", "slow")}, clusters


@needs_prometheus
@pytest.mark.slow
def test_auditor_kpi_panels_show_each_servers_audit(fleet: Fleet) -> None:
    """The KPIs are each server's own audit, not the zeros of a missing knowledge base."""
    for instance in fleet.instances:
        since = fleet.prometheus.vector(
            f'time() - (pgarch_audit_last_success_timestamp_seconds{{instance="{instance}"}} > 0)'
        )
        assert since and 0 <= float(since[0]["value"][1]) < 900, (instance, since)
        slow = fleet.prometheus.vector(f'pgarch_audit_slow_queries{{instance="{instance}"}}')
        assert slow and float(slow[0]["value"][1]) >= 1, (instance, slow)
