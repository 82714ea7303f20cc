#!/usr/bin/env python3
"""Do the dashboards and alerts written for postgres_exporter work on pg-architect's exporter? Counted side by side.

Run (one command, about a minute; prints the table, and with --details every query):

    python bench/postgres_exporter_compat.py --sources DIR [--details] [--server debian]

The results and how to read them: docs/postgres-exporter-compat.md.

DIR holds the third-party content under test, which pg-architect does not ship (or set PGARCH_COMPAT_SOURCES):

    DIR/postgres_mixin/   the postgres-mixin: the postgres_mixin directory of
                          https://github.com/prometheus-community/postgres_exporter (any commit; note it)
    DIR/9628.json         Grafana dashboard 9628 "PostgreSQL Database", revision 7:
                          https://grafana.com/api/dashboards/9628/revisions/7/download
    DIR/SOURCES           optional: one line per source saying where it came from; printed with the results

Needs: `pip install -e .` (the `pg-architect` console script), `pip install jsonnet` (renders the mixin's
alerts), and the Debian packages `prometheus` and `prometheus-postgres-exporter`.

What it does: starts an embedded PostgreSQL 18 (with --server debian, Debian's; deleted afterwards) with one
database under a small workload (inserts, updates, deletes, reads, rollbacks, temporary files, a session idle in
transaction holding a lock); points pg-architect's exporter and postgres_exporter at that same database; gives
each exporter its own real Prometheus (so each is measured alone, with unmodified expressions), scraping every
2 s; waits until both have data for rate() and irate(); then evaluates, in both Prometheus servers:

- the postgres-mixin's alerts (rendered with jsonnet). An alert works when its expression returns series once
  every comparison is made `bool` (`x > 0.9` -> `x > bool 0.9`): the alert can evaluate and would fire when
  its condition holds. A firing alert needs the condition, which a healthy test database does not meet.
- the postgres-mixin's dashboard and dashboard 9628: every panel query. A query works when it returns series,
  as a panel that shows something.

Dashboard variables are set as a user would on a server outside Kubernetes: $instance = the exporter's target,
$job = ".+", the multi-value ones (databases, lock modes) = "All" (".*"), $release and $namespace = "" (no such
labels), $__rate_interval and $interval = 1m. Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):  # run from a checkout without installing: `python bench/...`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from exporter_vs_postgres_exporter import our_command  # noqa: E402

from pg_architect.core.embedded import EmbeddedPostgres, free_port  # noqa: E402

DBNAME = "compat"
JOB = "postgres"
SCRAPE_INTERVAL_S = 2
# Grafana's variables as a user outside Kubernetes would have them ($instance is set per exporter).
VARIABLES = {
    "job": ".+",
    "db": ".*",
    "datname": ".*",
    "mode": ".*",
    "release": "",
    "namespace": "",
    "__rate_interval": "1m",
    "interval": "1m",
    "__interval": "15s",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


# -- the content under test -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Query:
    source: str  # "postgres-mixin alerts", ...
    name: str  # alert name or "panel title / refId"
    expr: str  # as written
    kind: str  # "alert" or "panel"

    def prepared(self, instance: str) -> str:
        """The expression as evaluated: variables substituted; for alerts, comparisons made `bool`."""
        values = {**VARIABLES, "instance": instance}

        def replace(match: re.Match[str]) -> str:
            name = next(group for group in match.groups() if group)
            if name not in values:
                raise KeyError(f"{self.source}: {self.name}: no value for ${name}")
            return values[name]

        expr = _VARIABLE.sub(replace, self.expr)
        return with_bool(expr) if self.kind == "alert" else expr


def with_bool(expr: str) -> str:
    """Every comparison operator outside label matchers and strings gets the `bool` modifier."""
    out: list[str] = []
    i, depth, quote = 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(char)
            if char == "\\" and i + 1 < len(expr):
                out.append(expr[i + 1])
                i += 2
                continue
            if char == quote:
                quote = ""
            i += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and (match := _COMPARISON.match(expr, i)):
            out.append(match.group(0))
            i = match.end()
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _dashboard_queries(source: str, path: Path) -> list[Query]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    out: list[Query] = []

    def walk(panels: Sequence[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    name = f"{panel.get('title', '?')} / {target.get('refId', '?')}"
                    out.append(Query(source, name, target["expr"], "panel"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for row in dashboard.get("rows", []):
        walk(row.get("panels", []))
    return out


def _mixin_alerts(mixin: Path) -> list[Query]:
    try:
        import _jsonnet  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise SystemExit("the mixin's alerts are jsonnet: pip install jsonnet") from exc
    rendered = _jsonnet.evaluate_snippet("alerts", "(import 'mixin.libsonnet').prometheusAlerts", jpathdir=[str(mixin)])
    groups = json.loads(rendered)["groups"]
    return [
        Query("postgres-mixin alerts", rule["alert"], rule["expr"], "alert")
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]


def load_queries(sources: Path) -> dict[str, list[Query]]:
    mixin = sources / "postgres_mixin"
    missing = [p for p in (mixin / "mixin.libsonnet", sources / "9628.json") if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: see the top of {Path(__file__).name}")
    return {
        "postgres-mixin alerts": _mixin_alerts(mixin),
        "postgres-mixin dashboard": _dashboard_queries(
            "postgres-mixin dashboard", mixin / "dashboards" / "postgres-overview.json"
        ),
        "Grafana dashboard 9628": _dashboard_queries("Grafana dashboard 9628", sources / "9628.json"),
    }


def describe_sources(sources: Path) -> list[str]:
    """Where the content came from (DIR/SOURCES) and a digest of each file, so runs can be compared."""
    lines = []
    if (sources / "SOURCES").exists():
        lines += [line for line in (sources / "SOURCES").read_text().splitlines() if line.strip()]
    for path in sorted(
        [
            sources / "9628.json",
            *(sources / "postgres_mixin").rglob("*.libsonnet"),
            *(sources / "postgres_mixin").rglob("*.json"),
        ]
    ):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        lines.append(f"{path.relative_to(sources)} sha256:{digest}")
    return lines


# -- processes --------------------------------------------------------------------------------------------


class Child:
    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as handle:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def _wait(what: str, probe: Any, timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if child is not None and child.proc.poll() is not None:
            raise SystemExit(f"{child.name} exited {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout:.0f} s" + (f"\n{child.tail()}" if child else ""))
        time.sleep(0.5)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def start_prometheus(name: str, target: str, binary: str, work: Path, cleanup: contextlib.ExitStack) -> str:
    directory = work / name
    directory.mkdir()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    child = Child(f"prometheus ({name})", argv, directory / "prometheus.log")
    cleanup.callback(child.stop)
    base = f"http://127.0.0.1:{port}"
    _wait(f"Prometheus for {name} ready", lambda: _ok(f"{base}/-/ready"), 60, child)
    return base


def query(base: str, expr: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=30).json()
    return body


# -- the database and its workload --------------------------------------------------------------------------


class DebianServer:
    """Debian's PostgreSQL (the newest major installed), in a throwaway data directory, for comparing majors:
    PostgreSQL 17 moved checkpoint counters out of pg_stat_bgwriter, which old exporters still read."""

    def __init__(self, root: Path) -> None:
        majors = sorted(
            (p for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin" / "postgres").exists()),
            key=lambda p: int(p.name),
        )
        if not majors:
            raise SystemExit("Debian's PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = majors[-1] / "bin"
        self.root = root
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        result = subprocess.run(command, capture_output=True, text=True, user=self.user, cwd="/", timeout=120)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")

    def start(self) -> None:
        self.root.mkdir(parents=True)
        if self.user:
            self.root.parent.chmod(0o755)  # the server's user must reach its directory inside our work dir
            shutil.chown(self.root, self.user)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-instructions")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "shared_preload_libraries = 'pg_stat_statements'\ncompute_query_id = on\n"
            )
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "start")

    def destroy(self) -> None:
        with contextlib.suppress(SystemExit):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


SCHEMA = [
    "CREATE TABLE items (id bigserial PRIMARY KEY, account int NOT NULL, amount numeric NOT NULL, note text)",
    "INSERT INTO items (account, amount, note) SELECT g % 500, g % 1000, 'item ' || g FROM generate_series(1, 50000) g",
    "CREATE INDEX ON items (account)",
    "ANALYZE",
]


def workload(dsn: str, stop: threading.Event, errors: list[BaseException]) -> None:
    """Rows fetched, returned, inserted, updated and deleted; commits and rollbacks; a temporary file now and
    then: what the dashboards' counters count."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            n = 0
            while not stop.wait(0.2):
                n += 1
                conn.execute("SELECT sum(amount) FROM items WHERE account = %s", (n % 500,)).fetchall()
                conn.execute("INSERT INTO items (account, amount) SELECT %s, g FROM generate_series(1, 10) g", (n,))
                conn.execute("UPDATE items SET amount = amount + 1 WHERE account = %s", (n % 500,))
                conn.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 5)")
                with contextlib.suppress(psycopg.errors.DivisionByZero), conn.transaction():
                    conn.execute("UPDATE items SET amount = amount / 0 WHERE account = %s", (n % 500,))
                if n % 10 == 0:  # a sort larger than work_mem spills to a temporary file
                    with conn.transaction():
                        conn.execute("SET LOCAL work_mem = '64kB'")
                        conn.execute("SELECT count(*) FROM (SELECT note FROM items ORDER BY note DESC) s").fetchall()
    except BaseException as exc:
        errors.append(exc)


@contextlib.contextmanager
def idle_in_transaction(dsn: str) -> Iterator[None]:
    """A session idle in transaction, holding a lock on the table, as applications leave them."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT count(*) FROM items WHERE account = 1").fetchall()
        yield
        conn.rollback()


# -- the run ------------------------------------------------------------------------------------------------


def versions(args: argparse.Namespace, pg: EmbeddedPostgres | DebianServer) -> dict[str, str]:
    def first_line(argv: Sequence[str]) -> str:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    with psycopg.connect(pg.dsn(DBNAME)) as conn:
        server = conn.execute("SHOW server_version").fetchone()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "PostgreSQL": f"{server[0] if server else '?'} ({args.server})",
        "pg-architect": f"{commit or '?'} ({' '.join(our_command())})",
        "postgres_exporter": first_line([args.postgres_exporter, "--version"]),
        "Prometheus": first_line([args.prometheus, "--version"]),
    }


@dataclasses.dataclass
class Outcome:
    works: bool
    detail: str  # series count, or the error


def evaluate(base: str, instance: str, q: Query) -> Outcome:
    body = query(base, q.prepared(instance))
    if body.get("status") != "success":
        return Outcome(False, f"error: {body.get('error', body)}")
    result = body["data"]["result"]
    if isinstance(result, list):
        return Outcome(bool(result), f"{len(result)} series")
    return Outcome(True, "scalar")


def run(args: argparse.Namespace, work: Path, cleanup: contextlib.ExitStack) -> int:
    queries = load_queries(args.sources)
    for binary in (args.postgres_exporter, args.prometheus):
        if not shutil.which(binary):
            raise SystemExit(f"{binary} not found (apt-get install prometheus prometheus-postgres-exporter)")

    pg: EmbeddedPostgres | DebianServer = (
        EmbeddedPostgres(work / "pg") if args.server == "embedded" else DebianServer(work / "debian-pg")
    )
    cleanup.callback(pg.destroy)
    pg.start()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DBNAME}")
    dsn = pg.dsn(DBNAME)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for statement in SCHEMA:
            conn.execute(statement)

    stop = threading.Event()
    errors: list[BaseException] = []
    worker = threading.Thread(target=workload, args=(dsn, stop, errors), daemon=True)
    worker.start()
    cleanup.callback(worker.join, 10)
    cleanup.callback(stop.set)
    cleanup.enter_context(idle_in_transaction(dsn))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG_ARCHITECT", "DATA_SOURCE", "PG"))}
    ours_port, theirs_port = free_port(), free_port()
    ours = Child(
        "pg-architect",
        [*our_command(), "exporter", "--dsn", dsn, "--config", "/dev/null", "--listen", f"127.0.0.1:{ours_port}"],
        work / "pg-architect.log",
        env,
    )
    cleanup.callback(ours.stop)
    theirs = Child(
        "postgres_exporter",
        [args.postgres_exporter, f"--web.listen-address=127.0.0.1:{theirs_port}"],
        work / "postgres_exporter.log",
        {**env, "DATA_SOURCE_NAME": f"{dsn}?sslmode=disable"},
    )
    cleanup.callback(theirs.stop)
    _wait("pg-architect's exporter ready", lambda: _ok(f"http://127.0.0.1:{ours_port}/healthz"), 60, ours)
    _wait("postgres_exporter ready", lambda: _ok(f"http://127.0.0.1:{theirs_port}/metrics"), 60, theirs)

    targets = {"pg-architect": f"127.0.0.1:{ours_port}", "postgres_exporter": f"127.0.0.1:{theirs_port}"}
    bases = {name: start_prometheus(name, t, args.prometheus, work, cleanup) for name, t in targets.items()}
    # Enough scrapes for rate() and irate() (two samples) and a few more, in both.
    needed = max(3, args.settle_s // SCRAPE_INTERVAL_S)

    def settled() -> bool:
        for base in bases.values():
            body = query(base, f'count_over_time(up{{job="{JOB}"}}[10m]) >= {needed} and up{{job="{JOB}"}} == 1')
            if not body.get("data", {}).get("result"):
                return False
        return not errors

    _wait(f"{needed} successful scrapes of each exporter", settled, args.settle_s * 4 + 60)
    if errors:
        raise SystemExit(f"the workload failed: {errors}")

    results: dict[str, dict[Query, Outcome]] = {
        name: {q: evaluate(bases[name], targets[name], q) for qs in queries.values() for q in qs} for name in bases
    }
    print_report(args, versions(args, pg), queries, results)
    return 0


def print_report(
    args: argparse.Namespace,
    info: Mapping[str, str],
    queries: Mapping[str, Sequence[Query]],
    results: Mapping[str, Mapping[Query, Outcome]],
) -> None:
    names = list(results)
    print("## postgres_exporter's content on each exporter (working queries)\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    for line in describe_sources(args.sources):
        print(f"- source: {line}")
    print()
    print(f"| content | queries | {' | '.join(names)} |")
    print(f"|---|---:|{'---:|' * len(names)}")
    for source, qs in queries.items():
        counts = [sum(results[name][q].works for q in qs) for name in names]
        print(f"| {source} | {len(qs)} | {' | '.join(f'{c}/{len(qs)}' for c in counts)} |")
    if not args.details:
        return
    for source, qs in queries.items():
        print(f"\n### {source}\n")
        print(f"| query | {' | '.join(names)} |")
        print(f"|---|{'---|' * len(names)}")
        for q in qs:
            cells = [("yes" if results[n][q].works else "no") + f" ({results[n][q].detail})" for n in names]
            print(f"| {q.name.replace('|', '/')} | {' | '.join(c.replace('|', '/') for c in cells)} |")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    default_sources = os.environ.get("PGARCH_COMPAT_SOURCES")
    parser.add_argument(
        "--sources",
        type=Path,
        default=Path(default_sources) if default_sources else None,
        required=default_sources is None,
        help="directory with postgres_mixin/ and 9628.json (see the top of this file); env PGARCH_COMPAT_SOURCES",
    )
    parser.add_argument(
        "--server",
        choices=("embedded", "debian"),
        default="embedded",
        help="PostgreSQL to run: the embedded one (18, the default) or Debian's newest installed major",
    )
    parser.add_argument("--details", action="store_true", help="also list every query and whether it works")
    parser.add_argument("--settle-s", type=int, default=30, help="seconds of scrapes before evaluating (default 30)")
    parser.add_argument("--postgres-exporter", default="prometheus-postgres-exporter", help="postgres_exporter binary")
    parser.add_argument("--prometheus", default="prometheus", help="Prometheus binary")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pgarch-compat-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        return run(args, work, cleanup)


if __name__ == "__main__":
    sys.exit(main())
