"""Literals never leave pg_stat_statements through pg-architect (issue 14, item 2).

A password in ``CREATE ROLE``, an e-mail in a ``COMMENT`` and in a query comment, and a real e-mail that the
auditor samples from ``pg_stats`` are planted; then snapshot, audit, report (every format), the admin API and
every log line are searched, and so is every table of the knowledge base. None may hold a planted string.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg_architect.auditor.redaction import safe_text
from pg_architect.core import db
from pg_architect.core.embedded import free_port
from tests.conftest import ServerInfo, make_database

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "secret123"
COMMENT_EMAIL = "dpo.planted@example.net"
QUERY_COMMENT_EMAIL = "carol.planted@example.net"
SAMPLED_EMAIL = "sampled.planted@example.org"
PLANTED = (PASSWORD, COMMENT_EMAIL, QUERY_COMMENT_EMAIL, SAMPLED_EMAIL)
TOKEN = "t0ken-for-the-literals-test"


def leaks(text: str) -> list[str]:
    return [p for p in PLANTED if p.lower() in text.lower()]


# -- the redaction itself ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"CREATE ROLE app_reader LOGIN PASSWORD '{PASSWORD}'",
        f"ALTER ROLE app_reader PASSWORD '{PASSWORD}'",
        f"COMMENT ON TABLE customers IS 'ask {COMMENT_EMAIL}'",
        f"SELECT /* owner {QUERY_COMMENT_EMAIL} */ count(*) FROM customers WHERE email = $1",
        f"SELECT * FROM customers WHERE email = '{SAMPLED_EMAIL}' -- {QUERY_COMMENT_EMAIL}",
        f"EXPLAIN SELECT * FROM customers WHERE email = '{SAMPLED_EMAIL}'",
        f"SELECT 1; SELECT '{SAMPLED_EMAIL}'",
        f"not sql at all '{PASSWORD}'",
        f"INSERT INTO customers (email) VALUES ('{SAMPLED_EMAIL}') RETURNING id",
        f"UPDATE customers SET name = E'{PASSWORD}' WHERE email LIKE '%{SAMPLED_EMAIL}'",
        f"SELECT $1::text, x'ff', interval '{PASSWORD}' FROM customers",
        f"DO $$BEGIN PERFORM '{PASSWORD}'; END$$",
        f"COPY (SELECT '{SAMPLED_EMAIL}') TO STDOUT",
    ],
)
def test_redacted_text_keeps_no_literal_and_no_comment(text: str) -> None:
    safe = safe_text(text)
    assert not leaks(safe.text), f"{text!r} became {safe.text!r}"
    assert not leaks(safe.command) and not leaks(safe.fingerprint)


def test_plannable_text_is_re_deparsed_with_placeholders_and_keeps_its_shape() -> None:
    safe = safe_text(
        "SELECT c.name, 'x'::varchar(20) FROM customers c WHERE c.email = 'a@b.c' AND c.id IN (1, 2) "
        "AND c.created_at > now() - interval $1 GROUP BY 1, 2 ORDER BY 1 LIMIT 5 /* a@b.c */"
    )
    assert not safe.withheld
    assert "a@b.c" not in safe.text and "varchar(20)" in safe.text, safe.text
    assert "GROUP BY 1, 2 ORDER BY 1 LIMIT $" in safe.text, safe.text
    assert (
        safe.fingerprint
        == safe_text(
            "SELECT c.name, 'y'::varchar(20) FROM customers c WHERE c.email = 'z' "
            "AND c.id IN (7) AND c.created_at > now() - interval $1 "
            "GROUP BY 1, 2 ORDER BY 1 LIMIT 9"
        ).fingerprint
    )


def test_utility_statements_keep_only_a_tag_and_a_fingerprint_that_ignores_their_literals() -> None:
    a, b = safe_text("CREATE ROLE x PASSWORD 'one'"), safe_text("CREATE ROLE x PASSWORD 'two'")
    assert a.withheld and a.command == "CREATE ROLE" and a.text.startswith("CREATE ROLE /* text withheld")
    # libpg_query's own fingerprint hashes utility literals (a password guess could be tested against it).
    assert a.fingerprint == b.fingerprint


# -- the untracked auditor session -----------------------------------------------------------------------


def _pgss_texts(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT query FROM pg_stat_statements WHERE query IS NOT NULL")]


def test_auditor_sessions_are_untracked_where_the_role_may_and_still_connect_where_it_may_not(
    embedded_pg: ServerInfo, pg_dsn: str
) -> None:
    marker = "untracked_probe_7731"
    conn = db.connect(pg_dsn, db.Role.AUDITOR, db.Timeouts())
    try:
        assert db.fetch_value(conn, "SELECT current_setting('pg_stat_statements.track')") == "none"
        db.fetch_value(conn, f"SELECT '{marker}'")
    finally:
        conn.close()
    assert not [t for t in _pgss_texts(pg_dsn) if marker in t]

    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS plain_auditor")
        admin.execute("CREATE ROLE plain_auditor LOGIN")
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO plain_auditor").format(sql.Identifier(str(dbname))))
    try:
        plain = db.connect(embedded_pg.dsn(str(dbname), user="plain_auditor"), db.Role.AUDITOR, db.Timeouts())
        try:
            assert db.fetch_value(plain, "SELECT current_setting('pg_stat_statements.track')") == "top"
        finally:
            plain.close()
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("GRANT SET ON PARAMETER pg_stat_statements.track TO plain_auditor")
        granted = db.connect(
            embedded_pg.dsn(str(dbname), user="plain_auditor"), db.Role.STAGING, db.Timeouts(), autocommit=False
        )
        try:
            assert db.fetch_value(granted, "SELECT current_setting('pg_stat_statements.track')") == "none"
            granted.rollback()  # the setting was committed before: a later rollback keeps it
            assert db.fetch_value(granted, "SELECT current_setting('pg_stat_statements.track')") == "none"
        finally:
            granted.close()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("REVOKE ALL ON PARAMETER pg_stat_statements.track FROM plain_auditor")
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM plain_auditor").format(sql.Identifier(str(dbname))))
            admin.execute("DROP ROLE plain_auditor")


# -- end to end: every output, log and table ---------------------------------------------------------------


def _plant(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, name text NOT NULL)")
        # The planted e-mail is the most common value: parameter sampling takes it from pg_stats.
        conn.execute(
            "INSERT INTO customers (email, name) SELECT CASE WHEN g %% 3 = 0 THEN %s ELSE 'user' || g || '@example.com'"
            " END, 'name ' || g FROM generate_series(1, 60000) g",
            (SAMPLED_EMAIL,),
        )
        conn.execute("ANALYZE customers")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("DROP ROLE IF EXISTS planted_role")
        conn.execute(f"CREATE ROLE planted_role LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"COMMENT ON TABLE customers IS 'personal data: ask {COMMENT_EMAIL}'")
        for i in range(30):
            # The application binds its values (as drivers do), so pg_stat_statements records $1.
            conn.execute("SELECT id, name FROM customers WHERE email = %s", (f"user{i}@example.com",))
            conn.execute(
                f"SELECT /* owner {QUERY_COMMENT_EMAIL} */ count(*) FROM customers WHERE name = %s", (f"name {i}",)
            )
        # A statement that spills to temporary files, with the e-mail in its comment: the settings
        # suggestions name such statements.
        conn.execute("SET work_mem = '64kB'")
        for i in range(3):
            conn.execute(
                f"SELECT /* owner {QUERY_COMMENT_EMAIL} */ id FROM customers ORDER BY name DESC, email OFFSET %s",
                (59990 + i,),
            )
        conn.execute("RESET work_mem")
        conn.execute("DROP ROLE planted_role")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**clean, **env},
        cwd=ROOT,
    )


def _get(port: int, path: str, accept: str = "application/json") -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code} {err.read().decode()}"


@pytest.fixture
def servers(request: pytest.FixtureRequest, embedded_pg: ServerInfo) -> Iterator[tuple[str, str]]:
    """(audited DSN, knowledge base DSN): the audited database on PostgreSQL 18 (embedded) or Debian's."""
    server: ServerInfo = request.getfixturevalue(request.param)
    name = f"literals_{request.param}"
    audited = make_database(server, name, ("pg_stat_statements",))
    kb = make_database(embedded_pg, f"literals_kb_{request.param}", ("vector",))
    yield audited, kb


@pytest.mark.parametrize("servers", ["embedded_pg", "debian_pg"], indirect=True)
def test_planted_secrets_appear_in_no_output_log_api_response_or_knowledge_base_table(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    audited, kb_dsn = servers
    _plant(audited)
    env = {"PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn, "PYTHONUNBUFFERED": "1"}
    outputs: dict[str, str] = {}

    def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = _cli(*args, "--config", "/dev/null", "--dsn", audited, env=env)
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = proc.stdout, proc.stderr
        return proc

    assert run("snapshot", "snapshot").returncode == 0, outputs["snapshot stderr"]
    audit = run(
        "audit text", "audit", "--format", "text", "--min-calls", "1", "--min-mean-ms", "0", "--limit", "5", "--debug"
    )
    assert audit.returncode in (0, 1), audit.stderr
    audit_json = run(
        "audit json", "audit", "--format", "json", "--min-calls", "1", "--min-mean-ms", "0", "--limit", "5"
    )
    report = json.loads(audit_json.stdout)
    texts = [q["query"] for q in report["slow_queries"]]
    # The planted statements did reach the audit, as literal-free text.
    assert any("customers" in t and "email = $" in t for t in texts), texts
    assert any("count(*)" in t for t in texts), texts
    for fmt in ("text", "json", "markdown"):
        assert run(f"report {fmt}", "report", "--format", fmt).returncode == 0, outputs[f"report {fmt} stderr"]

    # The admin API's report, optimisations and run, and the daemon's own log.
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pg_architect", "serve", "--config", "/dev/null", "--dsn", audited, "--debug"],
        env={
            **clean,
            **env,
            "PG_ARCHITECT_AUDITOR_API_LISTEN": f"127.0.0.1:{port}",
            "PG_ARCHITECT_AUDITOR_API_TOKEN_FILE": str(token_file),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        for _ in range(300):
            try:
                if _get(port, "/healthz").startswith("{"):
                    break
            except OSError:
                assert daemon.poll() is None, "serve exited early"
                time.sleep(0.1)
        for path, accept in (
            ("/admin/database/report", "application/json"),
            ("/admin/database/report", "text/html"),
            ("/admin/database/report?format=markdown", "application/json"),
            ("/admin/database/optimizations?limit=100", "application/json"),
            (f"/admin/database/runs/{report['run_id']}", "application/json"),
        ):
            outputs[f"API {path} {accept}"] = body = _get(port, path, accept)
            assert not body.startswith("HTTP 5"), body
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=30)
        outputs["serve log"] = out

    # Every table of the knowledge base, every row, as text.
    with psycopg.connect(kb_dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'pgarch'"
            )
        ]
        assert len(tables) >= 5, tables
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.SQL(table))).fetchall()
            outputs[f"knowledge base {table}"] = "\n".join(r[0] for r in rows)
        stored = conn.execute("SELECT count(*) FROM pgarch.pgss_snapshot_rows").fetchone()
        assert stored and stored[0] > 0
    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    assert not found, f"planted strings found in: {found}"

    # The auditor's own statements (EXPLAIN with the sampled e-mail) never reached pg_stat_statements.
    recorded = [t for t in _pgss_texts(audited) if SAMPLED_EMAIL in t]
    assert not recorded, recorded


@pytest.mark.parametrize("servers", ["embedded_pg"], indirect=True)
def test_the_snapshot_holds_only_the_audited_database(servers: tuple[str, str], embedded_pg: ServerInfo) -> None:
    audited, kb_dsn = servers
    other = make_database(embedded_pg, "literals_other_db", ("pg_stat_statements",))
    with psycopg.connect(other, autocommit=True) as conn:
        for _ in range(3):
            conn.execute("SELECT count(*) FROM pg_class WHERE relname = %s", ("other-db-statement",))
    proc = _cli("snapshot", "--config", "/dev/null", "--dsn", audited, env={"PG_ARCHITECT_DATABASE_KB_DSN": kb_dsn})
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(audited, autocommit=True) as conn:
        mine = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    with psycopg.connect(kb_dsn, autocommit=True) as conn:
        dbids = {r[0] for r in conn.execute("SELECT DISTINCT dbid FROM pgarch.pgss_snapshot_rows")}
    assert mine is not None and dbids == {mine[0]}, dbids
