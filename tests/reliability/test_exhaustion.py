"""Every connection slot taken: the exporter says so within its budget, the auditor fails in one line,
neither holds more than its share, and both recover when slots free up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pg_architect.exporter.target import APPLICATION_NAME
from tests.reliability.conftest import Exporter, OwnPostgres, backends, config, wait_until

ROOT = Path(__file__).resolve().parents[2]
MAX_CONNECTIONS = 12


def _fill(dsn: str) -> list[psycopg.Connection]:
    """Open ordinary connections until the server refuses one (bounded by max_connections)."""
    held: list[psycopg.Connection] = []
    for _ in range(MAX_CONNECTIONS + 1):
        try:
            held.append(psycopg.connect(dsn, autocommit=True, connect_timeout=5))
        except psycopg.OperationalError as exc:
            assert "connection" in str(exc).lower() or "slots" in str(exc).lower(), exc
            return held
    raise AssertionError(f"{MAX_CONNECTIONS + 1} connections accepted with max_connections = {MAX_CONNECTIONS}")


@pytest.mark.pg_settings({"max_connections": str(MAX_CONNECTIONS), "superuser_reserved_connections": "2"})
def test_exhausted_connections_are_reported_within_budget_and_recovered(own_pg: OwnPostgres) -> None:
    with psycopg.connect(own_pg.dsn(), autocommit=True) as admin:
        admin.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor CONNECTION LIMIT 3")
        admin.execute("CREATE ROLE app LOGIN")
    monitor_dsn = own_pg.dsn(user="monitor")
    budget = 2.0
    with Exporter(monitor_dsn, config(exporter_scrape_budget_s=str(budget))) as exporter:
        assert exporter.up()
        exporter.target.close()  # drop its connection: the next scrape must find a slot
        held = _fill(own_pg.dsn(user="app"))
        try:
            for _ in range(3):
                samples, took = exporter.scrape()
                assert samples["pg_up"] == 0.0, samples.get("pg_up")
                assert took < budget + 1.5, f"a scrape took {took:.2f} s with no slot free"
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
            audit = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pg_architect",
                    "audit",
                    "--config",
                    "/dev/null",
                    "--dsn",
                    own_pg.dsn("postgres", "app"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                cwd=ROOT,
            )
            assert audit.returncode == 1, audit.stderr
            lines = [line for line in audit.stderr.splitlines() if line.startswith("pg-architect:")]
            assert len(lines) == 1 and "Traceback" not in audit.stderr, audit.stderr
        finally:
            for conn in held:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        wait_until(exporter.up, "pg_up 1 once connections were released", polls=300)
        for _ in range(20):
            exporter.scrape()
        # One connection for the exporter, however many scrapes and failures came before.
        assert backends(own_pg.dsn(), APPLICATION_NAME) <= 1
