"""The command line as a user meets it: exit codes, one-line errors, no secrets, the README's commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from pg_architect.core.embedded import free_port
from tests.conftest import ServerInfo

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    return subprocess.run([sys.executable, "-m", "pg_architect", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})}, cwd=ROOT)


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith(".ci/install-deps"))
    first_screen = "\n".join(readme.splitlines()[:25])
    assert command in first_screen, f"README's first screen must show the CI test command: {command}"
    assert "pg-architect demo" in first_screen
    assert os.access(ROOT / ".ci" / "run", os.X_OK) and os.access(ROOT / ".ci" / "install-deps", os.X_OK)


def test_bad_configuration_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("database: {dsn: 'postgresql://u:hunter2@db/x'}\nexporter: {listen: nope, bogus: 1}\n"
                      "auditor: {thresholds: {min_calls: -5, limit: many}}\nmystery: {}\n")
    proc = cli("check", "--config", str(config))
    assert proc.returncode == 2, proc.stderr
    for fragment in ("exporter.listen", "exporter.bogus: unknown key", "auditor.thresholds.min_calls",
                     "auditor.thresholds.limit", "mystery: unknown key"):
        assert fragment in proc.stderr, f"missing {fragment!r} in:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def test_unknown_environment_setting_is_rejected() -> None:
    proc = cli("check", "--config", "/dev/null", env={"PG_ARCHITECT_EXPORTER_LISTN": "x"})
    assert proc.returncode == 2 and "PG_ARCHITECT_EXPORTER_LISTN: unknown" in proc.stderr, proc.stderr


def test_database_down_is_one_line_without_the_password() -> None:
    port = free_port()
    proc = cli("audit", "--config", "/dev/null", "--dsn", f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app")
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pg-architect:")]
    assert len(lines) == 1 and "s3cret-pw" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_usage_error_exits_2() -> None:
    proc = cli("audit", "--format", "yaml")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_check_passes_on_a_ready_database_and_lists_fixes_otherwise(pg_dsn: str,
                                                                   postgresql: psycopg.Connection) -> None:
    # The embedded server has no hypopg: by default no safe measurement method exists, and check says so.
    unsafe = cli("check", "--config", "/dev/null", "--dsn", pg_dsn)
    assert unsafe.returncode == 1, unsafe.stdout + unsafe.stderr
    assert "[FAIL] measurement method (auto): none: no safe method" in unsafe.stdout, unsafe.stdout
    assert re.search(r"apt-get install postgresql-\d+-hypopg", unsafe.stdout), unsafe.stdout
    assert "[ok  ] read access to the audited tables" in unsafe.stdout, unsafe.stdout
    ok = cli("check", "--config", "/dev/null", "--dsn", pg_dsn,
             env={"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ready" in ok.stdout and "[FAIL]" not in ok.stdout
    assert "rollback_build: real builds in rolled-back transactions, BLOCKING WRITES" in ok.stdout, ok.stdout
    postgresql.autocommit = True
    postgresql.execute("DROP EXTENSION pg_stat_statements")
    bad = cli("check", "--config", "/dev/null", "--dsn", pg_dsn)
    assert bad.returncode == 1, bad.stdout
    assert "fix: CREATE EXTENSION pg_stat_statements" in bad.stdout, bad.stdout


def test_check_flags_a_role_without_pg_monitor(embedded_pg: ServerInfo, postgresql: psycopg.Connection) -> None:
    postgresql.autocommit = True
    postgresql.execute("DROP ROLE IF EXISTS plain_user")
    postgresql.execute("CREATE ROLE plain_user LOGIN")
    try:
        proc = cli("check", "--config", "/dev/null", "--dsn", embedded_pg.dsn(postgresql.info.dbname, "plain_user"))
        assert proc.returncode == 1 and 'GRANT pg_monitor TO "plain_user"' in proc.stdout, proc.stdout
    finally:
        postgresql.execute("DROP ROLE plain_user")


def test_exporter_command_serves_metrics_and_health_over_http(pg_dsn: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pg_architect", "exporter", "--config", "/dev/null", "--dsn", pg_dsn,
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        body = ""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert re.search(r"^pg_up 1\.0$", body, re.M), body[:500]
        assert "pgarch_query_duration_seconds_bucket" in body
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        om = urllib.request.urlopen(req, timeout=5)
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.read().decode().rstrip().endswith("# EOF")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("fmt", ["json", "markdown", "text"])
def test_report_prints_the_last_audit_in_every_format(fmt: str, pg_dsn: str, postgresql: psycopg.Connection) -> None:
    postgresql.autocommit = True
    postgresql.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    missing = cli("report", "--config", "/dev/null", "--dsn", pg_dsn)
    assert missing.returncode == 1 and "no successful audit yet" in missing.stderr, missing.stderr
    audit = cli("audit", "--config", "/dev/null", "--dsn", pg_dsn, "--format", "json")
    assert audit.returncode == 0, audit.stderr
    report = cli("report", "--config", "/dev/null", "--dsn", pg_dsn, "--format", fmt)
    assert report.returncode == 0, report.stderr
    if fmt == "json":
        import json

        doc = json.loads(report.stdout)
        assert doc["status"] == "ok" and set(doc) >= {"run_id", "window", "slow_queries", "index_health", "kpis"}
    else:
        assert "pg-architect audit" in report.stdout


def test_demo_once_runs_the_whole_product_on_the_embedded_server(tmp_path: Path) -> None:
    port = free_port()
    proc = cli("demo", "--once", "--scale", "0.2", "--listen", f"127.0.0.1:{port}", "--config", "/dev/null",
               env={"PG_ARCHITECT_DATABASE_EMBEDDED_DATA_DIR": str(tmp_path / "pg")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[recommended]" in proc.stdout and "CREATE INDEX CONCURRENTLY" in proc.stdout, proc.stdout[-3000:]
    assert "no candidate index" in proc.stdout, "the demo's decoys must be declined with a reason"
    assert "p95 from the exporter: pgarch_query_p95_seconds" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "pg" / "postmaster.pid").exists(), "the embedded server must be stopped on exit"
