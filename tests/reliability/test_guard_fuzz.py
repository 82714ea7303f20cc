"""Property-based fuzzing of the SQL guard (auditor/safety.py's check functions).

Whatever the text: a check accepts at most one statement (as PostgreSQL's own grammar, pglast, reads it)
and fails only with UnsafeSQLError, never with any other exception. Inputs are arbitrary text and text
built from the pieces that confuse statement splitting: semicolons inside strings, dollar quotes,
quoted identifiers and nested comments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import parser
from pglast.parser import ParseError

from pg_architect.auditor import safety
from pg_architect.core import db
from pg_architect.core.errors import UnsafeSQLError

STATEMENTS = [
    "SELECT * FROM t WHERE a = 1",
    "SELECT a, count(*) FROM t GROUP BY a ORDER BY 2 DESC LIMIT 5",
    "VALUES (1), (2)",
    "WITH x AS (SELECT a FROM t) SELECT * FROM x",
    "SELECT pg_sleep(10)",
    "SELECT set_config('work_mem', '1GB', false)",
    "SELECT nextval('s')",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * INTO u FROM t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "INSERT INTO t (a) VALUES (1)",
    "UPDATE t SET a = a + 1 WHERE b = 'x'",
    "DELETE FROM t WHERE a < 0",
    "CREATE INDEX ON t (a)",
    "CREATE INDEX CONCURRENTLY t_b ON t USING btree (lower(b)) WHERE a > 0",
    "CREATE UNIQUE INDEX ON t (a)",
    "DROP TABLE t",
    "COPY t TO PROGRAM 'id'",
    "DO $$BEGIN PERFORM 1; END$$",
    "SET statement_timeout = 0",
    "COMMIT",
    "",
]
PIECES = [
    ";",
    "; ",
    ";\n",
    " ",
    "\n",
    "-- ; comment\n",
    "/* ; */",
    "/* /* nested ; */ still */",
    "'a;b'",
    "E'\\';'",
    "$$;$$",
    "$q$ ; $q$",
    '"x;y"',
    "U&'\\0041'",
    "\\;",
    "(",
    ")",
    ",",
    "--",
    "/*",
    "*/",
    "'",
    '"',
    "$",
    "$1",
    "SELECT",
    "FROM t",
    "WHERE",
    "1",
    "a",
    "::text",
    "INTO",
    "UNION ALL",
    "RETURNING *",
]
sql_texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(STATEMENTS + PIECES), min_size=1, max_size=8).map("".join),
    st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=4).flatmap(
        lambda parts: st.lists(st.sampled_from(PIECES), min_size=len(parts), max_size=len(parts)).map(
            lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=True))
        )
    ),
)
FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _statements(sql: str) -> int:
    try:
        return len(parser.parse_sql(sql))
    except ParseError:
        return 0


def _holds(check: Callable[[str], object], sql: str) -> None:
    try:
        check(sql)
    except UnsafeSQLError:
        return
    # Accepted: exactly one statement, as PostgreSQL's grammar reads it.
    assert _statements(sql) == 1, f"accepted {sql!r}, which holds {_statements(sql)} statements"


@FUZZ
@given(sql_texts)
def test_index_ddl_check_accepts_one_statement_at_most_and_fails_only_with_unsafe_sql_error(sql: str) -> None:
    _holds(safety.check_index_ddl, sql)
    _holds(lambda s: safety.check_index_ddl(s, allow_unique=True), sql)


@pytest.fixture
def guard_conn(pg_dsn: str) -> Iterator[db.Connection]:
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (a int, b text)")
        setup.execute("CREATE SEQUENCE s")
    conn = db.connect(pg_dsn, db.Role.AUDITOR, db.Timeouts())
    try:
        yield conn
    finally:
        conn.close()


@FUZZ
@given(sql=sql_texts)
def test_readonly_select_check_accepts_one_statement_at_most_and_fails_only_with_unsafe_sql_error(
    guard_conn: db.Connection, sql: str
) -> None:
    _holds(lambda s: safety.check_readonly_select(s, guard_conn), sql)


@FUZZ
@given(sql=sql_texts)
def test_explain_only_dml_check_accepts_one_statement_at_most_and_fails_only_with_unsafe_sql_error(
    guard_conn: db.Connection, sql: str
) -> None:
    _holds(lambda s: safety.check_explain_only_dml(s, guard_conn), sql)
