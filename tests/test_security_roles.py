"""docs/security.md's roles, created with the document's own SQL, do their jobs and nothing more."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg_architect.core import db
from pg_architect.core.config import load_config
from pg_architect.exporter.target import Target
from tests.conftest import ServerInfo, make_database

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
ROLES = ("pgarch_monitor", "pgarch_auditor", "pgarch_kb")
PASSWORDS = {"pgarch_monitor": "change-me-monitor", "pgarch_auditor": "change-me-auditor", "pgarch_kb": "change-me-kb"}


def role_blocks() -> list[tuple[str, str]]:
    """(where, SQL) for each ```sql block of the Roles section, in order."""
    text = DOC.read_text()
    section = text.split("## Roles", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    out = []
    for block in blocks:
        first, _, body = block.partition("\n")
        where = re.fullmatch(r"-- on: (server|audited database|knowledge base)", first.strip())
        assert where, f"each block names where it runs on its first line: {first!r}"
        out.append((where.group(1), body))
    return out


def _drop_roles(server: ServerInfo, databases: list[str]) -> None:
    for name in databases:
        try:
            with psycopg.connect(server.dsn(name), autocommit=True) as conn:
                for role in ROLES:
                    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                        conn.execute(f"DROP OWNED BY {role}")
        except psycopg.OperationalError:
            continue
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for role in ROLES:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def documented_roles(embedded_pg: ServerInfo, pg_dsn: str) -> Iterator[tuple[str, str]]:
    """(audited database, knowledge base database) with the document's roles created."""
    app = str(psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"])
    kb = "security_roles_kb"
    make_database(embedded_pg, kb)
    _drop_roles(embedded_pg, [app, kb])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric)")
        conn.execute("INSERT INTO orders SELECT g, g % 100, g FROM generate_series(1, 5000) g")
        for k in range(5):
            conn.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (k,))
    try:
        for where, statements in role_blocks():
            dbname = {"server": "postgres", "audited database": app, "knowledge base": kb}[where]
            with psycopg.connect(embedded_pg.dsn(dbname), autocommit=True) as conn:
                conn.execute(statements)
        yield app, kb
    finally:
        with psycopg.connect(embedded_pg.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{kb}" WITH (FORCE)')
        _drop_roles(embedded_pg, [app])


def _dsn(server: ServerInfo, dbname: str, role: str) -> str:
    return server.dsn(dbname, user=role, password=PASSWORDS[role])


def test_the_documented_roles_scrape_snapshot_and_nothing_more(
    embedded_pg: ServerInfo, documented_roles: tuple[str, str]
) -> None:
    app, kb = documented_roles
    assert [where for where, _ in role_blocks()].count("server") == 3

    # monitor: a full scrape.
    target = Target("default", _dsn(embedded_pg, app, "pgarch_monitor"), load_config(None, env={}))
    try:
        families = {f.name: f for f in target.scrape(10)}
    finally:
        target.close()
    assert families["pg_up"].samples[0].value == 1.0
    failed = [s.labels for s in families["pgarch_scrape_collector_success"].samples if s.value != 1.0]
    assert not failed or failed == [{"collector": "knowledge_base"}], failed

    # auditor + knowledge base: the daily snapshot.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    env["PG_ARCHITECT_DATABASE_KB_DSN"] = _dsn(embedded_pg, kb, "pgarch_kb")
    proc = subprocess.run(
        [sys.executable, "-m", "pg_architect", "snapshot", "--config", "/dev/null",
         "--dsn", _dsn(embedded_pg, app, "pgarch_auditor")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "change-me" not in proc.stdout + proc.stderr

    # The auditor's sessions are untracked (GRANT SET ON PARAMETER), and it creates nothing.
    conn = db.connect(_dsn(embedded_pg, app, "pgarch_auditor"), db.Role.AUDITOR, db.Timeouts())
    try:
        assert db.fetch_value(conn, "SELECT current_setting('pg_stat_statements.track')") == "none"
        assert db.fetch_value(conn, "SELECT count(*) FROM orders") == 5000
    finally:
        conn.close()
    with psycopg.connect(_dsn(embedded_pg, app, "pgarch_auditor"), autocommit=True) as auditor:
        for ddl in ("CREATE TABLE public.x (a int)", "CREATE INDEX ON orders (total)", "DROP TABLE orders"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                auditor.execute(ddl)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            auditor.execute("INSERT INTO orders VALUES (0, 0, 0)")

    # The knowledge base's role owns pgarch and nothing else.
    with psycopg.connect(_dsn(embedded_pg, kb, "pgarch_kb"), autocommit=True) as kb_conn:
        owned = kb_conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgarch' AND tableowner = 'pgarch_kb'"
        ).fetchone()
        assert owned and owned[0] >= 5
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            kb_conn.execute("CREATE TABLE public.y (a int)")
    with (
        psycopg.connect(_dsn(embedded_pg, app, "pgarch_kb"), autocommit=True) as kb_on_app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        kb_on_app.execute("SELECT * FROM orders")
