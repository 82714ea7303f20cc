"""``pg-architect demo``: a shop database with real slow queries, on the embedded PostgreSQL.

The schema lacks the indexes its queries need (orders by customer, a case-insensitive e-mail look-up,
a work queue, a recent-orders report), has a statement only a rewrite fixes (``date(created_at) = $1`` hides
an indexed column), and statements nothing can help (whole-table aggregates), so one audit shows measured
index recommendations, a verified rewrite and an honest "nothing to do".
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path

from pg_architect.core import db
from pg_architect.core.config import Config

DEMO_DB = "pgarch_demo"
# The demo owns its database: loading a million rows may take minutes on a busy machine.
DEMO_TIMEOUTS = db.Timeouts(connect_s=10, statement_ms=600_000, lock_ms=30_000, idle_in_transaction_ms=60_000)

SCHEMA = """
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL, name text NOT NULL, country text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL, status text NOT NULL, total numeric(10, 2) NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL, run_at timestamptz NOT NULL, finished_at timestamptz, payload text NOT NULL);
INSERT INTO customers (email, name, country, created_at)
SELECT (CASE WHEN g %% 3 = 0 THEN 'User' ELSE 'user' END) || g || '@Example.com', 'Customer ' || g,
       (ARRAY['VN', 'US', 'DE', 'FR', 'JP', 'BR', 'IN', 'GB'])[1 + g %% 8], now() - (g %% 1000) * interval '1 day'
FROM generate_series(1, %(customers)s) g;
INSERT INTO orders (customer_id, status, total, created_at)
SELECT 1 + (hashint8(g) & 2147483647) %% %(customers)s,
       CASE WHEN g %% 100 < 90 THEN 'delivered' WHEN g %% 100 < 95 THEN 'shipped' WHEN g %% 100 < 99 THEN 'pending'
            ELSE 'cancelled' END,
       (g %% 50000) / 100.0, now() - ((hashint8(g + 7) & 2147483647) %% 31536000) * interval '1 second'
FROM generate_series(1, %(orders)s) g;
CREATE INDEX customers_created_at ON customers (created_at);
INSERT INTO jobs (queue, run_at, finished_at, payload)
SELECT (ARRAY['email', 'billing', 'export'])[1 + g %% 3], now() - (g %% 86400) * interval '1 second',
       CASE WHEN g %% 200 = 0 THEN NULL ELSE now() END, repeat('x', 50)
FROM generate_series(1, %(jobs)s) g;
ANALYZE;
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    sql: str
    make_params: Callable[[random.Random], tuple[object, ...]]
    calls: int


def workload(customers: int, calls: int) -> list[Shape]:
    def customer(r: random.Random) -> tuple[object, ...]:
        return (r.randint(1, customers),)

    def email(r: random.Random) -> tuple[object, ...]:
        return (f"USER{r.randint(1, customers)}@example.COM",)

    def signup_day(r: random.Random) -> tuple[object, ...]:
        return (datetime.date.today() - datetime.timedelta(days=r.randint(0, 999)),)

    return [
        Shape(
            "SELECT id, status, total, created_at FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 20",
            customer,
            calls,
        ),
        Shape("SELECT id, name FROM customers WHERE lower(email) = lower(%s)", email, calls),
        Shape("SELECT id, payload FROM jobs WHERE finished_at IS NULL ORDER BY run_at LIMIT 10", lambda r: (), calls),
        Shape(
            "SELECT count(*), sum(total) FROM orders WHERE created_at >= now() - interval '2 days'", lambda r: (), calls
        ),
        # Only a rewrite helps: date() hides the indexed created_at (and date(timestamptz) cannot be indexed).
        Shape("SELECT id, name, email FROM customers WHERE date(created_at) = %s", signup_day, calls),
        # Fast: the same index, used.
        Shape(
            "SELECT count(*) FROM customers WHERE created_at >= now() - interval '1 day'", lambda r: (), calls
        ),
        # Decoys: whole-table aggregates, no index helps them.
        Shape("SELECT country, count(*) FROM customers GROUP BY country", lambda r: (), calls),
        Shape("SELECT status, count(*), avg(total) FROM orders GROUP BY status", lambda r: (), max(calls // 2, 1)),
        # Fast: a primary-key look-up.
        Shape("SELECT name, email FROM customers WHERE id = %s", customer, calls * 5),
    ]


def load(
    admin_dsn: str,
    dsn_for: Callable[[str], str],
    *,
    customers: int = 200_000,
    orders: int = 1_000_000,
    jobs: int = 300_000,
    progress: Callable[[str], None] = print,
    name: str = DEMO_DB,
    reset_statements: bool = True,
    knowledge_base: bool = True,
) -> str:
    """(Re)create the demo database and its data; returns its DSN."""
    with db.connect(admin_dsn, db.Role.DEMO, DEMO_TIMEOUTS) as conn:
        conn.execute(db.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db.Identifier(name)))
        conn.execute(db.SQL("CREATE DATABASE {}").format(db.Identifier(name)))
    dsn = dsn_for(name)
    started = time.monotonic()
    with db.connect(dsn, db.Role.DEMO, DEMO_TIMEOUTS) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if knowledge_base:  # the demo keeps its knowledge base in the same database
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"customers": customers, "orders": orders, "jobs": jobs})
        if reset_statements:
            conn.execute("SELECT pg_stat_statements_reset()")
    progress(f"loaded {customers:,} customers, {orders:,} orders, {jobs:,} jobs in {time.monotonic() - started:.1f}s")
    return dsn


def run_workload(
    dsn: str, shapes: list[Shape], *, threads: int = 2, seed: int = 1, stop: threading.Event | None = None
) -> int:
    """Run every shape's calls, shuffled, over ``threads`` connections; returns the statements run."""
    rng = random.Random(seed)
    plan = [s for s in shapes for _ in range(s.calls)]
    rng.shuffle(plan)
    counts = [0] * threads

    def worker(n: int) -> None:
        local = random.Random(seed + n)
        with db.connect(dsn, db.Role.DEMO, DEMO_TIMEOUTS) as conn:
            for shape in plan[n::threads]:
                if stop is not None and stop.is_set():
                    return
                conn.execute(shape.sql, shape.make_params(local))
                counts[n] += 1

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts)


def demo_files(data_dir: Path) -> Path:
    """Where the demo keeps what it makes beside the server's data: the migrations repository, the report."""
    return data_dir.parent / "demo"


def loaded(admin_dsn: str, dsn_for: Callable[[str], str], name: str = DEMO_DB) -> bool:
    """Whether an earlier demo left its database with data and a knowledge base (then it is reused)."""
    with db.connect(admin_dsn, db.Role.DEMO, DEMO_TIMEOUTS) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        return False
    with db.connect(dsn_for(name), db.Role.DEMO, DEMO_TIMEOUTS) as conn:
        row = conn.execute(
            "SELECT to_regclass('public.orders') IS NOT NULL AND to_regclass('pgarch.audit_runs') IS NOT NULL"
        ).fetchone()
    return bool(row and row[0])


def run_demo(cfg: Config, *, once: bool, scale: float, stop: threading.Event, reset: bool = False) -> int:
    """Start everything, audit once, deliver to a local repository, print the report; serve until ``stop``
    unless ``once``. A second run reuses the data and the knowledge base."""
    import dataclasses as _dc
    import shutil
    import sys
    import urllib.request

    from pg_architect.auditor.audit import AuditOptions, run_audit
    from pg_architect.auditor.delivery import html, weekly
    from pg_architect.auditor.delivery.weekly import where
    from pg_architect.auditor.kb import KnowledgeBase
    from pg_architect.auditor.report import render
    from pg_architect.auditor.snapshot import take_snapshot
    from pg_architect.core.config import parse_listen
    from pg_architect.core.embedded import EmbeddedPostgres, default_data_dir
    from pg_architect.exporter.server import ExporterServer, serve
    from pg_architect.exporter.target import Target

    def say(message: str) -> None:
        print(f"demo: {message}", file=sys.stderr, flush=True)

    data_dir = Path(cfg.database.embedded_data_dir) if cfg.database.embedded_data_dir else default_data_dir()
    files = demo_files(data_dir)
    repo = files / "migrations-repo"
    # The demo's server logs its slow statements with their parameters, as production servers often do, and the
    # audit reads them (auditor.server_log, docs/logged-parameters.md).
    server = EmbeddedPostgres(data_dir, settings=DEMO_LOG_SETTINGS)
    with server:
        say(f"embedded PostgreSQL running at {server.dsn()} (data in {server.data_dir})")
        if reset and files.exists():
            shutil.rmtree(files)
        reuse = not reset and loaded(server.dsn(), server.dsn)
        if reuse:
            dsn = server.dsn(DEMO_DB)
            say(f"reusing the demo database {DEMO_DB} and its knowledge base from an earlier run (--reset starts over)")
        else:
            dsn = load(
                server.dsn(),
                server.dsn,
                customers=int(200_000 * scale),
                orders=int(1_000_000 * scale),
                jobs=int(300_000 * scale),
                progress=say,
            )
        files.mkdir(parents=True, exist_ok=True)
        # The demo delivers to a local repository only: it never opens pull requests on a configured GitHub.
        cfg = _dc.replace(
            cfg,
            database=_dc.replace(cfg.database, dsn=dsn, kb_dsn=dsn),
            github=_dc.replace(cfg.github, repo=None, local_repo=str(repo)),
        )
        if cfg.auditor.server_log == "off":
            cfg = _dc.replace(cfg, auditor=_dc.replace(cfg.auditor, server_log="pg_read_file"))
            say(
                f"parameters: the audit measures with the values of the statements' logged calls (the demo's server "
                f"logs statements of {DEMO_MIN_MEAN_MS:g} ms and more; auditor.server_log: pg_read_file)"
            )
        if not cfg.measurement.staging_dsn:
            # The demo owns its database and the embedded server has no hypopg: it may block its own writes.
            cfg = _dc.replace(
                cfg, measurement=_dc.replace(cfg.measurement, allow_blocking_builds=True, max_blocking_ms=120_000)
            )
            say(
                "measurement: real index builds in rolled-back transactions (the demo owns its database; on yours, "
                "pg-architect uses hypopg or a staging server and never blocks writes unless you opt in)"
            )
        host, port = parse_listen(cfg.exporter.listen)
        exporter = ExporterServer((host, port), Target("demo", dsn, cfg))
        thread = threading.Thread(target=serve, args=(exporter, stop), daemon=True)
        thread.start()
        url = f"http://{host if host not in ('0.0.0.0', '') else '127.0.0.1'}:{exporter.server_port}/metrics"
        say(f"exporter serving {url}")
        urllib.request.urlopen(url, timeout=10).read()  # the baseline scrape
        say(take_snapshot(cfg, dsn, dsn, kind="daily"))
        shapes = workload(int(200_000 * scale), calls=12)
        started = time.monotonic()
        ran = run_workload(dsn, shapes, stop=stop)
        say(f"workload: {ran} statements in {time.monotonic() - started:.1f}s")
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        p95 = [line for line in metrics.splitlines() if line.startswith("pgarch_query_p95_seconds{")]
        say("p95 from the exporter: " + ("; ".join(p95) if p95 else "(none yet)"))
        say(take_snapshot(cfg, dsn, dsn, kind="daily"))
        t = cfg.auditor.thresholds
        options = AuditOptions(min_calls=DEMO_MIN_CALLS, min_mean_ms=DEMO_MIN_MEAN_MS, limit=t.limit, trigger="demo")
        say(
            f"thresholds lowered for the demo: min_calls {DEMO_MIN_CALLS} (configured {t.min_calls}), "
            f"min_mean_ms {DEMO_MIN_MEAN_MS:g} (configured {t.min_mean_ms:g}): its statements ran a dozen times, "
            "not a week of production traffic; pull-request thresholds unchanged (>= 0.90 merge, 0.80-0.89 review)"
        )
        report = run_audit(cfg, dsn, dsn, options, progress=say)
        print(render(report, "text"), flush=True)
        kb = KnowledgeBase.open(dsn, cfg)
        try:
            week = weekly.build(kb, _report_url(cfg))
        finally:
            kb.close()
        page = files / "report.html"
        page.write_text(html.weekly_page(week), encoding="utf-8")
        print("", flush=True)
        if week.pending:
            print(f"pending review ({len(week.pending)}), kept in the knowledge base across runs:", flush=True)
            for d in week.pending:
                print(f"  - {d.sql}  ({d.confidence:.2f}, {d.gain_percent or 0:.0f} % faster): {where(d)}")
        if report.deliveries and any(d.created for d in report.deliveries):
            first = next(d for d in report.deliveries if d.created)
            print(f"migrations: git -C {repo} log --oneline --all   then   git -C {repo} show {first.branch}")
        elif week.pending:
            print(f"no new branch this time (nothing new to propose); look at them: git -C {repo} log --oneline --all")
        print(f"report page (self-contained HTML): {page}")
        print(
            "try it on your own database: pg-architect check --dsn postgresql://USER@HOST:5432/DB, then "
            "pg-architect audit --dsn postgresql://USER@HOST:5432/DB --dry-run (defaults: min_calls "
            f"{t.min_calls}, min_mean_ms {t.min_mean_ms:g}; set github.local_repo or github.repo to get migrations)",
            flush=True,
        )
        urllib.request.urlopen(url, timeout=10).read()
        if once:
            stop.set()
        else:
            admin = _serve_admin_api(cfg, dsn, files, stop, say)
            say(f"serving {url} until Ctrl-C (a light workload keeps the metrics moving)")
            light = [_dc.replace(s, calls=1) for s in shapes]
            while not stop.wait(5.0):
                run_workload(dsn, light, threads=1, stop=stop)
            if admin is not None:
                admin.shutdown()
                admin.server_close()
        thread.join(timeout=5)
    return 0


DEMO_MIN_CALLS = 5
# Low enough that the slow shapes stay in at --scale 0.2 on a fast, idle machine (the date() statement and the
# work queue read 40k-60k rows there: 5-7 ms), far above the fast ones (a primary-key look-up, an indexed range).
DEMO_MIN_MEAN_MS = 2.0
DEMO_LOG_SETTINGS = {
    "logging_collector": "on",
    "log_destination": "'csvlog'",
    "log_directory": "'log'",
    "log_min_duration_statement": f"{DEMO_MIN_MEAN_MS:g}",
    "log_rotation_size": "'64MB'",
}


def _report_url(cfg: Config) -> str:
    from pg_architect.auditor.delivery.after_audit import api_base_url

    return api_base_url(cfg) + "/admin/database/report"


def _serve_admin_api(
    cfg: Config, dsn: str, files: Path, stop: threading.Event, say: Callable[[str], None]
) -> ThreadingHTTPServer | None:
    """The admin API, with a token of the demo's own (in a file beside the report)."""
    import dataclasses as _dc
    import secrets

    from pg_architect.auditor.api import AdminServer
    from pg_architect.auditor.daemon import AuditRunner
    from pg_architect.core.config import parse_listen

    token_file = files / "api_token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(24), encoding="utf-8")
        token_file.chmod(0o600)
    token = token_file.read_text(encoding="utf-8").strip()
    cfg = _dc.replace(cfg, secrets={**cfg.secrets, "api_token": token})
    host, port = parse_listen(cfg.auditor.api.listen)
    try:
        server = AdminServer((host, port), cfg, dsn, AuditRunner(cfg, dsn, dsn))
    except OSError as exc:
        say(f"admin API not started: cannot listen on {cfg.auditor.api.listen}: {exc.strerror or exc}")
        return None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.server_port}"
    say(
        f"admin API: {base}/admin/database/report (HTML with Accept: text/html; token in {token_file}): "
        f"curl -H \"Authorization: Bearer $(cat {token_file})\" -H 'Accept: text/html' "
        f"{base}/admin/database/report > report.html"
    )
    return server
