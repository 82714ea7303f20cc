"""After an audit: a region annotation per audit and one per pull request through Grafana's annotation API (a
local server speaking it), the run's metrics pushed to a real Pushgateway by the batch-job conventions, and
every failing integration logged, recorded and served as pgarch_integration_failures_total while the audit
stays ok."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from pg_architect import demo
from pg_architect.auditor.audit import AuditOptions, run_audit
from pg_architect.auditor.delivery import after_audit
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core import db
from pg_architect.core.config import load_config
from pg_architect.core.embedded import free_port
from pg_architect.exporter import collectors
from tests.conftest import ServerInfo, make_database
from tests.fakes.github_api import GitHubApi
from tests.fakes.webhooks import GrafanaApi

SCALE = {"customers": 20_000, "orders": 100_000, "jobs": 30_000}
OPTIONS = AuditOptions(min_calls=4, min_mean_ms=1.0, limit=20)
JOB = "pg-architect-auditor"


@pytest.fixture(scope="module")
def pushgateway() -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway (apt-get install prometheus-pushgateway)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="pgarch-pushgateway-")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it answers ready, or dies
            if proc.poll() is not None:
                pytest.fail(f"pushgateway exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def shop(embedded_pg: ServerInfo) -> str:
    dsn = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="integrations_shop",
        progress=lambda m: None,
        reset_statements=False,
        **SCALE,
    )
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))
    return dsn


def pushed(url: str, target: str) -> dict[str, float]:
    """The Pushgateway's samples of our job and target, by name (+ action label)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.labels.get("job") == JOB and s.labels.get("target") == target and s.name.startswith("pgarch_"):
                key = s.name + (f"{{{s.labels['action']}}}" if "action" in s.labels else "")
                out[key] = s.value
    return out


def test_audit_annotates_grafana_and_pushes_to_the_pushgateway(
    shop: str, embedded_pg: ServerInfo, pushgateway: str
) -> None:
    kb_dsn = make_database(embedded_pg, "integrations_kb_ok", ("vector",))
    with GrafanaApi(token="glsa_ok") as grafana, GitHubApi() as github:
        github.add_repo("acme/shop")
        cfg = load_config(
            None,
            env={
                "PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true",
                "PG_ARCHITECT_GRAFANA_URL": grafana.url,
                "GRAFANA_TOKEN": "glsa_ok",
                "PG_ARCHITECT_GRAFANA_DASHBOARD_UID": "pg-architect",
                "PG_ARCHITECT_PUSHGATEWAY_URL": pushgateway,
                "PG_ARCHITECT_GITHUB_REPO": "acme/shop",
                "PG_ARCHITECT_GITHUB_API_URL": github.url,
                "GITHUB_TOKEN": "test-token",
                "PG_ARCHITECT_AUDITOR_API_PUBLIC_URL": "https://architect.example",
            },
        )
        report = run_audit(cfg, shop, kb_dsn, OPTIONS)
        annotations = list(grafana.annotations)
    assert report.status == "ok" and report.kpis.prs_created >= 3, report.delivery_notes
    regions = [a for a in annotations if a["tags"] == ["pg-architect", "audit"]]
    assert len(regions) == 1
    region = regions[0]
    assert region["dashboardUID"] == "pg-architect"
    assert region["time"] == int(report.started_at.timestamp() * 1000)
    assert report.finished_at is not None and region["timeEnd"] == int(report.finished_at.timestamp() * 1000)
    assert f"https://architect.example/admin/database/runs/{report.run_id}" in region["text"]
    assert f"{report.kpis.slow_queries} slow statement(s)" in region["text"]
    assert f"{report.kpis.prs_created} pull request(s) opened" in region["text"]
    prs = [a for a in annotations if a["tags"] == ["pg-architect", "pull-request"]]
    assert len(prs) == report.kpis.prs_created and all(
        "https://github.example/acme/shop/pull/" in a["text"] for a in prs
    )

    metrics = pushed(pushgateway, "integrations_shop")
    assert metrics["pgarch_audit_last_success_timestamp_seconds"] == pytest.approx(report.finished_at.timestamp())
    assert metrics["pgarch_audit_failed"] == 0
    assert metrics["pgarch_audit_slow_queries"] == report.kpis.slow_queries
    assert metrics["pgarch_audit_prs_opened"] == report.kpis.prs_created
    duration = (report.finished_at - report.started_at).total_seconds()
    assert metrics["pgarch_audit_duration_seconds"] == pytest.approx(duration)
    recommended = sum(v for k, v in metrics.items() if k.startswith("pgarch_audit_recommendations{"))
    assert recommended == report.kpis.recommended

    # A failed run later: its duration and failure are pushed, the last success stays as it was.
    kb = KnowledgeBase.open(kb_dsn, cfg)
    try:
        target_id = kb.register_target("x", "integrations_shop", 180000)
        started = datetime.now(UTC) - timedelta(seconds=3)
        after_audit.after_failure(cfg, kb, report.run_id, target_id, started, "integrations_shop", "boom")
    finally:
        kb.close()
    after = pushed(pushgateway, "integrations_shop")
    assert after["pgarch_audit_failed"] == 1
    assert (
        after["pgarch_audit_last_success_timestamp_seconds"] == metrics["pgarch_audit_last_success_timestamp_seconds"]
    )
    assert after["pgarch_audit_last_run_timestamp_seconds"] > metrics["pgarch_audit_last_run_timestamp_seconds"]


def test_failing_integrations_are_logged_recorded_and_counted_and_the_audit_stays_ok(
    shop: str, embedded_pg: ServerInfo, caplog: pytest.LogCaptureFixture
) -> None:
    kb_dsn = make_database(embedded_pg, "integrations_kb_fail", ("vector",))
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with GrafanaApi(token="glsa_right") as grafana:
        cfg = load_config(
            None,
            env={
                "PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true",
                "PG_ARCHITECT_GRAFANA_URL": grafana.url,
                "GRAFANA_TOKEN": "glsa_wrong",
                "PG_ARCHITECT_PUSHGATEWAY_URL": closed,
            },
        )
        with caplog.at_level("WARNING"):
            report = run_audit(cfg, shop, kb_dsn, OPTIONS)
        assert not grafana.annotations
    assert report.status == "ok" and report.kpis.recommended >= 3
    notes = "\n".join(report.delivery_notes)
    assert "grafana failed: Grafana refused the annotation: 401 invalid API key" in notes, notes
    assert "pushgateway failed:" in notes and "glsa_wrong" not in notes
    logged = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
    assert any(m.startswith("grafana") for m in logged) and any(m.startswith("pushgateway") for m in logged)
    with psycopg.connect(kb_dsn) as conn:
        status = conn.execute("SELECT status FROM pgarch.audit_runs").fetchall()
        stored = conn.execute("SELECT report->'delivery_notes' FROM pgarch.audit_runs").fetchone()
    assert status == [("ok",)] and stored is not None and any("grafana failed" in n for n in stored[0])

    # The exporter serves the counts from the knowledge base.
    conn = db.connect(kb_dsn, db.Role.EXPORTER, db.Timeouts())
    try:
        with psycopg.connect(shop) as audited:
            row = audited.execute(
                "SELECT system_identifier::text, current_database() FROM pg_control_system()"
            ).fetchone()
        assert row is not None
        kpis = collectors.read_kpis(conn, row[0], row[1])
    finally:
        conn.close()
    family = next(f for f in collectors.kpi_metrics(kpis) if f.name == "pgarch_integration_failures")
    values = {s.labels["integration"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert values["grafana"] == 1 and values["pushgateway"] == 1 and values["github"] == 0 and values["slack"] == 0
