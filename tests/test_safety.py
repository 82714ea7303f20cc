"""The allow-list for SQL we did not write: CREATE INDEX, read-only SELECT, explain-only DML."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from pg_architect.auditor.safety import (
    IndexDDL,
    IndexElement,
    check_explain_only_dml,
    check_index_ddl,
    check_index_target,
    check_readonly_select,
)
from pg_architect.core.errors import UnsafeSQLError

SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, email text, status text, created_at timestamptz, created_on timestamp,
                     total numeric);
INSERT INTO orders SELECT i, 'u' || i || '@x.org', 'done', now(), now()::timestamp, i FROM generate_series(1, 10) i;
CREATE TABLE audit_log (id int);
CREATE FUNCTION log_and_return(x int) RETURNS int LANGUAGE plpgsql VOLATILE AS
  $$ BEGIN INSERT INTO audit_log VALUES (x); RETURN x; END $$;
CREATE FUNCTION stable_double(x int) RETURNS int LANGUAGE sql STABLE AS $$ SELECT x * 2 $$;
CREATE SEQUENCE s;
CREATE VIEW plain_orders AS SELECT id, status FROM orders;
CREATE VIEW logging_orders AS SELECT log_and_return(id::int) AS id FROM orders;
CREATE TABLE measurements (id int, taken_at timestamptz) PARTITION BY RANGE (taken_at);
CREATE SCHEMA pgarch;
CREATE TABLE pgarch.runs (id int);
-- Functions that lie about their volatility: the planner folds IMMUTABLE calls with constant arguments
-- (and may evaluate STABLE ones) while planning, so these run under a plain EXPLAIN.
CREATE FUNCTION lying_next() RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN nextval('s'); END $$;
CREATE FUNCTION lying_log(x int) RETURNS int LANGUAGE plpgsql STABLE AS
  $$ BEGIN INSERT INTO audit_log VALUES (x); RETURN x; END $$;
CREATE FUNCTION lying_sql() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT nextval('s') $$;
CREATE FUNCTION honest_sql(x text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(x) $$;
"""


@pytest.fixture
def db(postgresql: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The test database with a small schema, committed so that every check sees it."""
    postgresql.execute(SCHEMA)
    postgresql.commit()
    yield postgresql


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def refused(call: Callable[..., object], *args: object, match: str) -> str:
    """Assert ``call(*args)`` is refused with a one-line reason matching ``match``."""
    with pytest.raises(UnsafeSQLError, match=match) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message, f"reason must be one line: {message!r}"
    return message


# -- CREATE INDEX: the statement -------------------------------------------------------------------------


def test_full_create_index_form_is_accepted_with_every_part_in_the_model() -> None:
    ddl = check_index_ddl(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_queue ON public.orders USING btree "
        "(status, lower(email) text_pattern_ops DESC NULLS LAST) INCLUDE (total) WHERE status = 'queued'")
    assert ddl == IndexDDL(
        schema="public", table="orders", name="orders_queue", method="btree",
        elements=(IndexElement("status", None), IndexElement(None, "lower(email)", "text_pattern_ops", True, False)),
        include=("total",), where="status = 'queued'", concurrently=True, if_not_exists=True, unique=False,
        sql=ddl.sql)
    assert ddl.sql.startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_queue ON public.orders"), ddl.sql
    assert set(ddl.columns) == {"status", "email", "total"}


@pytest.mark.parametrize("method", ["hash", "gin", "gist", "brin", "BTREE"])
def test_every_allowed_index_method_is_accepted(method: str) -> None:
    assert check_index_ddl(f"CREATE INDEX i ON t USING {method} (a)").method == method.lower()


@pytest.mark.parametrize(("sql", "reason"), [
    ("CREATE INDEX i ON orders (status); DROP TABLE orders", "exactly one statement allowed, found 2"),
    ("CREATE INDEX i ON orders (status);\n-- harmless\nDROP TABLE orders", "exactly one statement allowed, found 2"),
    ("DROP/**/TABLE orders", "expected CREATE INDEX, got DROP"),
    ("ALTER TABLE orders ADD COLUMN x int", "expected CREATE INDEX, got ALTER TABLE"),
    ("CREATE TABLE x (id int)", "expected CREATE INDEX, got CREATE TABLE"),
    ("CREATE UNIQUE INDEX i ON orders (email)", "UNIQUE changes what the table accepts"),
    ("CREATE INDEX ON orders (status)", "needs a name"),
    ("CREATE INDEX i ON orders USING spgist (status)", "index method 'spgist'"),
    ("CREATE INDEX i ON orders (status) WITH (fillfactor = 10)", "storage parameters"),
    ("CREATE INDEX i ON orders (status) TABLESPACE pg_global", "TABLESPACE"),
    ("CREATE INDEX i ON ONLY measurements (id)", "ON ONLY"),
    ("CREATE INDEX i ON orders (((SELECT 1)))", "subqueries are not allowed"),
    ("CREATE INDEX i ON orders ((EXISTS (SELECT 1 FROM audit_log)))", "subqueries are not allowed"),
    ("CREATE INDEX i ON orders (status) WHERE created_at > CURRENT_DATE", "change over time"),
    ("CREATE INDEX i ON orders (status) WHERE id = $1", "placeholders"),
    ("CREATE INDEX i ON orders ((count(*)))", "aggregates"),
    ("CREATE INDEX i ON orders ((pg_sleep(1)))", "deny-list"),
    ("CREATE INDEX i ON orders ((o.status))", "plain, unqualified"),
    ("CREATE INDEX i ON orders (status", "not valid SQL"),
    ("   ", "empty SQL"),
])
def test_anything_but_one_plain_create_index_is_refused_with_a_reason(sql: str, reason: str) -> None:
    refused(check_index_ddl, sql, match=reason)


def test_unique_index_is_accepted_only_when_asked_and_is_flagged() -> None:
    assert check_index_ddl("CREATE UNIQUE INDEX i ON orders (email)", allow_unique=True).unique


@pytest.mark.parametrize("sql", [
    "CREATE INDEX orders_status ON orders (status) /* ; DROP TABLE orders */",
    "CREATE INDEX orders_status ON orders (status) -- ; DROP TABLE orders",
    'CREATE INDEX "orders_status; DROP TABLE orders" ON orders (status)',
])
def test_ddl_hidden_in_comments_or_quoted_names_stays_harmless(db: psycopg.Connection, sql: str) -> None:
    ddl = check_index_target(db, check_index_ddl(sql))
    assert "DROP TABLE orders" not in ddl.sql.replace(f'"{ddl.name}"', ""), ddl.sql
    db.execute(ddl.sql)
    assert count(db, "orders") == 10
    db.rollback()


# -- CREATE INDEX: the target ----------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "CREATE INDEX i ON orders (status, created_at DESC) INCLUDE (total)",
    "CREATE INDEX i ON public.orders USING gin (to_tsvector('simple', email))",
    "CREATE INDEX i ON orders (lower(email) text_pattern_ops)",
    "CREATE INDEX i ON orders (date_trunc('day', created_on))",
    "CREATE INDEX i ON orders (created_at) WHERE status = 'queued' AND created_at > '2024-01-01'",
    "CREATE INDEX i ON orders ((total::int), (coalesce(status, 'none')))",
    "CREATE INDEX i ON measurements (taken_at)",
])
def test_good_indexes_pass_the_target_check_and_postgresql_builds_them(db: psycopg.Connection, sql: str) -> None:
    ddl = check_index_target(db, check_index_ddl(sql))
    assert ddl.schema == "public", ddl
    db.execute(ddl.sql)  # PostgreSQL agrees: it builds the index
    db.rollback()


@pytest.mark.parametrize(("sql", "reason"), [
    ("CREATE INDEX i ON no_such_table (a)", "table no_such_table does not exist"),
    ("CREATE INDEX i ON pg_catalog.pg_class (relname)", "system or pg-architect table"),
    ("CREATE INDEX i ON pg_class (relname)", "system or pg-architect table"),
    ("CREATE INDEX i ON pgarch.runs (id)", "system or pg-architect table"),
    ("CREATE INDEX i ON plain_orders (id)", "is a view"),
    ("CREATE INDEX i ON s (last_value)", "is a sequence"),
    ("CREATE INDEX i ON orders (no_such_column)", "column no_such_column does not exist"),
    ("CREATE INDEX i ON orders (lower(nope))", "column nope does not exist"),
])
def test_index_on_a_missing_catalog_or_non_table_relation_is_refused(
        db: psycopg.Connection, sql: str, reason: str) -> None:
    refused(check_index_target, db, check_index_ddl(sql), match=reason)


@pytest.mark.parametrize(("sql", "reason"), [
    ("CREATE INDEX i ON orders ((log_and_return(id::int)))", "log_and_return\\(\\) is VOLATILE"),
    ("CREATE INDEX i ON orders ((random() > 0.5))", "random\\(\\) is VOLATILE"),
    ("CREATE INDEX i ON orders (date_trunc('day', created_at))", "date_trunc\\(\\) is STABLE"),
    ("CREATE INDEX i ON orders ((created_at::date))", "cast to date is STABLE"),
    ("CREATE INDEX i ON orders (status) WHERE created_at > now()", "now\\(\\) is STABLE"),
    ("CREATE INDEX i ON orders ((no_such_function(id)))", "does not exist"),
])
def test_index_with_a_volatile_or_stable_expression_is_refused_as_postgresql_would(
        db: psycopg.Connection, sql: str, reason: str) -> None:
    refused(check_index_target, db, check_index_ddl(sql), match=reason)
    with pytest.raises(psycopg.Error):  # and PostgreSQL itself refuses to build it
        db.execute(sql)
    db.rollback()
    assert count(db, "audit_log") == 0


def test_a_stable_function_is_refused_even_where_postgresql_would_inline_it(db: psycopg.Connection) -> None:
    # PostgreSQL inlines this STABLE SQL function into an immutable expression and accepts the index;
    # the allow-list goes by the declared volatility and stays on the safe side.
    refused(check_index_target, db, check_index_ddl("CREATE INDEX i ON orders ((stable_double(id::int)))"),
            match="stable_double\\(\\) is STABLE")


def test_comparisons_with_implicitly_cast_constants_are_not_ambiguous(db: psycopg.Connection) -> None:
    ddl = check_index_target(db, check_index_ddl("CREATE INDEX i ON orders (id) WHERE total > 0 AND id >= 10"))
    assert ddl.where == "total > 0 AND id >= 10", ddl.where


# -- read-only SELECT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT o.id, lower(o.email) FROM orders o WHERE o.status = 'queued' "
    "AND o.created_at > now() - interval '1 day' ORDER BY o.created_at DESC LIMIT 20",
    "WITH r AS (SELECT * FROM orders WHERE total > 3) SELECT count(*), sum(total) FROM r",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT g, stable_double(g) FROM generate_series(1, 3) AS g",
    "SELECT * FROM plain_orders WHERE id = ANY (ARRAY[1, 2]) AND EXISTS (SELECT 1 FROM audit_log)",
    "SELECT 1 /* ; DROP TABLE orders */",
    "SELECT E'\\'; DROP TABLE orders; --'",
    "SELECT $x$; DROP TABLE orders; $x$",
    "SELECT id FROM orders WHERE id IN (SELECT id FROM orders TABLESAMPLE SYSTEM (50))",
])
def test_read_only_selects_are_accepted_and_run_without_changing_anything(db: psycopg.Connection, sql: str) -> None:
    check_readonly_select(sql, db)
    db.execute(f"EXPLAIN ANALYZE {sql}")
    db.rollback()
    assert count(db, "orders") == 10 and count(db, "audit_log") == 0


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT 1; DROP TABLE orders", "exactly one statement allowed, found 2 \\(SELECT, DROP\\)"),
    ("SELECT E'\\\\'; DROP TABLE orders; --'", "exactly one statement"),
    ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "data-modifying CTE 'd'"),
    ("WITH u AS (UPDATE orders SET total = 0 RETURNING id) SELECT count(*) FROM u", "data-modifying CTE"),
    ("SELECT * INTO orders_copy FROM orders", "SELECT ... INTO"),
    ("SELECT * FROM orders FOR UPDATE", "FOR UPDATE/SHARE"),
    ("SELECT * FROM (SELECT * FROM orders FOR SHARE SKIP LOCKED) AS s", "FOR UPDATE/SHARE"),
    ("SELECT pg_sleep(1)", "pg_sleep\\(\\) is on the deny-list"),
    ("SELECT nextval('s')", "nextval\\(\\) is on the deny-list"),
    ("SELECT setval('s', 100)", "setval"),
    ("SELECT set_config('work_mem', '1GB', false)", "set_config"),
    ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
    ("SELECT pg_advisory_lock(42)", "pg_advisory_lock"),
    ("SELECT lo_import('/etc/passwd')", "lo_import"),
    ("SELECT * FROM dblink('host=x', 'DELETE FROM orders') AS t(x int)", "dblink"),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, true, '')", "query_to_xml"),
    ("SELECT random()", "random\\(\\) is VOLATILE"),
    ("SELECT no_such_function()", "does not exist"),
    ("SELECT * FROM logging_orders", "log_and_return\\(\\) is VOLATILE.*inside view logging_orders"),
    ("DELETE FROM orders", "expected SELECT, got DELETE"),
    ("LOCK TABLE orders", "expected SELECT, got LOCK"),
    ("SET work_mem = '1GB'", "expected SELECT, got SET"),
    ("BEGIN", "expected SELECT, got transaction control"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "expected SELECT, got EXPLAIN"),
    ("DO $$ BEGIN DELETE FROM orders; END $$", "expected SELECT, got DO"),
    ("COPY orders TO '/tmp/orders'", "expected SELECT, got COPY"),
    ("CREATE TABLE x AS SELECT * FROM orders", "expected SELECT, got CREATE TABLE AS"),
])
def test_statements_that_could_change_anything_are_refused(db: psycopg.Connection, sql: str, reason: str) -> None:
    refused(check_readonly_select, sql, db, match=reason)


def test_a_volatile_function_that_writes_is_refused_and_its_table_stays_empty(db: psycopg.Connection) -> None:
    # The function really writes: run it in a transaction that is rolled back to prove the danger.
    db.execute("SELECT log_and_return(7)")
    assert count(db, "audit_log") == 1
    db.rollback()
    for sql in ("SELECT log_and_return(1)", "SELECT id FROM orders WHERE id = log_and_return(2)",
                "SELECT * FROM orders o JOIN LATERAL (SELECT log_and_return(o.id::int)) AS l ON true"):
        refused(check_readonly_select, sql, db, match="log_and_return\\(\\) is VOLATILE")
    assert count(db, "audit_log") == 0


def test_a_refused_nextval_leaves_the_sequence_untouched(db: psycopg.Connection) -> None:
    refused(check_readonly_select, "SELECT nextval('s')", db, match="nextval")
    assert db.execute("SELECT last_value, is_called FROM s").fetchone() == (1, False)


# -- explain-only DML ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "UPDATE orders SET status = 'done' WHERE id = 1",
    "DELETE FROM orders WHERE created_at < now() - interval '30 days'",
    "INSERT INTO audit_log SELECT id::int FROM orders WHERE status = 'queued'",
    "INSERT INTO orders (id, status) VALUES (11, 'x') ON CONFLICT (id) DO UPDATE SET status = excluded.status",
    "WITH old AS (SELECT id FROM orders WHERE total < 2) DELETE FROM orders WHERE id IN (SELECT id FROM old)",
    "UPDATE orders SET total = total + 1 FROM audit_log a WHERE a.id = orders.id RETURNING orders.id",
])
def test_dml_to_be_planned_only_is_accepted_and_explains(db: psycopg.Connection, sql: str) -> None:
    check_explain_only_dml(sql, db)
    db.execute(f"EXPLAIN {sql}")
    db.rollback()
    assert count(db, "orders") == 10


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT * FROM orders", "expected INSERT, UPDATE or DELETE, got SELECT"),
    ("UPDATE orders SET total = 0; DROP TABLE orders", "exactly one statement"),
    ("DROP TABLE orders", "got DROP"),
    ("TRUNCATE orders", "got TRUNCATE"),
    ("MERGE INTO orders o USING audit_log a ON a.id = o.id WHEN MATCHED THEN DELETE", "got MERGE"),
    ("UPDATE orders SET total = pg_sleep(1)::int::numeric", "pg_sleep"),
    ("INSERT INTO audit_log SELECT nextval('s')", "nextval"),
    ("INSERT INTO audit_log SELECT id FROM orders FOR UPDATE", "FOR UPDATE/SHARE"),
])
def test_anything_but_one_plannable_dml_statement_is_refused(db: psycopg.Connection, sql: str, reason: str) -> None:
    refused(check_explain_only_dml, sql, db, match=reason)


# -- functions that lie about their volatility ------------------------------------------------------------


def test_the_danger_is_real_planning_runs_a_falsely_immutable_function(db: psycopg.Connection) -> None:
    """Why the rule exists: a plain EXPLAIN, never executed, still advances the sequence."""
    db.execute("EXPLAIN SELECT * FROM orders WHERE id = lying_next()")
    advanced = db.execute("SELECT is_called FROM s").fetchone()
    db.rollback()
    assert advanced == (True,)


@pytest.mark.parametrize(("check", "sql", "match"), [
    (check_readonly_select, "SELECT * FROM orders WHERE id = lying_next()", r"lying_next\(\) is a user-defined"),
    (check_readonly_select, "SELECT * FROM orders WHERE id = lying_log(1)", "declared STABLE"),
    (check_readonly_select, "SELECT * FROM orders WHERE id = lying_sql()", "its SQL body is not a read-only SELECT"),
    (check_explain_only_dml, "UPDATE orders SET status = 'x' WHERE id = lying_next()", "lying_next"),
    (check_explain_only_dml, "DELETE FROM orders WHERE id = lying_log(3)", "lying_log"),
])
def test_untrusted_non_volatile_functions_are_refused_before_planning(
    db: psycopg.Connection, check: Callable[..., object], sql: str, match: str
) -> None:
    refused(check, sql, db, match=match)
    assert db.execute("SELECT last_value, is_called FROM s").fetchone() == (1, False)
    assert count(db, "audit_log") == 0


def test_a_sql_function_whose_body_is_a_read_only_select_is_trusted(db: psycopg.Connection) -> None:
    check_readonly_select("SELECT * FROM orders WHERE email = honest_sql($1)", db)
    check_explain_only_dml("UPDATE orders SET status = 'x' WHERE email = honest_sql('A')", db)


def test_dblink_is_refused_whatever_it_is_wrapped_in(db: psycopg.Connection) -> None:
    available = db.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'").fetchone()
    if available != (1,):
        pytest.skip("dblink is not available on this server")
    db.execute("CREATE EXTENSION dblink")
    db.execute(
        "CREATE FUNCTION remote_write() RETURNS text LANGUAGE sql IMMUTABLE AS "
        "$$ SELECT dblink_exec('dbname=postgres', 'SELECT 1') $$"
    )
    db.commit()
    refused(check_readonly_select, "SELECT dblink_exec('dbname=postgres', 'SELECT 1')", db, match="dblink")
    refused(check_readonly_select, "SELECT * FROM orders WHERE email = remote_write()", db, match="dblink")
    refused(check_explain_only_dml, "DELETE FROM orders WHERE email = remote_write()", db, match="dblink")
