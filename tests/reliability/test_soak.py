"""The soak: the exporter and daily snapshots for ten minutes under pgbench, with PostgreSQL restarted
(fast) and killed (SIGKILL) along the way. Run with ``-m soak`` (``.ci/soak``); the figures go to
BENCHMARKS.md.

Pass: the exporter's resident memory grows < 10 % from the first minute after warm-up to the last,
it never holds more than its two connections (the audited database, the knowledge base), no backend
count passes max_connections, every scrape is answered, and pg_up is 1 again after each restart.
``PGARCH_SOAK_SECONDS`` shortens it for a trial run (the assertions stay the same); ``PGARCH_SOAK_REPORT``
names a JSON file for the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from pg_architect.core.embedded import _bin_dir, free_port
from pg_architect.exporter.target import APPLICATION_NAME
from tests.reliability.conftest import OwnPostgres

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("PGARCH_SOAK_SECONDS", "600"))
MAX_CONNECTIONS = 60
CLIENTS = 8
CHUNK_S = 30  # pgbench runs in chunks, so a restart costs one chunk
RESTART_EVERY_S = 150
SNAPSHOT_EVERY_S = 120


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _scrape(port: int) -> tuple[float | None, float]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    up = next((float(line.split()[1]) for line in text.splitlines() if line.startswith("pg_up ")), None)
    return up, time.monotonic() - started


def _activity(dsn: str) -> dict[str, int]:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' GROUP BY 1"
            ).fetchall()
    except psycopg.Error:
        return {}
    return {name: int(n) for name, n in rows}


@pytest.mark.soak
@pytest.mark.pg_settings({"max_connections": str(MAX_CONNECTIONS), "shared_buffers": "128MB"})
def test_soak_under_pgbench_with_restarts(own_pg: OwnPostgres, tmp_path: Path) -> None:
    pgbench = str(_bin_dir() / "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", "10", own_pg.dsn()], check=True, capture_output=True, timeout=600)
    with psycopg.connect(own_pg.dsn(), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        admin.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor CONNECTION LIMIT 3")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    env["PG_ARCHITECT_DATABASE_KB_DSN"] = own_pg.dsn()
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pg_architect",
            "exporter",
            "--config",
            "/dev/null",
            "--listen",
            f"127.0.0.1:{port}",
            "--dsn",
            own_pg.dsn(user="monitor"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    bench: subprocess.Popen[str] | None = None
    figures: dict[str, list[float]] = {"rss_kib": [], "rss_at_s": [], "scrape_s": []}
    peaks = {"exporter_connections": 0, "client_backends": 0}
    failures: list[str] = []
    restarts = kills = snapshots = 0
    down_scrapes = 0
    started = time.monotonic()
    last_restart = last_snapshot = started
    try:
        for _ in range(300):  # wait for the exporter to listen (bounded)
            try:
                if _scrape(port)[0] == 1.0:
                    break
            except OSError:
                time.sleep(0.1)
        for tick in range(SECONDS * 2):  # one tick ~0.5 s; bounded by the soak's length
            now = time.monotonic()
            elapsed = now - started
            if elapsed >= SECONDS:
                break
            if bench is None or bench.poll() is not None:
                bench = subprocess.Popen(
                    [pgbench, "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(CHUNK_S), own_pg.dsn()],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            if now - last_restart >= RESTART_EVERY_S:
                if (restarts + kills) % 2 == 0:
                    own_pg.restart()
                    restarts += 1
                else:
                    own_pg.kill()
                    own_pg.start()
                    kills += 1
                last_restart = time.monotonic()
            if now - last_snapshot >= SNAPSHOT_EVERY_S:
                snap = subprocess.run(
                    [sys.executable, "-m", "pg_architect", "snapshot", "--config", "/dev/null", "--dsn", own_pg.dsn()],
                    capture_output=True,
                    text=True,
                    timeout=300,
                    env=env,
                    cwd=ROOT,
                )
                if snap.returncode != 0:
                    failures.append(f"snapshot at {elapsed:.0f} s: {snap.stderr.strip()[-200:]}")
                snapshots += 1
                last_snapshot = time.monotonic()
            try:
                up, took = _scrape(port)
                figures["scrape_s"].append(took)
                down_scrapes += up != 1.0
            except OSError as exc:
                failures.append(f"scrape at {elapsed:.0f} s: {exc}")
            if tick % 10 == 0:
                figures["rss_kib"].append(_rss_kib(exporter.pid))
                figures["rss_at_s"].append(elapsed)
                activity = _activity(own_pg.dsn())
                peaks["exporter_connections"] = max(peaks["exporter_connections"], activity.get(APPLICATION_NAME, 0))
                peaks["client_backends"] = max(peaks["client_backends"], sum(activity.values()))
            time.sleep(0.5)
        final_up, _ = _scrape(port)
    finally:
        if bench is not None and bench.poll() is None:
            bench.terminate()
            bench.wait(30)
        exporter.terminate()
        _, err = exporter.communicate(timeout=30)

    rss, at = figures["rss_kib"], figures["rss_at_s"]
    warm = [r for r, t in zip(rss, at, strict=True) if 60 <= t < 120] or rss[: max(len(rss) // 5, 1)]
    last = [r for r, t in zip(rss, at, strict=True) if t >= at[-1] - 60] or rss[-max(len(rss) // 5, 1) :]
    growth = statistics.median(last) / statistics.median(warm) - 1
    summary = {
        "seconds": round(time.monotonic() - started),
        "pgbench_clients": CLIENTS,
        "restarts_fast": restarts,
        "kills": kills,
        "snapshots": snapshots,
        "scrapes": len(figures["scrape_s"]),
        "scrapes_down": down_scrapes,
        "scrape_p50_s": round(statistics.median(figures["scrape_s"]), 3),
        "scrape_max_s": round(max(figures["scrape_s"]), 3),
        "rss_warm_mib": round(statistics.median(warm) / 1024, 1),
        "rss_last_mib": round(statistics.median(last) / 1024, 1),
        "rss_growth_percent": round(100 * growth, 1),
        "exporter_connections_max": peaks["exporter_connections"],
        "client_backends_max": peaks["client_backends"],
        "max_connections": MAX_CONNECTIONS,
        "failures": failures,
    }
    report = os.environ.get("PGARCH_SOAK_REPORT")
    if report:
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    assert not failures, failures
    assert final_up == 1.0, "pg_up is not 1 after the soak"
    assert growth < 0.10, f"exporter memory grew {100 * growth:.1f} %: {summary}"
    # One connection to the audited database and one to the knowledge base (here on the same server).
    assert peaks["exporter_connections"] <= 2, summary
    assert peaks["client_backends"] <= MAX_CONNECTIONS, summary
    assert "Traceback" not in err, err[-2000:]
