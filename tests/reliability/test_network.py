"""A slow, then silent, then dropped network between pg-architect and PostgreSQL (our own TCP proxy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.reliability.conftest import Exporter, OwnPostgres, config, wait_until
from tests.reliability.proxy import Proxy

ROOT = Path(__file__).resolve().parents[2]


def _dsn_via(proxy: Proxy) -> str:
    return f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"


def test_exporter_answers_within_its_budget_through_latency_a_silent_peer_and_a_dropped_link(
    own_pg: OwnPostgres,
) -> None:
    budget = 2.0
    cfg = config(exporter_scrape_budget_s=str(budget), database_connect_timeout_s="2")
    with Proxy(own_pg.port) as proxy, Exporter(_dsn_via(proxy), cfg) as exporter:
        assert exporter.up()

        # 20 ms per packet each way: slower, still up.
        proxy.set("latency", 0.02)
        samples, took = exporter.scrape()
        assert samples["pg_up"] == 1.0 and took < budget + 1.5, (samples.get("pg_up"), took)

        # 1.5 s per packet: the scrape cannot finish, and says so within its budget.
        proxy.set("latency", 1.5)
        for _ in range(3):
            samples, took = exporter.scrape()
            assert took < budget + 1.5, f"a scrape took {took:.2f} s on a slow link"
        proxy.set("pass")
        wait_until(exporter.up, "pg_up 1 after the latency went away", polls=300)

        # A silent peer: connections stay open, nothing comes back.
        proxy.set("blackhole")
        for _ in range(3):
            samples, took = exporter.scrape()
            assert samples["pg_up"] == 0.0 and took < budget + 1.5, (samples.get("pg_up"), took)
        proxy.set("pass")
        wait_until(exporter.up, "pg_up 1 after the silent peer came back", polls=300)

        # The link dropped: every connection closed, new ones refused.
        proxy.set("drop")
        for _ in range(3):
            samples, took = exporter.scrape()
            assert samples["pg_up"] == 0.0 and took < budget + 1.5, (samples.get("pg_up"), took)
        proxy.set("pass")
        wait_until(exporter.up, "pg_up 1 after the link came back", polls=300)
        # Reconnecting after each failure leaves no connections behind.
        assert proxy.open_connections() <= 2, proxy.open_connections()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", *args, "--config", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def test_snapshot_finishes_on_a_slow_link_and_fails_cleanly_on_a_dropped_one(own_pg: OwnPostgres) -> None:
    with Proxy(own_pg.port) as proxy:
        proxy.set("latency", 0.01)
        slow = _cli("snapshot", "--dsn", _dsn_via(proxy))
        assert slow.returncode == 0, slow.stderr
        proxy.set("drop")
        dropped = _cli("snapshot", "--dsn", _dsn_via(proxy))
        assert dropped.returncode == 1, dropped.stderr
        lines = [line for line in dropped.stderr.splitlines() if line.startswith("pg-architect:")]
        assert len(lines) == 1 and "Traceback" not in dropped.stderr, dropped.stderr
