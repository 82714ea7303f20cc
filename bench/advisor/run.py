"""pg-architect's advisor against pg_qualstats' and postgres-mcp's on one workload, in one run, on one server.

1. Debian's PostgreSQL (pg_stat_statements, pg_qualstats sampling every statement, hypopg) in a
   throwaway data directory, and an embedded PostgreSQL 18 (pgvector) for the knowledge bases.
2. Load about 1.4 GB (bench.advisor.workload) and record the workload: 34 statements, 425 calls,
   with bound parameters. Then create the index the DBA "added last Monday" (customers_phone_idx).
3. Ask every tool ``--runs`` times, as a role the statistics extensions do not track:
   ``pg_qualstats_index_advisor()``; postgres-mcp's Database Tuning Advisor (bench/advisor/dta.py, run with
   the Python 3.12 interpreter named by ``PGARCH_BENCH_DTA_PYTHON``); ``pg-architect audit`` in hypothetical
   mode (hypopg), each run with a fresh knowledge base, once sampling parameters from pg_stats and once
   reading the logged calls' parameters from the server's log (it logs statements of 100 ms and more, as
   production servers often do); with ``--rollback-build`` once more with real builds.
4. Build every distinct index any of them (or the truth table) named, alone, from the tool's DDL as printed;
   time the statements whose plans read it with and without it; score each run against the truth table
   (bench.advisor.scoring): recall, false recommendations, indexes measuring under 1.5x and at 5x and more,
   the same recommendations in every run; and pg-architect's actions against the measured speed-ups.

Everything runs on loopback in temporary directories removed at the end, also on Ctrl-C or SIGTERM.
Run from the repository root (as root, Debian's server runs as the ``postgres`` user):

    python -m bench.advisor.run [--runs 3] [--rollback-build] [--json FILE] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.advisor import scoring, workload
from bench.advisor.scoring import IndexDef
from bench.advisor.workload import SHAPES, Params, Shape
from pg_architect.core.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[2]
DB = "shop"
MIN_CALLS, MIN_MEAN_MS, LIMIT = 5, 2, 40
WORKLOAD_SEED, TIMING_SEED = 20240601, 7
TIMING_SETS, TIMING_REPEATS = 3, 2
#: The server logs every statement at least this slow, with its parameters, as a production server often does;
#: pg-architect reads them in its "server log" runs (auditor.server_log), the other runs sample from pg_stats.
LOG_MIN_DURATION_MS = 100
#: Debian's server: data cached in shared_buffers, so timings compare plans, not disks; no autovacuum or
#: JIT during the timings, so the only change between two timings is the set of indexes.
SERVER_SETTINGS = {
    "shared_buffers": "3GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
    "autovacuum": "off",
    "jit": "off",
    "track_io_timing": "on",
    "compute_query_id": "on",
    "pg_qualstats.sample_rate": "1",
    "pg_qualstats.max": "10000",
    "max_connections": "50",
    "logging_collector": "on",
    "log_destination": "'csvlog'",
    "log_directory": "'log'",
    "log_min_duration_statement": str(LOG_MIN_DURATION_MS),
}


def log(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


# -- servers ---------------------------------------------------------------------------------------------


def debian_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    majors = sorted(
        (p for p in root.iterdir() if p.name.isdigit() and (p / "bin" / "postgres").exists()),
        key=lambda p: int(p.name),
        reverse=True,
    )
    for major in majors:
        lib = subprocess.run(
            [str(major / "bin" / "pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if all((Path(lib) / f"{ext}.so").exists() for ext in ("hypopg", "pg_qualstats", "pg_stat_statements")):
            return major / "bin"
    raise SystemExit(
        "no Debian PostgreSQL with hypopg and pg_qualstats: apt-get install postgresql "
        "postgresql-<major>-hypopg postgresql-<major>-pg-qualstats"
    )


class DebianServer:
    """Debian's PostgreSQL in a throwaway directory, run as the ``postgres`` system user when we are root."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            cwd="/",
            timeout=timeout,
        )

    def start(self) -> None:
        os.chmod(self.root, 0o755)
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-instructions")
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "shared_preload_libraries": "'pg_stat_statements,pg_qualstats'",
        }
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


def connect(dsn: str) -> psycopg.Connection[Any]:
    # prepare_threshold=None: unnamed statements, planned with each call's values (like a pooled app).
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None, application_name="bench-advisor")


# -- loading -----------------------------------------------------------------------------------------------


def run_parallel(jobs: Sequence[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(j,), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def load(dsn: str) -> None:
    def group(tables: Sequence[str]) -> Callable[[], None]:
        def job() -> None:
            with connect(dsn) as conn:
                conn.execute("SELECT setseed(0.42)")
                for table in tables:
                    started = time.monotonic()
                    with conn.transaction():  # created and filled together: no WAL with wal_level=minimal
                        for statement in workload.TABLES[table]:
                            conn.execute(statement)
                    log(f"  {table}: loaded in {time.monotonic() - started:.0f}s")
                for table in tables:
                    if table not in workload.NO_PRIMARY_KEY:
                        conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
                    if table == "customers":
                        for ddl in workload.EXISTING_INDEXES:
                            conn.execute(ddl)
                    conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
                log(f"  {', '.join(tables)}: keys, indexes, vacuum done")

        return job

    run_parallel([group(g) for g in workload.LOAD_GROUPS])
    with connect(dsn) as conn:
        for statement in workload.DERIVED:
            conn.execute(statement)


# -- the recorded workload and the timings --------------------------------------------------------------


def execute(conn: psycopg.Connection[Any], shape: Shape, params: tuple[Any, ...]) -> float:
    """Run one call and return its client-side wall time in ms; DML is rolled back, so data never changes."""
    started = time.perf_counter()
    if shape.dml:
        with conn.transaction(force_rollback=True):
            conn.execute(shape.sql, params)
    else:
        conn.execute(shape.sql, params).fetchall()
    return (time.perf_counter() - started) * 1000.0


def record_workload(dsn: str) -> float:
    with connect(dsn) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_qualstats_reset()")
        started = time.monotonic()
        for shape, params in workload.workload_calls(WORKLOAD_SEED):
            execute(conn, shape, params)
        elapsed = time.monotonic() - started
        # The rolled-back UPDATEs left dead row versions; a real server's autovacuum would clear them.
        conn.execute("VACUUM (ANALYZE) jobs")
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("VACUUM (ANALYZE) sessions")
    return elapsed


def time_shape(conn: psycopg.Connection[Any], shape: Shape, sets: Sequence[Params]) -> float:
    """Mean ms per call over the parameter sets: per set the fastest of TIMING_REPEATS after one warm-up."""
    best = []
    for params in sets:
        execute(conn, shape, params)
        best.append(min(execute(conn, shape, params) for _ in range(TIMING_REPEATS)))
    return sum(best) / len(best)


def index_names_in(plan: Any) -> set[str]:
    """Every index an EXPLAIN (FORMAT JSON) plan reads."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            found.add(str(plan["Index Name"]))
        for value in plan.values():
            found |= index_names_in(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= index_names_in(value)
    return found


def plan_uses(conn: psycopg.Connection[Any], shape: Shape, params: Params, names: set[str]) -> bool:
    """Whether the statement's plan (not executed: EXPLAIN without ANALYZE) reads one of ``names``."""
    doc = conn.execute("EXPLAIN (FORMAT JSON) " + shape.sql, params).fetchone()[0]  # type: ignore[index]
    return bool(index_names_in(doc if not isinstance(doc, str) else json.loads(doc)) & names)


# -- catalog --------------------------------------------------------------------------------------------

# The indexes a partitioned index creates on each partition are counted in its size, not listed on their own;
# an index made on one partition alone names its partitioned table too (it serves that partition's rows only).
INDEXES_SQL = """
SELECT i.indexrelid::regclass::text AS name, c.relname AS table,
       am.amname AS method,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS keys,
       pg_get_expr(i.indpred, i.indrelid, true) AS where_,
       coalesce((SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(i.indexrelid) p)::bigint,
                pg_relation_size(i.indexrelid)) AS size,
       pg_get_indexdef(i.indexrelid) AS sql,
       CASE WHEN c.relispartition THEN pg_partition_root(c.oid)::regclass::text END AS partition_of
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND NOT ic.relispartition ORDER BY 1"""

PARTITION_INDEXES_SQL = "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass)"


def indexes(conn: psycopg.Connection[Any]) -> dict[str, IndexDef]:
    return {
        name: IndexDef(name, table, tuple(keys), where, method, size or 0, sql, partition_of)
        for name, table, method, keys, where, size, sql, partition_of in conn.execute(INDEXES_SQL).fetchall()
    }


#: ``CREATE INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] table [USING method] (keys) [WHERE ...]``
_DDL = re.compile(
    r"\bON\s+(?:ONLY\s+)?(?P<table>[\w.\"]+)\s*(?:USING\s+(?P<using>\w+)\s*)?\((?P<rest>.*)$", re.I | re.S
)


def ddl_key(ddl: str) -> str:
    """What a DDL statement creates, spelled the same whichever tool wrote it (quotes, schema, names and
    spacing dropped): two tools' DDL for one index is built and timed once."""
    m = _DDL.search(ddl)
    if m is None:
        return " ".join(ddl.split())
    table = m["table"].replace('"', "").removeprefix("public.")
    rest = " ".join(m["rest"].replace('"', "").rstrip().rstrip(";").split())
    keys, _, where = rest.partition(" WHERE ")
    keys = keys.strip()
    keys = keys[:-1] if keys.endswith(")") else keys
    using = (m["using"] or "btree").lower()
    return f"{table} {using} ({keys.lower()})" + (f" WHERE {where.lower()}" if where else "")


@dataclasses.dataclass
class Measured:
    """One distinct recommended index, built alone on the bench's data and timed."""

    key: str
    ddl: str  # the first spelling seen, as built
    index: IndexDef | None
    note: str  # why nothing was built, if so
    build_s: float = 0.0
    #: statement -> (before ms, after ms) for every statement whose plan reads the index
    used_by: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """The best speed-up the index gives any statement of the workload; 1.0 when no plan reads it."""
        return max((before / max(after, 1e-3) for before, after in self.used_by.values()), default=1.0)


def measure(dsn: str, key: str, ddl: str, before: dict[str, float], sets: dict[str, list[Params]]) -> Measured:
    """Build ``ddl`` alone, find the statements whose plans read it, time those, drop it."""
    with connect(dsn) as conn:
        old = indexes(conn)
        started = time.monotonic()
        try:
            conn.execute(ddl)
        except psycopg.Error as exc:
            return Measured(key, ddl, None, f"failed: {str(exc).splitlines()[0]}")
        built_s = time.monotonic() - started
        new = [ix for name, ix in indexes(conn).items() if name not in old]
        if not new:
            return Measured(key, ddl, None, "created nothing (an index of that name exists)")
        ix = new[0]
        try:
            if any("(" in k for k in ix.keys):  # an expression index has no statistics until ANALYZE
                conn.execute(f"ANALYZE {ix.table}")
            names = {ix.name, *(r[0] for r in conn.execute(PARTITION_INDEXES_SQL, (ix.name,)).fetchall())}
            result = Measured(key, ddl, ix, "", built_s)
            for shape in SHAPES:
                if any(plan_uses(conn, shape, p, names) for p in sets[shape.name]):
                    result.used_by[shape.name] = (before[shape.name], time_shape(conn, shape, sets[shape.name]))
        finally:
            conn.execute(f"DROP INDEX IF EXISTS {ix.name}")
    return result


# -- the tools -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ToolRun:
    """One run of one tool: the DDL it printed, in its order."""

    tool: str
    run: int
    ddls: list[str]
    wall_s: float
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)  # the tool's own output

    def index_keys(self) -> list[str]:
        return [ddl_key(d) for d in self.ddls]


def qualstats_run(dsn: str, run: int) -> ToolRun:
    with connect(dsn) as conn:
        started = time.monotonic()
        doc = conn.execute("SELECT pg_qualstats_index_advisor()").fetchone()[0]  # type: ignore[index]
        wall = time.monotonic() - started
    return ToolRun("pg_qualstats", run, list(doc.get("indexes") or []), wall, doc)


def dta_python() -> Path | None:
    """The Python 3.12+ interpreter whose environment has postgres-mcp (``PGARCH_BENCH_DTA_PYTHON``)."""
    configured = os.environ.get("PGARCH_BENCH_DTA_PYTHON")
    return Path(configured) if configured else None


def dta_run(python: Path, dsn: str, run: int) -> ToolRun:
    args = [
        str(python), str(Path(__file__).with_name("dta.py")), dsn,
        "--min-calls", str(MIN_CALLS), "--min-mean-ms", str(MIN_MEAN_MS), "--limit", str(LIMIT),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd="/")
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"postgres-mcp's DTA exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    doc = json.loads(proc.stdout)
    if doc.get("error"):
        log(f"  postgres-mcp's DTA failed: {doc['error']}")
    return ToolRun("postgres-mcp DTA", run, list(doc["indexes"]), wall, doc)


def audit(dsn: str, kb_dsn: str, mode: str, label: str, run: int, server_log: bool = False) -> ToolRun:
    env = {
        **os.environ,
        "PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn,
        "PG_ARCHITECT_MEASUREMENT_MODE": mode,
        "PG_ARCHITECT_AUDITOR_SERVER_LOG": "pg_read_file" if server_log else "off",
        "PYTHONPATH": str(ROOT),
    }
    if mode == "rollback_build":
        # The benchmark owns its database: builds may block its (absent) writers for as long as they take.
        env["PG_ARCHITECT_MEASUREMENT_MAX_TABLE_BYTES"] = str(8 << 30)
        env["PG_ARCHITECT_MEASUREMENT_MAX_BLOCKING_MS"] = "600000"
    args = [
        sys.executable, "-m", "pg_architect", "audit", "--dsn", dsn, "--config", "/dev/null", "--format", "json",
        "--min-calls", str(MIN_CALLS), "--min-mean-ms", str(MIN_MEAN_MS), "--limit", str(LIMIT),
    ]  # fmt: skip
    commit = git_commit()
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"audit ({mode}) exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    if git_commit() != commit:
        commit += f", changed to {git_commit()} while it ran"
    report = json.loads(proc.stdout)
    recs = [
        q
        for q in report.get("slow_queries") or []
        if q["status"] == "recommended" and q.get("recommendation") and q["recommendation"]["type"] == "index"
    ]
    return ToolRun(label, run, [q["recommendation"]["sql"] for q in recs], wall, {"report": report, "commit": commit})


def audit_command(mode: str, server_log: bool = False) -> str:
    extra = (
        " PG_ARCHITECT_MEASUREMENT_MAX_TABLE_BYTES=8589934592 PG_ARCHITECT_MEASUREMENT_MAX_BLOCKING_MS=600000"
        if mode == "rollback_build"
        else ""
    ) + (" PG_ARCHITECT_AUDITOR_SERVER_LOG=pg_read_file" if server_log else "")
    return (
        f"PG_ARCHITECT_DATABASE_KB_DSN=<fresh kb> PG_ARCHITECT_MEASUREMENT_MODE={mode}{extra} python -m "
        f"pg_architect audit --dsn <shop> --config /dev/null --format json --min-calls {MIN_CALLS} "
        f"--min-mean-ms {MIN_MEAN_MS} --limit {LIMIT}"
    )


QUALSTATS_SQL = """
SELECT format('%s.%s %s', coalesce(q.lrelid, q.rrelid)::regclass, a.attname, o.oprname)
         || format(' (%s, %s)', format_type(o.oprleft, NULL), format_type(o.oprright, NULL)) AS qual,
       q.eval_type, count(*) AS entries, sum(q.occurences)::bigint AS occurences,
       round(sum(q.nbfiltered)::numeric / nullif(sum(q.occurences), 0)) AS avg_filter,
       round(sum(q.nbfiltered)::numeric / nullif(sum(q.execution_count), 0) * 100) AS avg_selectivity
FROM pg_qualstats() q
JOIN pg_attribute a ON a.attrelid = coalesce(q.lrelid, q.rrelid) AND a.attnum = coalesce(q.lattnum, q.rattnum)
LEFT JOIN pg_operator o ON o.oid = q.opno
WHERE q.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY 1, 2 ORDER BY 1, 2"""


def git_commit() -> str:
    """The commit the auditor runs from, and whether its code differs from it (others commit meanwhile)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "auditor", "exporter")
    return git("rev-parse", "--short", "HEAD") + (
        " (with uncommitted changes in auditor/ or exporter/)" if dirty else ""
    )


_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\d+|%s|(?<![\w.])\d+(?:\.\d+)?")


def _normal(text: str) -> str:
    return " ".join(_LITERAL.sub("?", text).lower().split())


def shape_of(query: str) -> Shape | None:
    key = _normal(query)
    return next((s for s in SHAPES if _normal(s.sql) == key), None)


def machine() -> dict[str, str]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2") or platform.processor()
    return {
        "nproc": sh("nproc"),
        "memory": sh('free -g | awk \'/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}\''),
        "debian": sh("cat /etc/debian_version"),
        "cpu": cpu.strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[tuple[DebianServer, EmbeddedPostgres]]:
    debian = DebianServer(debian_bin(), tmp / "debian")
    kb = EmbeddedPostgres(tmp / "kb" / "data")
    os.chmod(tmp, 0o755)  # the servers run as other system users
    (tmp / "debian").mkdir()
    try:
        debian.start()
        kb.start()
        yield debian, kb
    finally:
        debian.stop()
        kb.destroy()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, markdown: bool) -> str:
    cells = [[str(c) for c in r] for r in rows]
    if markdown:

        def esc(c: str) -> str:
            return c.replace("|", "\\|")

        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- one run of the benchmark -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool, for determinism (default 3)")
    parser.add_argument(
        "--rollback-build", action="store_true", help="also run pg-architect with rollback_build measurement (once)"
    )
    parser.add_argument("--json", type=Path, help="also write every result (reports, DDL, timings) to this file")
    parser.add_argument("--markdown", type=Path, help="also write the result as Markdown to this file")
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="pgarch-advisor-bench-"))
    try:
        return _bench(args, tmp)
    except KeyboardInterrupt:
        log("interrupted: servers stopped, temporary files removed")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TOOL_ROLE = "bench_tools"
SERVER_LOG_TOOL = "pg-architect (hypothetical, server log)"


def _bench(args: argparse.Namespace, tmp: Path) -> int:
    started_at = datetime.now(UTC)
    host = machine()
    load_before = os.getloadavg()
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    dta = dta_python()
    with servers(tmp) as (debian, kb):
        with connect(debian.dsn()) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
            server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            # The tools connect as their own role, which pg_stat_statements and pg_qualstats do not track: each
            # run of each tool sees the statistics of the recorded workload and nothing of the other runs.
            conn.execute(f"CREATE ROLE {TOOL_ROLE} LOGIN SUPERUSER")
            conn.execute(f"ALTER ROLE {TOOL_ROLE} SET pg_stat_statements.track = 'none'")
            conn.execute(f"ALTER ROLE {TOOL_ROLE} SET pg_qualstats.enabled = off")
        kb_names = [f"kb_{kind}_{n}" for kind in ("hypothetical", "serverlog") for n in range(1, args.runs + 1)]
        kb_names.append("kb_rollback_build")
        with connect(kb.dsn()) as conn:
            kb_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            for name in kb_names:
                conn.execute(f"CREATE DATABASE {name}")
        dsn = debian.dsn(DB)
        tool_dsn = f"postgresql://{TOOL_ROLE}@127.0.0.1:{debian.port}/{DB}"
        with connect(dsn) as conn:
            for ext in ("pg_stat_statements", "pg_qualstats", "hypopg"):
                conn.execute(f"CREATE EXTENSION {ext}")
            ext_versions = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
        log(f"Debian PostgreSQL {server_version} on port {debian.port}; knowledge base: embedded {kb_version}")

        mark = time.monotonic()
        log("loading the data")
        load(dsn)
        with connect(dsn) as conn:
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        phases["load"] = time.monotonic() - mark
        log(f"database {db_bytes / 2**30:.2f} GiB loaded in {phases['load']:.0f}s")

        mark = time.monotonic()
        log(f"recording the workload ({sum(s.calls for s in SHAPES)} calls)")
        phases["workload"] = record_workload(dsn)
        with connect(dsn) as conn:
            for ddl in workload.LATE_INDEXES:
                conn.execute(ddl)
            existing = list(indexes(conn).values())
            quals = [list(r) for r in conn.execute(QUALSTATS_SQL).fetchall()]
        log(f"workload recorded in {phases['workload']:.0f}s; late index created")

        mark = time.monotonic()
        runs: dict[str, list[ToolRun]] = {}
        for n in range(1, args.runs + 1):
            runs.setdefault("pg_qualstats", []).append(qualstats_run(tool_dsn, n))
        if dta is not None:
            for n in range(1, args.runs + 1):
                runs.setdefault("postgres-mcp DTA", []).append(dta_run(dta, tool_dsn, n))
                log(f"  postgres-mcp DTA run {n}: {runs['postgres-mcp DTA'][-1].wall_s:.1f}s")
        else:
            log("  postgres-mcp DTA skipped: set PGARCH_BENCH_DTA_PYTHON (see bench/advisor/README.md)")
        hyp = "pg-architect (hypothetical)"
        for n in range(1, args.runs + 1):
            runs.setdefault(hyp, []).append(audit(tool_dsn, kb.dsn(f"kb_hypothetical_{n}"), "hypothetical", hyp, n))
            log(f"  pg-architect hypothetical run {n}: {runs[hyp][-1].wall_s:.1f}s")
        logged = SERVER_LOG_TOOL
        for n in range(1, args.runs + 1):
            runs.setdefault(logged, []).append(
                audit(tool_dsn, kb.dsn(f"kb_serverlog_{n}"), "hypothetical", logged, n, server_log=True)
            )
            log(f"  pg-architect hypothetical with the server log, run {n}: {runs[logged][-1].wall_s:.1f}s")
        if args.rollback_build:
            rb = "pg-architect (rollback_build)"
            runs[rb] = [audit(tool_dsn, kb.dsn("kb_rollback_build"), "rollback_build", rb, 1)]
            log(f"  pg-architect rollback_build: {runs[rb][-1].wall_s:.1f}s")
        phases["tools"] = time.monotonic() - mark
        if args.json:  # the tools' output is kept even if the timings below are interrupted
            args.json.with_suffix(".tools.json").write_text(
                json.dumps({t: [dataclasses.asdict(r) for r in rs] for t, rs in runs.items()}, default=str)
            )

        # -- every distinct index any tool (or the truth table) named, built alone and timed ----------------
        mark = time.monotonic()
        sets = workload.timing_sets(TIMING_SEED, TIMING_SETS)
        with connect(dsn) as conn:
            before = {s.name: time_shape(conn, s, sets[s.name]) for s in SHAPES}
        log(f"baseline timed: {sum(before.values()) / 1000:.1f}s for one call of each statement")
        oracle = ToolRun("oracle (truth table)", 1, list(workload.ORACLE_INDEXES), 0.0)
        measured: dict[str, Measured] = {}
        by_signature: dict[tuple[str, tuple[str, ...], str | None, str], Measured] = {}
        for r in [oracle, *(r for rs in runs.values() for r in rs)]:
            for ddl, key in zip(r.ddls, r.index_keys(), strict=True):
                if key in measured:
                    continue
                m = measure(dsn, key, ddl, before, sets)
                if m.index is not None and m.index.signature() in by_signature:
                    m = dataclasses.replace(by_signature[m.index.signature()], key=key, ddl=ddl)
                elif m.index is not None:
                    by_signature[m.index.signature()] = m
                measured[key] = m
                log(f"  {key}: {m.note or f'{m.speedup:.1f}x'}")
        phases["timings"] = time.monotonic() - mark
        with connect(dsn) as conn:
            left = set(indexes(conn)) - {e.name for e in existing}
        if left:
            log(f"WARNING: indexes left behind: {sorted(left)}")

    total_s = time.monotonic() - t0
    result = Result(
        started_at=started_at,
        total_s=total_s,
        phases=phases,
        host={
            **host,
            "load_before": " ".join(f"{x:.2f}" for x in load_before),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "postgres_debian": server_version,
            "postgres_kb": kb_version,
            "extensions": ", ".join(f"{k} {v}" for k, v in sorted(ext_versions.items())),
            "db_bytes": f"{db_bytes / 2**30:.2f} GiB",
        },
        before=before,
        oracle=oracle,
        runs=runs,
        measured=measured,
        existing=existing,
        quals=quals,
    )
    print(result.document(markdown=False))
    if args.markdown:
        args.markdown.write_text(result.document(markdown=True))
    if args.json:
        args.json.write_text(json.dumps(result.as_json(), indent=2, default=str))
    return 0


# -- the result ----------------------------------------------------------------------------------------------

PR_ACTIONS = ("pr_review", "pr_merge")


@dataclasses.dataclass
class RunScore:
    """One tool run against the truth table and the bench's own timings."""

    score: scoring.Score
    unbuilt: list[Measured]  # DDL that failed or created nothing
    distinct: list[Measured]  # distinct built indexes

    @property
    def false(self) -> int:
        return len(self.score.false) + len(self.unbuilt)

    @property
    def weak(self) -> list[Measured]:
        return [m for m in self.distinct if m.speedup < 1.5]

    @property
    def strong(self) -> list[Measured]:
        return [m for m in self.distinct if m.speedup >= 5]


@dataclasses.dataclass
class Result:
    started_at: datetime
    total_s: float
    phases: dict[str, float]
    host: dict[str, str]
    before: dict[str, float]
    oracle: ToolRun
    runs: dict[str, list[ToolRun]]
    measured: dict[str, Measured]
    existing: list[IndexDef]
    quals: list[list[Any]]

    def score(self, run: ToolRun) -> RunScore:
        ms = [self.measured[k] for k in run.index_keys()]
        built = [m.index for m in ms if m.index is not None]
        distinct: dict[tuple[str, tuple[str, ...], str | None, str], Measured] = {}
        for m in ms:
            if m.index is not None:
                distinct.setdefault(m.index.signature(), m)
        return RunScore(
            scoring.score(run.tool, built, self.existing, SHAPES),
            [m for m in ms if m.index is None],
            list(distinct.values()),
        )

    @staticmethod
    def same_every_run(runs: list[ToolRun]) -> bool:
        return len({tuple(sorted(set(r.index_keys()))) for r in runs}) == 1

    @staticmethod
    def actions(run: ToolRun) -> dict[str, tuple[str, str, float]]:
        """pg-architect only: statement -> (index key, action, confidence) of each recommended index."""
        out: dict[str, tuple[str, str, float]] = {}
        for q in (run.detail.get("report") or {}).get("slow_queries") or []:
            rec = q.get("recommendation")
            shape = shape_of(q["query"])
            if q["status"] == "recommended" and rec and rec["type"] == "index" and shape is not None:
                out[shape.name] = (ddl_key(rec["sql"]), rec["action"], rec["confidence"])
        return out

    # -- tables --

    def summary(self, md: bool) -> str:
        missing = workload.shapes_of("missing")
        rows: list[list[object]] = []
        for tool, runs in [("oracle (truth table)", [self.oracle]), *self.runs.items()]:
            scores = [self.score(r) for r in runs]

            def cell(values: list[object]) -> str:
                return str(values[0]) if len(set(values)) == 1 else " / ".join(str(v) for v in values)

            same = self.same_every_run(runs)
            if same and tool.startswith("pg-architect") and len(runs) > 1:
                # the same index and action for each statement (the confidence moves with the timings' noise)
                same = len({tuple(sorted((k, v[:2]) for k, v in self.actions(r).items())) for r in runs}) == 1
            rows.append(
                [
                    tool,
                    len(runs) if tool != "oracle (truth table)" else "-",
                    ("yes" if same else "NO") if len(runs) > 1 else "-",
                    cell([len(s.distinct) for s in scores]),
                    cell([f"{s.score.recall[0]}/{len(missing)}" for s in scores]),
                    cell([s.score.partial for s in scores]),
                    cell([s.false for s in scores]),
                    cell([len(s.weak) for s in scores]),
                    cell([len(s.strong) for s in scores]),
                    cell([f"{r.wall_s:.1f} s" for r in runs]) if tool != "oracle (truth table)" else "-",
                ]
            )
        return table(
            [
                "tool",
                "runs",
                "same recommendations every run",
                "distinct indexes",
                f"recall (exact, of {len(missing)})",
                "partly served",
                "false recs",
                "measuring < 1.5x",
                "measuring >= 5x",
                "wall time per run",
            ],
            rows,
            markdown=md,
        )

    def per_statement(self, md: bool) -> str:
        tools = list(self.runs)
        firsts = {t: self.score(self.runs[t][0]) for t in tools}
        oracle = self.score(self.oracle)
        rows = []
        for s in SHAPES:
            cells: list[object] = [s.name, s.kind, s.feature, fmt_ms(self.before[s.name])]
            for sc in [oracle, *firsts.values()]:
                best = max(
                    (
                        m.used_by[s.name][0] / max(m.used_by[s.name][1], 1e-3)
                        for m in sc.distinct
                        if s.name in m.used_by
                    ),
                    default=None,
                )
                verdict = sc.score.per_shape.get(s.name)
                mark = {"exact": "yes", "partial": "partly", "miss": "no"}.get(verdict or "", "")
                cells.append(", ".join(x for x in (mark, f"{best:,.1f}x" if best is not None else "") if x) or "-")
            rows.append(cells)
        return table(
            ["statement", "kind", "what it tests", "before ms", "oracle"] + [f"{t} (run 1)" for t in tools],
            rows,
            markdown=md,
        )

    def per_index(self, md: bool) -> str:
        rows = []
        groups: dict[object, list[str]] = {}
        for key, m in self.measured.items():
            groups.setdefault(m.index.signature() if m.index is not None else key, []).append(key)
        for same in groups.values():
            m = self.measured[same[0]]
            by = []
            for tool, runs in self.runs.items():
                n = sum(1 for r in runs if any(k in r.index_keys() for k in same))
                if n:
                    by.append(f"{tool} {n}/{len(runs)}")
            if any(k in self.oracle.index_keys() for k in same):
                by.insert(0, "oracle")
            used = ", ".join(
                f"{name} {b:,.1f}->{a:,.1f} ms" for name, (b, a) in sorted(m.used_by.items(), key=lambda x: x[0])
            )
            rows.append(
                [
                    m.index.describe() if m.index else _short(m.ddl, 80),
                    m.note or f"{m.speedup:,.1f}x",
                    _short(used, 140) or "no plan reads it",
                    "; ".join(by),
                ]
            )
        return table(
            ["index (as built)", "measured", "statements whose plans read it", "recommended by"], rows, markdown=md
        )

    def confidence(self, md: bool) -> tuple[str, str]:
        """pg-architect's actions against the bench's measurements: the table and the one-line check."""
        rows = []
        checks = []
        for tool, runs in self.runs.items():
            if not tool.startswith("pg-architect"):
                continue
            strong_ok = strong = weak_pr = weak = 0
            for r in runs:
                for shape, (key, action, conf) in sorted(self.actions(r).items()):
                    m = self.measured[key]
                    # The speed-up of the statement it was recommended for (1.0 when that plan does not read it).
                    before, after = m.used_by.get(shape, (1.0, 1.0))
                    x = before / max(after, 1e-3) if m.index is not None else 0.0
                    if x >= 5:
                        strong += 1
                        strong_ok += action in PR_ACTIONS
                    elif x < 1.5:
                        weak += 1
                        weak_pr += action in PR_ACTIONS
                    if r.run == 1:
                        ok = (action in PR_ACTIONS) if x >= 5 else (action not in PR_ACTIONS) if x < 1.5 else None
                        rows.append(
                            [
                                tool,
                                shape,
                                m.index.describe() if m.index else _short(m.ddl, 60),
                                f"{x:,.1f}x" if m.index else m.note,
                                f"{conf:.2f}",
                                action,
                                {True: "ok", False: "WRONG", None: "-"}[ok],
                            ]
                        )
            checks.append(
                f"{tool}, {len(runs)} run(s): {strong_ok} of {strong} recommendations measuring >= 5x reach "
                f"pr_review or pr_merge; {weak_pr} of {weak} measuring under 1.5x do"
            )
        return (
            table(
                ["run", "statement", "index", "measured on that statement", "confidence", "action", "as it should be"],
                rows,
                markdown=md,
            ),
            "\n".join(f"- {c}" for c in checks),
        )

    def one_for_three(self) -> str:
        """The multi-statement case: how many indexes each tool put on invoices, and whether one serves all."""
        trio = [s.name for s in SHAPES if s.name.startswith("invoices_")]
        lines = []
        for tool, runs in self.runs.items():
            sc = self.score(runs[0])
            on = [v for v in sc.score.verdicts if v.index.table == "invoices" and v.duplicate_of is None]
            one = any(set(trio) <= set(v.serves) for v in on)
            lines.append(
                f"- {tool}: {len(on)} index(es) on invoices ("
                + (", ".join(v.index.describe() for v in on) or "none")
                + f"); one of them serves all three: {'yes' if one else 'no'}"
            )
        return "\n".join(lines)

    def document(self, *, markdown: bool) -> str:
        h = "#### " if markdown else "== "
        conf_table, conf_check = self.confidence(markdown)
        falses = []
        for tool, runs in self.runs.items():
            sc = self.score(runs[0])
            falses += [f"- {tool}: {v.index.describe()}: {v.label()}" for v in sc.score.false]
            falses += [f"- {tool}: {_short(m.ddl, 100)}: {m.note}" for m in sc.unbuilt]
            falses += [f"- {tool}: {m.index.describe()} measures {m.speedup:.2f}x" for m in sc.weak if m.index]
        notes = []
        for tool, runs in self.runs.items():
            d = runs[0].detail
            if d.get("whole_workload_error"):
                notes.append(
                    f"- {tool}: its analysis of the whole workload failed ({_short(d['whole_workload_error'], 100)}); "
                    "run again without the statements it fails on alone: "
                    + "; ".join(f"`{_short(e['query'], 90)}` ({_short(e['error'], 90)})" for e in d["excluded"])
                )
            if d.get("error"):
                notes.append(f"- {tool}: failed: {d['error']}")
            report = d.get("report")
            if report:
                statuses: dict[str, int] = {}
                for q in report.get("slow_queries") or []:
                    statuses[q["status"]] = statuses.get(q["status"], 0) + 1
                notes.append(
                    f"- {tool} run 1: {len(report.get('slow_queries') or [])} statements audited: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
                )
        h_ = self.host
        ours = self.runs.get("pg-architect (hypothetical)") or []
        commit = ours[0].detail.get("commit") if ours else "-"
        env = [
            f"- date: {self.started_at:%Y-%m-%d %H:%M} UTC; whole benchmark {self.total_s / 60:.1f} min ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items())
            + ")",
            f"- machine: {h_['nproc']} cores ({h_['cpu']}), {h_['memory']}, Debian {h_['debian']}, "
            f"Python {h_['python']}; load average {h_['load_before']} before, {h_['load_after']} after "
            "(other sessions' tests share the machine)",
            f"- audited server: Debian's PostgreSQL {h_['postgres_debian']} ({h_['extensions']}), "
            f"{h_['db_bytes']}; knowledge bases: embedded PostgreSQL {h_['postgres_kb']}",
            f"- pg-architect commit: {commit}",
            f"- pg-architect: `{audit_command('hypothetical')}`; with the server log: "
            f"`{audit_command('hypothetical', server_log=True)}` (the server logs statements of "
            f"{LOG_MIN_DURATION_MS} ms and more, log_min_duration_statement)",
            "- pg_qualstats: `SELECT pg_qualstats_index_advisor()` (its defaults: min_filter 1000, min_selectivity 30)",
            "- postgres-mcp DTA: `bench/advisor/dta.py` (DatabaseTuningAdvisor, its defaults, a 10,000 MB budget), "
            f"same thresholds: {MIN_CALLS} calls, {MIN_MEAN_MS} ms, {LIMIT} statements",
        ]
        parts = [
            h + "Summary",
            "",
            self.summary(markdown),
            "",
            "Recall: missing-index statements some recommended index serves exactly (truth table, catalog "
            "spelling). Same recommendations: the same set of indexes in every run (pg-architect: also the same "
            "index and action for each statement). False recs: an index that already exists or serves no "
            "statement, or DDL that builds nothing, whatever its action. Measured: every distinct index built "
            "alone on the bench's data; its speed-up is the best before/after ratio over the statements whose "
            "plans read it (fixed parameter sets, fastest of "
            f"{TIMING_REPEATS} after a warm-up). Cells with ' / ' differ between runs (run 1 / run 2 / ...).",
            "",
            h + "pg-architect's confidence against the measured speed-up",
            "",
            conf_check,
            "",
            conf_table,
            "",
            h + "False, unbuildable and weak recommendations (run 1)",
            "",
            "\n".join(falses) or "- none",
            "",
            h + "One index for three statements (invoices)",
            "",
            self.one_for_three(),
            "",
            h + "Per statement (run 1: served?, best measured speed-up of the tool's indexes)",
            "",
            self.per_statement(markdown),
            "",
            h + "Every index recommended, measured",
            "",
            self.per_index(markdown),
            "",
            h + "The tools' runs",
            "",
            "\n".join(notes) or "- nothing to note",
            "",
            h + "Environment",
            "",
            *env,
            "",
        ]
        return "\n".join(parts)

    def as_json(self) -> dict[str, Any]:
        evidence = []
        for tool, runs in self.runs.items():
            for r in runs:
                for q in (r.detail.get("report") or {}).get("slow_queries") or []:
                    rec = q.get("recommendation")
                    if q["status"] != "recommended" or not rec or rec["type"] != "index":
                        continue
                    m = self.measured[ddl_key(rec["sql"])]
                    evidence.append(
                        {
                            "tool": tool,
                            "run": r.run,
                            "statement": (shape_of(q["query"]) or Shape("?", "", "", "", lambda _: ())).name,
                            "sql": rec["sql"],
                            "measurement": rec["measurement"],
                            "confidence": rec["confidence"],
                            "action": rec["action"],
                            "reasoning": rec["reasoning"],
                            "bench_speedup": m.speedup if m.index is not None else None,
                        }
                    )
        return {
            "started_at": self.started_at.isoformat(),
            "host": self.host,
            "phases": self.phases,
            "before_ms": self.before,
            "runs": {t: [dataclasses.asdict(r) for r in rs] for t, rs in self.runs.items()},
            "measured": {
                k: {
                    "ddl": m.ddl,
                    "index": m.index.describe() if m.index else None,
                    "note": m.note,
                    "speedup": m.speedup,
                    "used_by": m.used_by,
                    "build_s": m.build_s,
                }
                for k, m in self.measured.items()
            },
            "existing": [e.describe() for e in self.existing],
            "pg_qualstats_quals": self.quals,
            "pg_architect_evidence": evidence,
        }


def fmt_ms(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
