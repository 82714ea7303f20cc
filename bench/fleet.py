#!/usr/bin/env python3
"""pg-architect's exporter serving a fleet through ``/probe?target=NAME``: 50 databases in one cluster.

The cluster (embedded PostgreSQL, deleted afterwards) holds 50 databases; pgbench runs a light workload on
a few of them. One more target points at a second server that was started and then stopped, and one of the
50 databases is hung: a transaction holds the lock every new session of that database must take (it renames
the database and stays open), so connecting to it waits. One exporter process serves them all, as Prometheus
would scrape it: every target once per round, the probes spread evenly over the round, each with Prometheus'
scrape-timeout header. Reported: per-target scrape time (healthy, stopped, hung), whether every healthy
target answered ``pg_up 1`` in every round (isolation), the exporter's CPU and RSS, the connections it holds,
the series per target, and how often the cluster-wide views were read (from pg_stat_statements).

Run:  python bench/fleet.py   (see --help; about 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from exporter_vs_postgres_exporter import (  # noqa: E402
    Exporter,
    busy_cpus,
    cpu_sample,
    machine,
    our_command,
    pct,
    pg_bin,
    proc_cpu_s,
    proc_status_kb,
    run_cleanly,
    series_count,
    spawn,
    value,
    wait_ready,
)

from pg_architect.core.embedded import EmbeddedPostgres, free_port  # noqa: E402

EXPORTER_ROLE = "fleet_exporter"
WORKLOAD = "\\set id random(1, 1000)\nSELECT a, b FROM t WHERE id = :id;\nSELECT pg_catalog.pg_sleep(0.002);\n"


def build(pg: EmbeddedPostgres, databases: int, busy: int) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {EXPORTER_ROLE} LOGIN IN ROLE pg_monitor")
        for i in range(databases):
            conn.execute(f"CREATE DATABASE db{i:02d}")
    with psycopg.connect(pg.dsn("db00"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    for i in range(busy):
        with psycopg.connect(pg.dsn(f"db{i:02d}"), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE t AS SELECT g AS id, g % 7 AS a, md5(g::text) AS b FROM generate_series(1, 1000) g"
            )
            conn.execute("ALTER TABLE t ADD PRIMARY KEY (id)")


def probe(port: int, name: str, timeout_header: float) -> tuple[float, int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_header + 30)
    try:
        started = time.perf_counter()
        conn.request(
            "GET",
            f"/probe?target={name}",
            headers={"Accept-Encoding": "gzip", "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_header:g}"},
        )
        response = conn.getresponse()
        wire = response.read()
        wall = time.perf_counter() - started
        body = gzip.decompress(wire) if response.getheader("Content-Encoding") == "gzip" else wire
        return wall, response.status, body.decode()
    finally:
        conn.close()


def exporter_connections(stats: psycopg.Connection[Any]) -> int:
    row = stats.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
        (EXPORTER_ROLE,),
    ).fetchone()
    return int(row[0]) if row else 0


def view_reads(stats: psycopg.Connection[Any]) -> dict[str, int]:
    """How many times the exporter's role ran the cluster-wide reads, by what they read."""
    marks = {
        "pg_stat_database": "pg_stat_database_conflicts",
        "pg_stat_activity": "max_tx_duration",
        "pg_locks": "pg_locks",
        "pg_stat_statements": "stats_since",
    }
    out = {}
    for label, mark in marks.items():
        row = stats.execute(
            "SELECT COALESCE(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " WHERE r.rolname = %s AND s.query LIKE %s",
            (EXPORTER_ROLE, f"%{mark}%"),
        ).fetchone()
        out[label] = int(row[0]) if row else 0
    return out


def run(args: argparse.Namespace, work: Path, cleanup: contextlib.ExitStack) -> int:
    t0 = time.monotonic()
    pg = EmbeddedPostgres(work / "pg", settings={"max_connections": "300"})
    cleanup.callback(pg.destroy)
    pg.start()
    print(f"building {args.databases} databases ({args.busy} with a workload)", flush=True)
    build(pg, args.databases, args.busy)
    version = str(psycopg.connect(pg.dsn(), autocommit=True).execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    gone = EmbeddedPostgres(work / "stopped", settings={"max_connections": "20", "shared_buffers": "16MB"})
    cleanup.callback(gone.destroy)
    gone.start()
    gone.stop()  # the stopped target: a server that was there and is not any more

    hung_db = f"db{args.databases - 1:02d}"
    targets = [{"name": f"db{i:02d}", "dsn": pg.dsn(f"db{i:02d}", user=EXPORTER_ROLE)} for i in range(args.databases)]
    targets[-1]["name"] = "hung"
    targets.append({"name": "stopped", "dsn": gone.dsn("postgres", user=EXPORTER_ROLE)})
    config = {
        "exporter": {"scrape_budget_s": args.budget, "probe_cache_s": args.interval * 0.8},
        "database": {"connect_timeout_s": int(args.budget) + 5},
        "targets": targets,
    }
    config_path = work / "fleet.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML

    for i in range(args.busy):
        argv = [str(pg_bin() / "pgbench"), "-n", "-c", "1", "-R", str(args.workload_tps), "-T", "86400"]
        (work / "load.sql").write_text(WORKLOAD)
        load = spawn(f"pgbench{i}", [*argv, "-f", str(work / "load.sql"), pg.dsn(f"db{i:02d}")], work / f"load{i}.log")
        cleanup.callback(load.stop)

    locker = psycopg.connect(pg.dsn())
    cleanup.callback(locker.close)
    locker.execute(f"ALTER DATABASE {hung_db} RENAME TO {hung_db}_locked")  # held open: the hung target

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG_ARCHITECT", "DATA_SOURCE", "PG"))}
    port = free_port()
    child = spawn(
        "pg-architect",
        [*our_command(), "exporter", "--config", str(config_path), "--listen", f"127.0.0.1:{port}"],
        work / "exporter.log",
        env,
    )
    cleanup.callback(child.stop)
    exporter = Exporter("pg-architect", child, port, 0)
    wait_ready(exporter, "/healthz")
    stats = psycopg.connect(pg.dsn("db00"), autocommit=True)
    cleanup.callback(stats.close)

    names = [t["name"] for t in targets]
    results: dict[str, list[tuple[float, int, str]]] = {n: [] for n in names}
    connections: list[int] = []
    lock = threading.Lock()
    print(
        f"probing {len(names)} targets every {args.interval:g} s for {args.rounds} rounds (+1 warm-up), "
        f"scrape timeout {args.budget + 0.5:g} s (setup {time.monotonic() - t0:.0f} s)",
        flush=True,
    )

    def one(name: str, measured: bool) -> None:
        result = probe(port, name, args.budget + 0.5)
        if measured:
            with lock:
                results[name].append(result)

    cpu_before = cpu_ms_before = 0.0
    machine_before = cpu_sample()
    for r in range(args.rounds + 1):
        measured = r > 0
        if r == 1:
            cpu_before, machine_before = proc_cpu_s(child.proc.pid), cpu_sample()
            reads_before = view_reads(stats)
        round_start = time.monotonic()
        threads = []
        for i, name in enumerate(names):
            # Prometheus spreads its targets evenly over the interval.
            delay = round_start + i * args.interval / len(names) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            thread = threading.Thread(target=one, args=(name, measured), daemon=True)
            thread.start()
            threads.append(thread)
        connections.append(exporter_connections(stats))
        for thread in threads:
            thread.join()
        rest = round_start + args.interval - time.monotonic()
        if rest > 0:
            time.sleep(rest)
    cpu_ms_before = cpu_before
    cpu_s = proc_cpu_s(child.proc.pid) - cpu_ms_before
    busy = busy_cpus(machine_before, cpu_sample())
    reads = {k: v - reads_before[k] for k, v in view_reads(stats).items()}
    rss, hwm = proc_status_kb(child.proc.pid, "VmRSS") / 1024, proc_status_kb(child.proc.pid, "VmHWM") / 1024

    healthy = [n for n in names if n not in ("hung", "stopped")]
    times = {n: [w * 1000 for w, _, _ in results[n]] for n in names}
    healthy_times = [t for n in healthy for t in times[n]]
    up_fail = [(n, i) for n in healthy for i, (_, _, body) in enumerate(results[n]) if value(body, "pg_up") != 1]
    series = [series_count(body) for n in healthy for _, _, body in results[n]]
    print()
    print(f"PostgreSQL {version}; {len(healthy)} healthy databases ({args.busy} with a workload), 1 hung, 1 stopped")
    print()
    print("| target | probes | pg_up 1 | scrape time median (ms) | p99 (ms) | max (ms) | series (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def row(label: str, group: Sequence[str]) -> None:
        walls = [t for n in group for t in times[n]]
        ups = sum(1 for n in group for _, _, body in results[n] if value(body, "pg_up") == 1)
        count = [series_count(body) for n in group for _, _, body in results[n]]
        print(
            f"| {label} | {len(walls)} | {ups} | {statistics.median(walls):.1f} | {pct(walls, 0.99):.1f} | "
            f"{max(walls):.1f} | {statistics.median(count):.0f} |"
        )

    row(f"{len(healthy)} healthy", healthy)
    row("hung (connection waits on a lock)", ["hung"])
    row("stopped (server down)", ["stopped"])
    print()
    rounds = args.rounds
    print(
        f"exporter CPU: {cpu_s * 1000 / rounds:.0f} ms per round of {len(names)} probes "
        f"({cpu_s / (rounds * args.interval):.3f} CPUs); machine busy {busy:.2f} CPUs of {os.cpu_count()}"
    )
    print(f"exporter RSS: {rss:.1f} MB (peak {hwm:.1f} MB)")
    print(f"connections held by the exporter (sampled each round): max {max(connections)}, last {connections[-1]}")
    print(
        f"series per healthy target (median): {statistics.median(series):.0f}; "
        f"per round, all healthy targets: {sum(series) / rounds:.0f}"
    )
    print(
        "cluster-wide reads in the measured rounds: "
        + ", ".join(f"{k} {v}" for k, v in reads.items())
        + f" (rounds: {rounds}, targets: {len(names)})"
    )
    budget_ms = args.budget * 1000
    isolated = not up_fail and max(healthy_times) < budget_ms
    print(
        f"isolation: every healthy probe pg_up 1 and under the {args.budget:g} s budget while the hung and the stopped "
        f"target were probed: {'YES' if isolated else 'NO'}" + (f" (failed: {up_fail[:5]})" if up_fail else "")
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "postgresql": version,
                    "args": vars(args),
                    "times_ms": times,
                    "connections": connections,
                    "cpu_s": cpu_s,
                    "rss_mb": rss,
                    "hwm_mb": hwm,
                    "reads": reads,
                },
                indent=1,
            )
        )
    print(f"\ntook {time.monotonic() - t0:.0f} s", flush=True)
    return 0 if isolated else 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--databases", type=int, default=50, help="databases in the cluster (the last one is hung)")
    p.add_argument("--busy", type=int, default=3, help="databases with a pgbench workload")
    p.add_argument("--workload-tps", type=float, default=20.0, help="pgbench rate per busy database")
    p.add_argument("--rounds", type=int, default=6, help="measured rounds (every target once per round)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds per round (Prometheus' scrape_interval)")
    p.add_argument("--budget", type=float, default=5.0, help="exporter.scrape_budget_s (timeout header: +0.5 s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return run_cleanly("pgarch-fleet-", run, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
