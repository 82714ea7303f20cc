"""Placeholder types and representative values, from the catalog and pg_stats of a real database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pg_architect.auditor import analysis
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.params import (
    DEFAULT_LIMIT,
    DEFAULT_OFFSET,
    ParameterError,
    bind_parameters,
    infer_parameter_types,
    sample_parameters,
)
from pg_architect.auditor.parsing import QueryShape, parse_query
from pg_architect.auditor.safety import check_readonly_select

ROWS = 20000
SCHEMA = f"""
CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 200) i;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text, email text, total numeric(10, 2),
                     created_at timestamptz, tags text[]);
INSERT INTO orders
SELECT i, 1 + i % 200,
       CASE WHEN i % 100 = 0 THEN 'queued' WHEN i % 10 = 0 THEN 'failed' ELSE 'done' END,
       'user' || i || '@example.org', (i % 1000) / 10.0,
       timestamptz '2024-01-01' + i * interval '5 minutes', ARRAY['t' || (i % 7)]
FROM generate_series(1, {ROWS}) i;
ANALYZE customers, orders;
CREATE TABLE fresh (id int, code text) WITH (autovacuum_enabled = false);
INSERT INTO fresh SELECT i, 'code-' || i FROM generate_series(1, 300) i;
"""


def infer(conn: psycopg.Connection, text: str) -> dict[int, str]:
    """Placeholder types as the audit infers them: parsed, resolved against a catalog snapshot, inferred."""
    snapshot = Snapshot(conn)
    resolved, _ = analysis.resolve(snapshot, parse_query(text))
    return infer_parameter_types(snapshot, resolved)


def sample(conn: psycopg.Connection, shape: QueryShape, n_samples: int = 3) -> list[dict[int, str]]:
    snapshot = Snapshot(conn)
    resolved, _ = analysis.resolve(snapshot, shape)
    return sample_parameters(snapshot, resolved, infer_parameter_types(snapshot, resolved), n_samples)


@pytest.fixture
def conn(postgresql: psycopg.Connection) -> Iterator[psycopg.Connection]:
    postgresql.execute(SCHEMA)
    postgresql.commit()
    postgresql.autocommit = True  # as the auditor's dedicated connection
    yield postgresql


def scalar(conn: psycopg.Connection, sql: str, *params: object) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# -- types -------------------------------------------------------------------------------------------


def test_types_come_from_the_column_each_placeholder_meets(conn: psycopg.Connection) -> None:
    types = infer(conn, "SELECT * FROM orders WHERE customer_id = $1 AND status = $2 "
                                        "AND created_at > now() - interval $3 AND tags @> $4 "
                                        "ORDER BY id LIMIT $5 OFFSET $6")
    assert types == {1: "integer", 2: "text", 3: "interval", 4: "text[]", 5: "bigint", 6: "bigint"}, types


def test_types_of_any_arrays_like_patterns_expressions_and_between(conn: psycopg.Connection) -> None:
    types = infer(conn, "SELECT * FROM orders o WHERE o.id = ANY($1) AND o.email LIKE $2 "
                                        "AND lower(o.email) = $3 AND o.created_at::date = $4 "
                                        "AND o.total BETWEEN $5 AND $6 AND date_trunc($7, o.created_at) = $8")
    assert types == {1: "bigint[]", 2: "text", 3: "text", 4: "date", 5: "numeric(10,2)", 6: "numeric(10,2)",
                     7: "text", 8: "timestamp with time zone"}, types


def test_unqualified_columns_of_a_join_are_typed_through_the_catalog(conn: psycopg.Connection) -> None:
    types = infer(conn, "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id "
                                        "WHERE name = $1 AND total > $2")
    assert types == {1: "text", 2: "numeric(10,2)"}, types


def test_update_set_and_insert_values_placeholders_take_their_column_type(conn: psycopg.Connection) -> None:
    assert infer(conn, "UPDATE orders SET total = $1 WHERE id = $2") == {1: "numeric(10,2)", 2: "bigint"}
    assert infer(conn, "INSERT INTO orders (id, status) VALUES ($1, $2)") == {
        1: "bigint", 2: "text"}


# -- samples -------------------------------------------------------------------------------------------


def test_equality_samples_a_common_value_first_then_a_rare_one(conn: psycopg.Connection) -> None:
    samples = sample(conn, parse_query("SELECT * FROM orders WHERE status = $1"))
    assert len(samples) == 3
    first, second = samples[0][1], samples[1][1]
    assert first == "done", samples
    frequencies = [scalar(conn, "SELECT count(*) FROM orders WHERE status = %s", v) for v in (first, second)]
    assert frequencies[1] < frequencies[0], f"{second!r} ({frequencies[1]}) is not rarer than {first!r}"


def test_range_samples_come_from_the_histogram_with_a_realistic_selectivity(conn: psycopg.Connection) -> None:
    samples = sample(conn, parse_query("SELECT * FROM orders WHERE created_at > $1"))
    shares = [scalar(conn, "SELECT count(*) FROM orders WHERE created_at > %s::timestamptz", s[1]) / ROWS
              for s in samples]
    assert 0.02 <= shares[0] <= 0.10, shares
    assert all(0.0 < share <= 0.35 for share in shares), shares


def test_between_samples_a_non_empty_range(conn: psycopg.Connection) -> None:
    for values in sample(conn, parse_query("SELECT * FROM orders WHERE total BETWEEN $1 AND $2")):
        low, high = float(values[1]), float(values[2])
        assert low <= high, values
        matched = scalar(conn, "SELECT count(*) FROM orders WHERE total BETWEEN %s AND %s", low, high)
        assert 0 < matched < ROWS, (values, matched)


def test_like_samples_a_prefix_of_a_real_value(conn: psycopg.Connection) -> None:
    for values in sample(conn, parse_query("SELECT * FROM orders WHERE email LIKE $1")):
        assert values[1].endswith("%") and len(values[1]) > 1, values
        assert scalar(conn, "SELECT count(*) FROM orders WHERE email LIKE %s", values[1]), values


def test_in_lists_get_different_real_values_and_any_arrays_real_arrays(conn: psycopg.Connection) -> None:
    shape = parse_query("SELECT * FROM orders WHERE status IN ($1, $2) AND customer_id = ANY($3)")
    values = sample(conn, shape, n_samples=1)[0]
    assert values[1] != values[2] and {values[1], values[2]} <= {"done", "failed", "queued"}, values
    assert values[3].startswith("{") and values[3].endswith("}"), values
    assert scalar(conn, "SELECT count(*) FROM orders WHERE customer_id = ANY(%s::int[])", values[3]), values


def test_limit_and_offset_get_sensible_defaults(conn: psycopg.Connection) -> None:
    values = sample(conn, parse_query("SELECT * FROM orders ORDER BY id LIMIT $1 OFFSET $2"))[0]
    assert (values[1], values[2]) == (DEFAULT_LIMIT, DEFAULT_OFFSET) == ("20", "0")


def test_columns_without_statistics_are_sampled_from_the_table_without_analysing_it(
        conn: psycopg.Connection) -> None:
    assert scalar(conn, "SELECT count(*) FROM pg_stats WHERE tablename = 'fresh'") == 0
    samples = sample(conn, parse_query("SELECT * FROM fresh WHERE code = $1 AND id > $2"))
    for values in samples:
        assert scalar(conn, "SELECT count(*) FROM fresh WHERE code = %s", values[1]) == 1, values
        assert scalar(conn, "SELECT count(*) FROM fresh WHERE id = %s::int", values[2]) == 1, values
    assert scalar(conn, "SELECT count(*) FROM pg_stats WHERE tablename = 'fresh'") == 0, "fresh was analysed"
    assert scalar(conn, "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM pg_stat_user_tables "
                        "WHERE relname = 'fresh'") is True


def test_expression_placeholders_get_real_values_of_the_expression(conn: psycopg.Connection) -> None:
    shape = parse_query("SELECT * FROM orders WHERE lower(email) = $1 AND date_trunc($2, created_at) = $3")
    for values in sample(conn, shape):
        assert values[2] == "day", values
        matched = scalar(conn, "SELECT count(*) FROM orders WHERE lower(email) = %s", values[1])
        assert matched == 1, values
        assert scalar(conn, "SELECT count(*) FROM orders WHERE date_trunc('day', created_at) = %s::timestamptz",
                      values[3]), values


def test_executable_samples_pass_the_read_only_check_and_find_rows(conn: psycopg.Connection) -> None:
    text = ("SELECT id, total FROM orders WHERE customer_id = $1 AND created_at > timestamptz $2 "
            "ORDER BY created_at DESC LIMIT $3")
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query(text))
    statements = analysis.analyse(snapshot, resolved, tables, 3).samples
    assert statements, "no executable sample"
    found = 0
    for sql in statements:
        check_readonly_select(sql, conn)
        found += len(conn.execute(sql).fetchall())
    assert found > 0, statements


# -- binding -------------------------------------------------------------------------------------------


def test_bind_quotes_values_and_leaves_placeholders_in_strings_and_comments(conn: psycopg.Connection) -> None:
    value = "O'Reilly \\ $2 '; DROP TABLE orders; --"
    sql = bind_parameters("SELECT $1 AS v, '$1' AS s, $$ $1 $$ AS d /* $1 */ -- $1\n", {1: value}, {1: "text"})
    assert conn.execute(sql).fetchone() == (value, "$1", " $1 "), sql
    assert scalar(conn, "SELECT count(*) FROM orders") == ROWS


def test_bind_casts_to_the_inferred_types_and_repairs_typed_literals(conn: psycopg.Connection) -> None:
    text = "SELECT count(*) FROM orders WHERE created_at > timestamptz $1 - interval $2 AND id = ANY($3)"
    types = infer(conn, text)
    sql = bind_parameters(text, {1: "2024-01-10", 2: "1 day", 3: "{1,2,3000}"}, types)
    assert "::interval" in sql and "::bigint[]" in sql, sql
    assert scalar(conn, sql) == 1


def test_bind_binds_null_and_refuses_missing_values_and_bad_type_names() -> None:
    assert bind_parameters("SELECT $1", {1: None}, {1: "integer"}) == "SELECT (NULL::integer)"
    with pytest.raises(ParameterError, match="no value given for \\$2"):
        bind_parameters("SELECT $1, $2", {1: "1"}, {1: "integer", 2: "integer"})
    for bad in ("integer; DROP TABLE orders", "integer) FROM orders --", "int4 WHERE true"):
        with pytest.raises(ParameterError, match="not a type name"):
            bind_parameters("SELECT $1", {1: "1"}, {1: bad})


TYPED = """
CREATE DOMAIN sku AS text CHECK (VALUE <> '');
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE part (id int PRIMARY KEY, brand char(10), code varchar(12), s sku, m mood, tags text[],
                   price numeric(8, 2));
INSERT INTO part SELECT i, 'Brand#' || (i % 50), 'c' || (i % 1000), 'sku' || (i % 300),
       (ARRAY['sad', 'ok', 'happy']::mood[])[1 + i % 3], ARRAY['t' || (i % 7)], (i % 1000) / 10.0
FROM generate_series(1, 20000) i;
ANALYZE part;
"""


@pytest.mark.parametrize(
    ("text", "expected_type"),
    [
        # char(10) bound as plain ``character`` is char(1): 'B', matching nothing (TPC-H Q17's p_brand).
        ("SELECT id FROM part WHERE brand = $1", "character(10)"),
        ("SELECT id FROM part WHERE brand = ANY($1)", "character(10)[]"),
        ("SELECT id FROM part WHERE brand IN ($1, $2)", "character(10)"),
        ("SELECT id FROM part WHERE brand = $1::char(10)", "char(10)"),
        ("SELECT id FROM part WHERE code = $1", "character varying(12)"),
        ("SELECT id FROM part WHERE price = $1", "numeric(8,2)"),
        ("SELECT id FROM part WHERE s = $1", "sku"),
        ("SELECT id FROM part WHERE m = $1", "mood"),
        ("SELECT id FROM part WHERE tags @> $1", "text[]"),
    ],
)
def test_parameters_bind_with_the_full_type_and_find_rows(
    conn: psycopg.Connection, text: str, expected_type: str
) -> None:
    """Type modifiers, domains, enums and arrays survive binding: every sample finds the rows it was drawn from."""
    conn.execute(TYPED)
    assert infer(conn, text)[1] == expected_type
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query(text))
    statements = analysis.analyse(snapshot, resolved, tables, 3).samples
    assert statements
    for sql in statements:
        assert conn.execute(sql).fetchall(), f"no row for {sql}"


def test_equality_on_several_columns_samples_combinations_real_rows_have(conn: psycopg.Connection) -> None:
    """Each column's common value alone exists, but not together: drawn from real rows, every sample matches."""
    # The most common region (north, 60 %) has many small towns; the most common city is the south's capital.
    conn.execute("CREATE TABLE places AS SELECT i AS id, CASE WHEN i % 5 < 3 THEN 'north' ELSE 'south' END AS region, "
                 "CASE WHEN i % 5 < 3 THEN 'town ' || (i % 600) ELSE 'capital' END AS city "
                 "FROM generate_series(1, 50000) i")
    conn.execute("ANALYZE places")
    text = "SELECT id FROM places WHERE region = $1 AND city = $2"
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query(text))
    statements = analysis.analyse(snapshot, resolved, tables, 4).samples
    assert len(statements) >= 2, statements
    for sql in statements:
        assert conn.execute(sql).fetchall(), f"no row for {sql}"


def test_a_normalised_limit_takes_the_rows_each_call_returned(conn: psycopg.Connection) -> None:
    """``LIMIT 1000`` reaches pg_stat_statements as ``LIMIT $2``: sampled as 20 it returns 20 rows against the
    1,000 recorded per call, a sample of another statement (Dexter's ORDER BY ... LIMIT 1000)."""
    text = "SELECT id FROM orders WHERE status = $1 ORDER BY created_at LIMIT $2"
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query(text))
    for sql in analysis.analyse(snapshot, resolved, tables, 2, rows_per_call=1000.0).samples:
        assert "LIMIT ('1000'::bigint)" in sql, sql
    for sql in analysis.analyse(snapshot, resolved, tables, 2, rows_per_call=3.0).samples:
        assert f"'{DEFAULT_LIMIT}'" in sql, sql


def test_a_range_that_is_the_only_filter_takes_the_selectivity_each_call_had(conn: psycopg.Connection) -> None:
    """``id < $1`` returning 2.5 rows a call is no 1 % slice: the first sample selects about what was recorded
    (HypoPG's and pg_qualstats' ``id < $1`` cases were otherwise sampled at 5,000 rows and more)."""
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query("SELECT * FROM orders WHERE id < $1"))
    first = analysis.analyse(snapshot, resolved, tables, 3, rows_per_call=2.5).samples[0]
    assert len(conn.execute(first).fetchall()) <= 25, first
