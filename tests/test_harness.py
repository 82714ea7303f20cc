"""The harness itself: the servers the rest of the suite relies on are what they claim to be."""

from __future__ import annotations

import psycopg

from tests.conftest import ServerInfo, make_database


def test_embedded_server_preloads_pg_stat_statements_and_has_pgvector(postgresql: psycopg.Connection) -> None:
    assert postgresql.execute("SHOW shared_preload_libraries").fetchone() == ("pg_stat_statements",)
    extensions = {row[0] for row in postgresql.execute("SELECT extname FROM pg_extension")}
    assert {"pg_stat_statements", "vector"} <= extensions, extensions
    assert postgresql.info.server_version >= 180000


def test_each_test_gets_its_own_database(postgresql: psycopg.Connection) -> None:
    postgresql.execute("CREATE TABLE t (id int)")
    assert postgresql.info.dbname.startswith("tests") or postgresql.info.dbname != "postgres"


def test_debian_server_has_hypopg_and_pg_qualstats(debian_pg: ServerInfo) -> None:
    dsn = make_database(debian_pg, "harness_check", ("hypopg", "pg_qualstats", "pg_stat_statements"))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone() == (0,)
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        assert preload is not None and "pg_qualstats" in preload[0]
