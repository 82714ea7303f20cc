"""pg-architect's advisor against pg_qualstats_index_advisor() on one workload, in one run, on one server.

1. Debian's PostgreSQL (pg_stat_statements, pg_qualstats sampling every statement, hypopg) in a
   throwaway data directory, and an embedded PostgreSQL 18 (pgvector) for the knowledge bases.
2. Load about 1.3 GB (bench.advisor.workload) and record the workload: 20 statements, 390 calls,
   with bound parameters. Then create the index the DBA "added last Monday" (customers_phone_idx).
3. Ask both tools: ``pg_qualstats_index_advisor()``, then ``pg-architect audit`` (auto mode, which picks
   hypothetical costs because hypopg is installed; then, unless ``--no-rollback-build``, again with
   measurement forced to rollback_build, each with a fresh knowledge base).
4. Score each tool's indexes against the truth table (bench.advisor.scoring) and time the workload
   with fixed parameter sets: before, with the truth table's own indexes (the oracle), and with each
   tool's indexes (built from the tool's DDL as printed, read back from the catalog, dropped after).

Everything runs on loopback in temporary directories removed at the end, also on Ctrl-C or SIGTERM.
Run from the repository root (as root, Debian's server runs as the ``postgres`` user):

    python -m bench.advisor.run [--update-benchmarks] [--no-rollback-build] [--json FILE]
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
from bench.advisor.workload import SHAPES, Shape
from pg_architect.core.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[2]
DB = "shop"
MIN_CALLS, MIN_MEAN_MS, LIMIT = 10, 2, 20
WORKLOAD_SEED, TIMING_SEED = 20240601, 7
TIMING_SETS, TIMING_REPEATS = 5, 2
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
                    create, fill = workload.TABLES[table]
                    with conn.transaction():  # created and filled together: no WAL with wal_level=minimal
                        conn.execute(create)
                        conn.execute(fill)
                    log(f"  {table}: loaded in {time.monotonic() - started:.0f}s")
                for table in tables:
                    conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
                    if table == "customers":
                        for ddl in workload.EXISTING_INDEXES:
                            conn.execute(ddl)
                    conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
                log(f"  {', '.join(tables)}: keys, indexes, vacuum done")

        return job

    run_parallel([group(g) for g in workload.LOAD_GROUPS])


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
    return elapsed


def time_workload(dsn: str, sets: dict[str, list[tuple[Any, ...]]]) -> dict[str, float]:
    """Mean ms per call of each shape: per parameter set the fastest of TIMING_REPEATS after one warm-up."""
    out: dict[str, float] = {}
    with connect(dsn) as conn:
        for shape in SHAPES:
            best = []
            for params in sets[shape.name]:
                execute(conn, shape, params)
                best.append(min(execute(conn, shape, params) for _ in range(TIMING_REPEATS)))
            out[shape.name] = sum(best) / len(best)
    return out


# -- catalog --------------------------------------------------------------------------------------------

INDEXES_SQL = """
SELECT i.indexrelid::regclass::text AS name, c.relname AS table, am.amname AS method,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS keys,
       pg_get_expr(i.indpred, i.indrelid, true) AS where_, pg_relation_size(i.indexrelid) AS size,
       pg_get_indexdef(i.indexrelid) AS sql
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' ORDER BY 1"""


def indexes(conn: psycopg.Connection[Any]) -> dict[str, IndexDef]:
    return {
        name: IndexDef(name, table, tuple(keys), where, method, size, sql)
        for name, table, method, keys, where, size, sql in conn.execute(INDEXES_SQL).fetchall()
    }


@dataclasses.dataclass
class Built:
    """One tool's DDL, built for the timing run."""

    config: str
    created: list[IndexDef]
    per_ddl: list[tuple[str, IndexDef | None, str]]  # (ddl, index it created, note)
    build_s: float
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def build(dsn: str, config: str, ddls: Sequence[str]) -> Built:
    started = time.monotonic()
    per_ddl: list[tuple[str, IndexDef | None, str]] = []
    with connect(dsn) as conn:
        for ddl in ddls:
            before = indexes(conn)
            try:
                conn.execute(ddl)
                note = ""
            except psycopg.Error as exc:
                note = f"failed: {str(exc).splitlines()[0]}"
            after = indexes(conn)
            new = [after[n] for n in after if n not in before]
            if not new and not note:
                note = "created nothing (an index of that name exists)"
            per_ddl.append((ddl, new[0] if new else None, note))
        created = [ix for _, ix, _ in per_ddl if ix is not None]
        # Expression indexes have no statistics until their table is analysed.
        for table in sorted({ix.table for ix in created if any("(" in k for k in ix.keys)}):
            conn.execute(f"ANALYZE {table}")
    return Built(config, created, per_ddl, time.monotonic() - started)


def drop(dsn: str, built: Built) -> None:
    with connect(dsn) as conn:
        for ix in built.created:
            conn.execute(f"DROP INDEX IF EXISTS {ix.name}")


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


# -- the tools -----------------------------------------------------------------------------------------


def qualstats_advice(dsn: str) -> tuple[dict[str, Any], float]:
    with connect(dsn) as conn:
        started = time.monotonic()
        doc = conn.execute("SELECT pg_qualstats_index_advisor()").fetchone()[0]  # type: ignore[index]
        return doc, time.monotonic() - started


@dataclasses.dataclass
class AuditRun:
    label: str
    mode: str
    command: str
    wall_s: float
    report: dict[str, Any]
    progress: list[str]
    commit: str


def git_commit() -> str:
    """The commit the auditor runs from, and whether its code differs from it (others commit meanwhile)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "auditor", "exporter")
    return git("rev-parse", "--short", "HEAD") + (
        " (with uncommitted changes in auditor/ or exporter/)" if dirty else ""
    )


def audit(dsn: str, kb_dsn: str, mode: str, label: str) -> AuditRun:
    env = {
        **os.environ,
        "PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn,
        "PG_ARCHITECT_MEASUREMENT_MODE": mode,
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
    command = (
        f"PG_ARCHITECT_DATABASE_KB_DSN=<kb> PG_ARCHITECT_MEASUREMENT_MODE={mode}"
        + (
            " PG_ARCHITECT_MEASUREMENT_MAX_TABLE_BYTES=8589934592 PG_ARCHITECT_MEASUREMENT_MAX_BLOCKING_MS=600000"
            if mode == "rollback_build"
            else ""
        )
        + " python -m pg_architect audit --dsn <shop> --config /dev/null --format json "
        f"--min-calls {MIN_CALLS} --min-mean-ms {MIN_MEAN_MS} --limit {LIMIT}"
    )
    commit = git_commit()
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=1800)
    except BaseException:
        proc.terminate()
        proc.wait(30)
        raise
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"audit ({mode}) exited {proc.returncode}: {err.strip()[-2000:]}")
    if git_commit() != commit:
        commit += f", changed to {git_commit()} while it ran"
    return AuditRun(label, mode, command, wall, json.loads(out), err.splitlines(), commit)


# -- matching statements to shapes ------------------------------------------------------------------------

_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\d+|%s|(?<![\w.])\d+(?:\.\d+)?")


def _normal(text: str) -> str:
    return " ".join(_LITERAL.sub("?", text).lower().split())


def shape_of(query: str) -> Shape | None:
    key = _normal(query)
    return next((s for s in SHAPES if _normal(s.sql) == key), None)


# -- the report ------------------------------------------------------------------------------------------


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


def fmt_ms(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def weighted(timings: dict[str, float]) -> float:
    """Workload time in the recorded mix: each statement's mean times its number of calls."""
    return sum(timings[s.name] * s.calls for s in SHAPES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-benchmarks", action="store_true", help="write the Advisor section of BENCHMARKS.md")
    parser.add_argument("--no-rollback-build", action="store_true", help="skip the forced rollback_build audit")
    parser.add_argument("--json", type=Path, help="also write every result (reports, DDL, timings) to this file")
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


def _bench(args: argparse.Namespace, tmp: Path) -> int:
    started_at = datetime.now(UTC)
    host = machine()
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    with servers(tmp) as (debian, kb):
        with connect(debian.dsn()) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
            server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        with connect(kb.dsn()) as conn:
            kb_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            for name in ("kb_auto", "kb_rollback"):
                conn.execute(f"CREATE DATABASE {name}")
        dsn = debian.dsn(DB)
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
            table_bytes = dict(
                conn.execute(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
                    "AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC"
                ).fetchall()
            )
        phases["load"] = time.monotonic() - mark
        log(f"database {db_bytes / 2**30:.2f} GiB loaded in {phases['load']:.0f}s")

        mark = time.monotonic()
        log(f"recording the workload ({sum(s.calls for s in SHAPES)} calls)")
        phases["workload"] = record_workload(dsn)
        with connect(dsn) as conn:
            for ddl in workload.LATE_INDEXES:
                conn.execute(ddl)
            stats = conn.execute(
                "SELECT query, sum(calls)::bigint, sum(total_exec_time) / sum(calls), count(*) "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " GROUP BY query"
            ).fetchall()
            existing = list(indexes(conn).values())
            quals = [list(r) for r in conn.execute(QUALSTATS_SQL).fetchall()]
        recorded: dict[str, dict[str, float]] = {}
        for query, calls, mean, entries in stats:
            shape = shape_of(query)
            if shape is not None:
                r = recorded.setdefault(shape.name, {"calls": 0, "total_ms": 0.0, "entries": 0})
                r["calls"] += calls
                r["total_ms"] += calls * mean
                r["entries"] += entries
        log(f"workload recorded in {phases['workload']:.0f}s; late index created")

        log("pg_qualstats_index_advisor()")
        qs_doc, qs_s = qualstats_advice(dsn)
        log(f"  {len(qs_doc.get('indexes') or [])} index(es) in {qs_s:.2f}s")

        audits = [audit(dsn, kb.dsn("kb_auto"), "auto", "pg-architect (auto)")]
        log(f"  audit auto: {audits[0].wall_s:.1f}s")
        if not args.no_rollback_build:
            audits.append(audit(dsn, kb.dsn("kb_rollback"), "rollback_build", "pg-architect (rollback_build)"))
            log(f"  audit rollback_build: {audits[1].wall_s:.1f}s")

        # -- build each configuration, time it, score it -------------------------------------------------
        sets = workload.timing_sets(TIMING_SEED, TIMING_SETS)
        configs: list[tuple[str, list[str]]] = [("baseline", [])]
        configs.append(("oracle (truth table)", list(workload.ORACLE_INDEXES)))
        for a in audits:
            configs.append(
                (
                    a.label,
                    [
                        q["recommendation"]["sql"]
                        for q in a.report["slow_queries"]
                        if q["status"] == "recommended" and q.get("recommendation")
                    ],
                )
            )
        configs.append(("pg_qualstats", list(qs_doc.get("indexes") or [])))
        built: dict[str, Built] = {}
        mark = time.monotonic()
        for name, ddls in configs:
            log(f"timing: {name} ({len(ddls)} DDL)")
            b = build(dsn, name, ddls)
            try:
                b.timings = time_workload(dsn, sets)
            finally:
                drop(dsn, b)
            built[name] = b
            log(f"  built in {b.build_s:.0f}s, workload {weighted(b.timings) / 1000:.1f}s")
        log("timing: baseline, again (timing noise)")
        again = Built("baseline, again", [], [], 0.0, time_workload(dsn, sets))
        log(f"  workload {weighted(again.timings) / 1000:.1f}s")
        phases["timings"] = time.monotonic() - mark
        with connect(dsn) as conn:
            left = set(indexes(conn)) - {e.name for e in existing}
        if left:
            log(f"WARNING: indexes left behind: {sorted(left)}")

    scores = {name: scoring.score(name, b.created, existing, SHAPES) for name, b in built.items() if name != "baseline"}
    total_s = time.monotonic() - t0
    results = summarise(
        started_at=started_at,
        total_s=total_s,
        phases=phases,
        machine_info={
            **host,
            "postgres_debian": server_version,
            "postgres_kb": kb_version,
            "extensions": ", ".join(f"{k} {v}" for k, v in sorted(ext_versions.items())),
        },
        db_bytes=db_bytes,
        table_bytes=table_bytes,
        recorded=recorded,
        qs_doc=qs_doc,
        qs_s=qs_s,
        quals=quals,
        again=again,
        audits=audits,
        built=built,
        scores=scores,
        existing=existing,
    )
    print(results["text"])
    if args.json:
        args.json.write_text(json.dumps(results["json"], indent=2, default=str))
    if args.update_benchmarks:
        update_benchmarks(results["markdown"])
        log("BENCHMARKS.md: Advisor section written")
    return 0


# -- summarising -------------------------------------------------------------------------------------------

SECTION = "## Advisor"


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


def _by_shape(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for q in report.get("slow_queries") or []:
        shape = shape_of(q["query"])
        if shape is not None:
            out[shape.name] = q
    return out


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _mark(status: str) -> str:
    return {"exact": "yes", "partial": "partly", "miss": "no"}[status]


def summarise(
    *,
    started_at: datetime,
    total_s: float,
    phases: dict[str, float],
    machine_info: dict[str, str],
    db_bytes: int,
    table_bytes: dict[str, int],
    recorded: dict[str, dict[str, float]],
    qs_doc: dict[str, Any],
    qs_s: float,
    quals: list[list[Any]],
    again: Built,
    audits: list[AuditRun],
    built: dict[str, Built],
    scores: dict[str, scoring.Score],
    existing: list[IndexDef],
) -> dict[str, Any]:
    base = built["baseline"].timings
    base_total = weighted(base)
    missing = workload.shapes_of("missing")
    wall = {a.label: a.wall_s for a in audits} | {"pg_qualstats": qs_s}
    audited = {a.label: _by_shape(a.report) for a in audits}

    missing_names = {m.name for m in missing}

    def missing_time(timings: dict[str, float]) -> float:
        return sum(timings[s.name] * s.calls for s in SHAPES if s.name in missing_names)

    oracle = built["oracle (truth table)"].timings

    def summary(md: bool) -> str:
        def row(name: str, b: Built, sc: scoring.Score | None) -> list[object]:
            total = weighted(b.timings)
            share = (base_total - total) / (base_total - weighted(oracle)) * 100 if sc is not None else None
            cells: list[object] = [name]
            if sc is None:
                cells += ["-"] * 7
            else:
                hit, of = sc.recall
                failed = sum(1 for _, _, note in b.per_ddl if note.startswith("failed"))
                cells += [
                    f"{len(b.per_ddl)} ({sc.distinct} distinct)" + (f", {failed} failed" if failed else ""),
                    f"{hit}/{of}",
                    sc.partial,
                    len(sc.false),
                    sc.duplicates,
                    sc.redundant,
                    f"{sum(ix.size_bytes for ix in b.created) / 2**20:,.0f} MiB",
                ]
            cells += [
                f"{total / 1000:.1f} s",
                f"{base_total / total:.1f}x",
                f"{missing_time(b.timings) / 1000:.1f} s",
                f"{share:.0f} %" if share is not None else "-",
                f"{wall[name]:.1f} s" if name in wall else "-",
            ]
            return cells

        rows = [row("baseline (no new index)", built["baseline"], None)]
        rows += [row(name, built[name], sc) for name, sc in scores.items()]
        rows.append(row("baseline, timed again (noise)", again, None))
        return table(
            [
                "configuration",
                "indexes recommended",
                f"recall (exact, of {len(missing)})",
                "partly served",
                "false recs",
                "duplicates (built twice)",
                "redundant",
                "index size",
                "workload time",
                "speed-up",
                f"time of the {len(missing)} missing-index statements",
                "share of the oracle's gain",
                "tool wall time",
            ],
            rows,
            markdown=md,
        )

    def recorded_quals(md: bool) -> str:
        rows = [
            [qual, {"f": "filter", "i": "index"}.get(ev, ev), entries, occ, avg_filter, f"{sel} %"]
            for qual, ev, entries, occ, avg_filter, sel in quals
        ]
        return table(
            ["qual", "evaluated as", "pg_qualstats entries", "occurrences", "avg rows filtered", "avg selectivity"],
            rows,
            markdown=md,
        )

    def per_shape(md: bool) -> str:
        ours = audits[0].label
        rows = []
        for s in SHAPES:
            rec = recorded.get(s.name, {})
            q = audited[ours].get(s.name)
            if q is None:
                ours_cell = "not audited"
            elif q["status"] == "recommended":
                m = q["recommendation"]["measurement"]
                on = q["recommendation"]["sql"].split(" ON ", 1)[-1].rstrip(";")
                ours_cell = f"{_short(on, 60)} ({m['gain_percent']:.0f} %)"
            else:
                ours_cell = f"{q['status']}: {_short(q.get('skip_reason'), 70)}"
            cells: list[object] = [
                s.name,
                s.kind,
                f"{int(rec.get('calls', 0))}",
                fmt_ms(rec.get("total_ms", 0) / max(rec.get("calls", 1), 1)),
            ]
            cells += [fmt_ms(base[s.name]), fmt_ms(built["oracle (truth table)"].timings[s.name])]
            for name in scores:
                if name.startswith("oracle"):
                    continue
                verdict = scores[name].per_shape.get(s.name)
                cell = fmt_ms(built[name].timings[s.name])
                if verdict is not None:
                    cell = f"{_mark(verdict)}, {cell}"
                cells.append(cell)
            cells.append(ours_cell)
            rows.append(cells)
        tools = [n for n in scores if not n.startswith("oracle")]
        return table(
            ["statement", "kind", "calls", "recorded mean ms", "before ms", "oracle ms"]
            + [f"{n}: served by its indexes?, ms" for n in tools]
            + [f"{ours}: per-statement result"],
            rows,
            markdown=md,
        )

    def verdicts(md: bool) -> str:
        out = []
        for name, sc in scores.items():
            if name.startswith("oracle"):
                continue
            rows = []
            for ddl, ix, note in built[name].per_ddl:
                v = next((v for v in sc.verdicts if ix is not None and v.index.name == ix.name), None)
                rows.append([_short(ddl, 110), ix.describe() if ix else "-", v.label() if v else note])
            out.append(f"{'#### ' if md else ''}{name}: every recommended index\n")
            out.append(
                table(["DDL as printed by the tool", "as built", "verdict"], rows, markdown=md) if rows else "(none)"
            )
            out.append("")
        return "\n".join(out)

    def truth(md: bool) -> str:
        rows = [
            [s.name, s.kind, s.feature, f"`{s.sql}`" if md else s.sql, g, p]
            for s, (_, _, _, g, p) in zip(SHAPES, workload.truth_rows(), strict=True)
        ]
        return table(
            ["statement", "kind", "what it tests", "SQL (bound parameters)", "known-good index", "partly serves"],
            rows,
            markdown=md,
        )

    def audit_timing(md: bool) -> str:
        rows = []
        for a in audits:
            r = a.report
            statuses: dict[str, int] = {}
            for q in r.get("slow_queries") or []:
                statuses[q["status"]] = statuses.get(q["status"], 0) + 1
            methods = sorted(
                {
                    (q.get("recommendation") or {}).get("measurement", {}).get("method")
                    for q in r.get("slow_queries") or []
                    if q.get("recommendation")
                }
                - {None}
            )
            per = [float(m.group(1)) for line in a.progress if (m := re.search(r"\((\d+(?:\.\d+)?)s\)\s*$", line))]
            rows.append(
                [
                    a.label,
                    ", ".join(methods) or "-",
                    len(r.get("slow_queries") or []),
                    ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
                    f"{a.wall_s:.1f} s",
                    f"{max(per):.1f} s" if per else "-",
                    "yes" if a.wall_s < 60 else "NO",
                ]
            )
        return table(
            [
                "audit",
                "measurement",
                "statements",
                "outcome",
                "wall time (whole command)",
                "slowest statement",
                "< 60 s",
            ],
            rows,
            markdown=md,
        )

    misses = []
    ours_label = audits[0].label
    for s in missing:
        q = audited[ours_label].get(s.name) or {}
        own = (q.get("recommendation") or {}).get("sql") if q.get("status") == "recommended" else None
        own_ix = next(
            (ix for ddl, ix, _ in built[ours_label].per_ddl if ddl == own and ix is not None),
            None,
        )
        if own_ix is not None and any(scoring.matches(own_ix, p) for p in s.good):
            continue
        globally = scores[ours_label].per_shape[s.name]
        what = own or q.get("skip_reason")
        misses.append(
            f"- `{s.name}`: {q.get('status', 'not audited')}: {_short(what, 300)}"
            + (
                f" (the workload still got a{'n exact' if globally == 'exact' else ' partial'} index for it "
                "from another statement's recommendation)"
                if globally != "miss"
                else ""
            )
        )
    for v in scores[ours_label].false:
        misses.append(f"- false recommendation: {v.index.describe()}: {v.label()}")

    date = started_at.strftime("%Y-%m-%d %H:%M UTC")
    m = machine_info
    env_lines = [
        f"- date: {date}; whole benchmark {total_s / 60:.1f} min (load {phases['load']:.0f} s, recorded workload "
        f"{phases['workload']:.0f} s, timings {phases['timings']:.0f} s)",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']}, Debian {m['debian']}, kernel {m['kernel']}, "
        f"Python {m['python']}",
        "- pg-architect commit: " + "; ".join(f"{a.label}: {a.commit}" for a in audits),
        f"- audited server: Debian's PostgreSQL {m['postgres_debian']} ({m['extensions']}); knowledge base: "
        f"embedded PostgreSQL {m['postgres_kb']} with pgvector",
        f"- data: {db_bytes / 2**30:.2f} GiB ("
        + ", ".join(f"{t} {b / 2**20:,.0f} MiB" for t, b in table_bytes.items())
        + "), cached in shared_buffers",
        "- server settings: " + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items()),
    ]
    commands = ["python -m bench.advisor.run --update-benchmarks"] + [f"  {a.label}: `{a.command}`" for a in audits]
    commands.append(
        "  pg_qualstats: `SELECT pg_qualstats_index_advisor()` (defaults: min_filter 1000, min_selectivity 30)"
    )

    def document(md: bool) -> str:
        h = "### " if md else "== "
        parts = [
            SECTION if md else "ADVISOR BENCHMARK",
            "",
            "pg-architect's audit and `pg_qualstats_index_advisor()` on the same recorded workload, same server, "
            "same data, same run (`bench/advisor/`). Recall: missing-index statements whose known-good index "
            "the tool recommended (exactly: right columns in a serving order; partly: a weaker index that "
            "still helps). False recs: recommended indexes that already exist or serve no statement. "
            "Workload time: each statement's mean (fixed parameter sets, fastest of "
            f"{TIMING_REPEATS} after a warm-up) times its calls in the recorded workload, with the tool's "
            "indexes built from its DDL. The machine is a shared 2-core VM: the last row times the baseline "
            "again, and the difference between the two baseline rows is the timing noise of this run.",
            "",
            h + "Summary",
            "",
            summary(md),
            "",
            h + "Audit wall time (target: 20 statements on >= 1 GB in under 60 s on this 2-core machine)",
            "",
            audit_timing(md),
            "",
            h + "Per statement",
            "",
            'Times are each statement\'s mean in ms over the fixed parameter sets. "Served by its indexes?" '
            "asks whether the tool's whole set of indexes serves the statement (the truth table's rule); the "
            "last column is what pg-architect's audit concluded for that statement itself.",
            "",
            per_shape(md),
            "",
            h + "Where pg-architect (auto) fell short",
            "",
            "\n".join(misses) or "- nothing: every known-good index found, no false recommendation",
            "",
            h + "What pg_qualstats recorded (why it found what it found)",
            "",
            recorded_quals(md),
            "",
            "Its advisor keeps quals with avg rows filtered >= 1000 and avg selectivity >= 30 %; expressions, "
            "IS NULL, join quals and ORs are not recorded.",
            "",
            h + "Recommended indexes and verdicts",
            "",
            verdicts(md),
            h + "Truth table",
            "",
            truth(md),
            "",
            "Matching rule: each recommended index is built and read back from the catalog "
            "(`pg_get_indexdef(index, k, true)`, `pg_get_expr(indpred)`), directions dropped. It serves a "
            "statement exactly when its leading keys match a known-good pattern (keys inside `{a|b}` in any "
            "order, extra trailing keys allowed, same partial predicate or none), partly when they match a "
            "partial pattern instead. It is false when an index that existed when the tool ran has the same "
            "leading keys (and no narrower predicate), or when it serves no statement at all. A repeated "
            "index counts once (duplicates column: an identical index built twice; pg-architect's `IF NOT EXISTS` "
            "DDL for the same index recommended for two statements builds it once).",
            "",
            h + "Environment and command",
            "",
            *env_lines,
            "",
            *(f"- {c}" if not c.startswith("  ") else f"  - {c.strip()}" for c in commands),
            "",
        ]
        return "\n".join(parts)

    return {
        "text": document(False),
        "markdown": document(True),
        "json": {
            "started_at": started_at.isoformat(),
            "machine": machine_info,
            "db_bytes": db_bytes,
            "table_bytes": table_bytes,
            "recorded": recorded,
            "pg_qualstats": {"output": qs_doc, "seconds": qs_s, "recorded_quals": quals},
            "baseline_again_ms": again.timings,
            "audits": [dataclasses.asdict(a) for a in audits],
            "configs": {
                name: {
                    "build_s": b.build_s,
                    "timings_ms": b.timings,
                    "per_ddl": [(ddl, ix.describe() if ix else None, note) for ddl, ix, note in b.per_ddl],
                }
                for name, b in built.items()
            },
            "scores": {
                name: {
                    "per_shape": sc.per_shape,
                    "verdicts": [(v.index.describe(), v.label()) for v in sc.verdicts],
                }
                for name, sc in scores.items()
            },
            "existing_indexes": [e.describe() for e in existing],
        },
    }


def update_benchmarks(section: str) -> None:
    """Replace (or append) the ``## Advisor`` section of BENCHMARKS.md, keeping every other section."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    try:
        start = lines.index(SECTION)
    except ValueError:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = (
            "\n".join(
                [*lines[:start], *section.rstrip("\n").splitlines(), *([""] if end < len(lines) else []), *lines[end:]]
            )
            + "\n"
        )
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
