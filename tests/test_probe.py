"""``/probe?target=NAME``: fifty databases behind one exporter, one of them stopped and one hung behind a lock."""

from __future__ import annotations

import http.client
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg_architect.core.config import TargetConfig
from pg_architect.core.embedded import EmbeddedPostgres, free_port
from pg_architect.exporter.fleet import Fleet, server_key
from pg_architect.exporter.server import ExporterServer
from pg_architect.exporter.target import APPLICATION_NAME
from tests.exporter_helpers import Scrape, config
from tests.stack import PROMETHEUS, _start_listening, start_prometheus, wait_for

HEALTHY = 48
BUDGET_S = 120.0  # generous: a healthy probe proves it answered in time by pg_up 1, not by a stopwatch


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's tmp_path: pytest narrows its base directory's permissions when later tests create
    # their own, and the server runs as another user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="pgarch-probe-"))
    pg = EmbeddedPostgres(root / "pg", port=free_port())
    pg.start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            for i in range(HEALTHY + 1):  # db0..db47 healthy, db48 the one to hang
                conn.execute(f"CREATE DATABASE db{i}")
        with psycopg.connect(pg.dsn("db0"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield pg
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)


def fleet_config(pg: EmbeddedPostgres, **env: str) -> tuple[list[TargetConfig], dict[str, str]]:
    targets = [TargetConfig(name=f"db{i}", dsn=pg.dsn(f"db{i}")) for i in range(HEALTHY)]
    targets.append(TargetConfig(name="hung", dsn=pg.dsn(f"db{HEALTHY}")))
    # A server that is not running: nothing listens on this port.
    targets.append(TargetConfig(name="stopped", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/gone"))
    settings = {
        "exporter_scrape_budget_s": str(BUDGET_S),
        "database_connect_timeout_s": str(int(BUDGET_S)),
        "exporter_probe_cache_s": "600",
        **env,
    }
    return targets, settings


def waiting_on_database_lock(pg: EmbeddedPostgres, datname: str) -> bool:
    """Whether a backend is starting up in ``datname`` and waits for the lock on the database object."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.objid"
            " WHERE l.locktype = 'object' AND NOT l.granted AND d.datname = %s",
            (datname,),
        ).fetchone()
    return bool(row and row[0] > 0)


def exporter_backends(pg: EmbeddedPostgres) -> int:
    """The exporter's connections that are open and idle (a connection attempt still starting is not)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'",
            (APPLICATION_NAME,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_fifty_databases_one_stopped_one_hung_each_healthy_one_answers_within_its_budget(
    cluster: EmbeddedPostgres,
) -> None:
    targets, env = fleet_config(cluster)
    fleet = Fleet(config(**env), targets)
    locker = psycopg.connect(cluster.dsn())
    try:
        # The hung database: a transaction renames it and holds the lock every new session must take.
        locker.execute(f"ALTER DATABASE db{HEALTHY} RENAME TO db{HEALTHY}_locked")
        hung: list[Scrape] = []
        hung_thread = threading.Thread(target=lambda: hung.append(Scrape(fleet.probe("hung", BUDGET_S))))
        hung_thread.start()
        wait_for(lambda: waiting_on_database_lock(cluster, f"db{HEALTHY}"), 60, "the hung probe's connection to wait")

        results: dict[str, Scrape] = {}

        def probe(name: str) -> None:
            results[name] = Scrape(fleet.probe(name, BUDGET_S))

        others = [t.name for t in targets if t.name != "hung"]
        workers = [threading.Thread(target=probe, args=(name,)) for name in others]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

        # Every other probe answered while the hung one still waits: it slowed nobody.
        assert hung_thread.is_alive(), "the hung probe returned before the lock was released"
        down = sorted(name for name, s in results.items() if s.value("pg_up") != 1)
        assert down == ["stopped"], f"targets down: {down}"
        for i in range(HEALTHY):
            s = results[f"db{i}"]
            failed = [lbl["collector"] for lbl, v in s.samples("pgarch_scrape_collector_success") if v != 1]
            # pg_stat_statements is created in db0 only, which the server's reader connects to.
            assert not failed, f"db{i}: collectors failed: {failed}"
            assert s.one("pg_stat_database_xact_commit", datname=f"db{i}") is not None
            # A probe shows its own database's series, not its 49 neighbours'.
            datnames = {lbl["datname"] for lbl, _ in s.samples("pg_stat_database_xact_commit")}
            assert datnames == {f"db{i}"}, f"db{i} probe carries {datnames}"
            assert s.one("pgarch_query_duration_seconds_count", datname=f"db{i}") is not None
        stopped = results["stopped"]
        assert stopped.names() <= {
            "pg_up",
            "pgarch_scrape_duration_seconds",
            "pgarch_scrape_collector_success",
        }, "a stopped target shows nothing stale"

        # The cluster-wide views of the 48 healthy databases' server were read once, not 48 times.
        reader = fleet.servers[server_key(targets[0].dsn or "")]
        assert reader.collections == 1, f"the server's views were read {reader.collections} times"
        # One connection per database that answered, plus one for the server's views.
        assert exporter_backends(cluster) == HEALTHY + 1

        # A short budget on the hung target answers pg_up 0 at its deadline (the hung attempt is reused,
        # not joined by a second connection).
        short = Scrape(fleet.probe("hung", 0.5))
        assert short.value("pg_up") == 0
        assert hung_thread.is_alive()
    finally:
        locker.rollback()
        locker.close()
    hung_thread.join()
    # Released: the hung database connects and answers (its probe had the budget to wait).
    assert hung and hung[0].value("pg_up") == 1
    fleet.close()


def test_probe_endpoint_names_targets_and_never_takes_a_dsn(cluster: EmbeddedPostgres) -> None:
    targets, env = fleet_config(cluster, exporter_scrape_budget_s="30")
    cfg = config(**env)
    fleet = Fleet(cfg, targets[:2])
    server = ExporterServer(("127.0.0.1", 0), None, fleet=fleet, config=cfg)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def get(path: str) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("GET", path, headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        return response.status, response.getheader("Content-Type") or "", body

    try:
        status, content_type, body = get("/probe?target=db1")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
        assert "\npg_up 1\n" in body
        # postgres_exporter's names and types: a counter without _total, announced under that very name.
        assert "# TYPE pg_stat_database_blks_hit counter\n" in body
        assert 'pg_stat_database_blks_hit{datid="' in body and 'datname="db1"}' in body
        assert 'datname="db0"' not in body
        assert "process_resident_memory_bytes" not in body, "process_* belongs to /metrics"

        dsn = targets[0].dsn or ""
        status, _, body = get("/probe?target=" + dsn)
        assert status == 404 and dsn not in body and "postgres@" not in body
        assert get("/probe")[0] == 400
        assert get("/probe?target=db0&target=db1")[0] == 400

        status, _, body = get("/metrics")
        assert status == 200 and "process_resident_memory_bytes" in body and "pg_up" not in body
    finally:
        server.shutdown()
        server.server_close()
        fleet.close()


@pytest.mark.skipif(PROMETHEUS is None, reason="apt-get install prometheus")
def test_prometheus_scrapes_probes_with_the_documented_relabelling(cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    import contextlib

    import requests
    import yaml

    targets, _ = fleet_config(cluster)
    config_file = tmp_path / "exporter.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": t.name, "dsn": t.dsn} for t in targets[:3]]
                + [{"name": "stopped", "dsn": targets[-1].dsn}]
            }
        )
    )
    with contextlib.ExitStack() as stack:
        # Targets only, no database.dsn: the exporter serves /probe (and its own process_* on /metrics).
        _, base = _start_listening(
            stack,
            "exporter",
            lambda port: [
                sys.executable,
                "-m",
                "pg_architect",
                "exporter",
                "--config",
                str(config_file),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            "/healthz",
            tmp_path / "exporter.log",
        )
        exporter_address = base.removeprefix("http://")
        # The scrape configuration of docs/fleet.md, pointed at this exporter.
        scrape = {
            "job_name": "postgres",
            "metrics_path": "/probe",
            "scrape_interval": "2s",
            "scrape_timeout": "2s",
            "static_configs": [{"targets": ["db1", "db2", "stopped"], "labels": {"env": "test", "team": "dba"}}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "target"},
                {"target_label": "__address__", "replacement": exporter_address},
            ],
        }
        prometheus = start_prometheus(
            stack, {"global": {"scrape_interval": "2s"}, "scrape_configs": [scrape]}, tmp_path
        )

        def ups() -> dict[str, str] | None:
            found = {r["metric"]["target"]: r["value"][1] for r in prometheus.vector("pg_up")}
            return found if len(found) == 3 else None

        up = wait_for(ups, 120, "Prometheus to scrape the three probes")
        assert up == {"db1": "1", "db2": "1", "stopped": "0"}, up
        hits = wait_for(lambda: prometheus.vector('pg_stat_database_blks_hit{target="db2"}'), 60, "block hits")
        assert [(r["metric"]["datname"], r["metric"]["env"], r["metric"]["team"]) for r in hits] == [
            ("db2", "test", "dba")
        ], hits
        metadata = requests.get(
            f"{prometheus.base}/api/v1/metadata", params={"metric": "pg_stat_database_blks_hit"}, timeout=10
        ).json()["data"]
        assert metadata["pg_stat_database_blks_hit"][0]["type"] == "counter", metadata
