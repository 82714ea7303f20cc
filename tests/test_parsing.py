"""Query understanding: placeholder repair, column roles, parameters, intent, utility/internal detection."""

from __future__ import annotations

import psycopg
import pytest

from pg_architect.auditor.parsing import (
    ColumnUse,
    QueryShape,
    TableRef,
    UnparseableQuery,
    is_internal,
    parse_query,
    repair_placeholders,
    resolve_columns,
    skip_reason,
)


def uses(shape: QueryShape, role: str) -> list[tuple[str | None, str | None]]:
    """(table name, column or expression) of each use in ``role``."""
    return [(u.table.name if u.table else None, u.column or u.expression) for u in shape.columns if u.role == role]


def only(shape: QueryShape, role: str) -> ColumnUse:
    found = [u for u in shape.columns if u.role == role]
    assert len(found) == 1, f"expected one {role} use, got {found}"
    return found[0]


# -- placeholder repair ----------------------------------------------------------------------------


@pytest.mark.parametrize(("normalised", "repaired"), [
    ("SELECT * FROM t WHERE ts > now() - interval $2", "SELECT * FROM t WHERE ts > now() - $2::interval"),
    ("SELECT * FROM t WHERE ts > timestamp $1", "SELECT * FROM t WHERE ts > $1::timestamp"),
    ("SELECT * FROM t WHERE d = date $3", "SELECT * FROM t WHERE d = $3::date"),
    ("SELECT timestamp with time zone $1", "SELECT $1::timestamp with time zone"),
    ("SELECT interval $1 day", "SELECT $1::interval day"),
    ("SELECT interval $1 hour to minute", "SELECT $1::interval hour to minute"),
    ("SELECT pg_catalog.date $1", "SELECT $1::pg_catalog.date"),
    ("SELECT varchar(10) $1, double precision $2", "SELECT $1::varchar(10), $2::double precision"),
    ("SELECT 'ünïcode', date $1", "SELECT 'ünïcode', $1::date"),
])
def test_repair_rewrites_typed_literal_placeholders_into_casts(normalised: str, repaired: str) -> None:
    assert repair_placeholders(normalised) == repaired


@pytest.mark.parametrize("valid", [
    "SELECT * FROM t WHERE a = $1::text",
    "SELECT * FROM t WHERE a IN ($1, $2) AND b = ANY($3)",
    "SELECT * FROM t ORDER BY a LIMIT $3 OFFSET $4",
    "SELECT CAST($1 AS integer), x AT TIME ZONE $2 FROM t",
    "SELECT 'interval $1' /* date $2 */ FROM t",
])
def test_repair_leaves_valid_placeholders_strings_and_comments_alone(valid: str) -> None:
    assert repair_placeholders(valid) == valid


def test_repaired_typed_literals_are_accepted_by_postgresql_where_the_normalised_text_is_not(
        postgresql: psycopg.Connection) -> None:
    postgresql.execute("CREATE TABLE events (id int, created_at timestamptz, day date)")
    postgresql.commit()
    normalised = "SELECT id FROM events WHERE created_at > now() - interval $1 AND day >= date $2"
    with pytest.raises(psycopg.errors.SyntaxError):
        postgresql.execute(f"EXPLAIN (GENERIC_PLAN) {normalised}")
    postgresql.rollback()
    plan = postgresql.execute(f"EXPLAIN (GENERIC_PLAN) {repair_placeholders(normalised)}").fetchall()
    assert plan, "the server refused the repaired text"


# -- errors ----------------------------------------------------------------------------------------------


def test_unparseable_text_raises_a_clear_error() -> None:
    with pytest.raises(UnparseableQuery, match="cannot parse"):
        parse_query("SELEC id FROM orders")


def test_more_than_one_statement_is_refused() -> None:
    with pytest.raises(UnparseableQuery, match="2 statements"):
        parse_query("SELECT 1; SELECT 2")


def test_empty_text_is_refused() -> None:
    with pytest.raises(UnparseableQuery, match="no statement"):
        parse_query("  /* nothing */ ")


# -- roles ---------------------------------------------------------------------------------------------


def test_pagination_query_has_equality_sort_and_limit_and_a_plain_intent() -> None:
    shape = parse_query("SELECT id, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20")
    assert shape.kind == "select" and not shape.is_utility
    assert shape.tables == (TableRef(None, "orders", None),)
    eq = only(shape, "eq")
    assert (eq.table, eq.column, eq.operator, eq.param) == (TableRef(None, "orders"), "customer_id", "=", 1)
    order = only(shape, "order_by")
    assert (order.column, order.descending, order.nulls_first) == ("created_at", True, None)
    assert uses(shape, "select") == [("orders", "id"), ("orders", "total")]
    assert (shape.limit, shape.limit_param) == (20, None)
    assert shape.intent == "Reads orders of one customer, newest first, 20 at a time", shape.intent
    assert shape.complexity == "low"


def test_limit_and_offset_placeholders_are_recorded_with_their_context() -> None:
    shape = parse_query("SELECT * FROM t ORDER BY id LIMIT $3 OFFSET $4")
    assert (shape.limit_param, shape.offset_param) == (3, 4)
    assert shape.parameters[3].context == "limit" and shape.parameters[4].context == "offset", shape.parameters


def test_join_on_marks_both_sides_as_join_and_resolves_aliases() -> None:
    shape = parse_query(
        "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.email = $1")
    assert shape.joins == 1
    assert sorted(uses(shape, "join")) == [("customers", "id"), ("orders", "customer_id")]
    eq = only(shape, "eq")
    assert eq.table == TableRef(None, "customers", "c") and eq.column == "email", eq


def test_join_using_marks_the_column_on_both_tables() -> None:
    shape = parse_query("SELECT * FROM orders JOIN order_items USING (order_id)")
    assert sorted(uses(shape, "join")) == [("order_items", "order_id"), ("orders", "order_id")]


def test_implicit_join_in_where_is_a_join() -> None:
    shape = parse_query("SELECT * FROM a, b WHERE a.id = b.a_id AND b.kind = $1")
    assert shape.joins == 1
    assert sorted(uses(shape, "join")) == [("a", "id"), ("b", "a_id")]
    assert uses(shape, "eq") == [("b", "kind")]


@pytest.mark.parametrize(("where", "role", "operator"), [
    ("amount > $1", "range", ">"),
    ("$1 < amount", "range", ">"),
    ("amount <= $1", "range", "<="),
    ("amount <> $1", "neq", "<>"),
    ("NOT (amount = $1)", "neq", "<>"),
    ("name LIKE $1", "like", "LIKE"),
    ("name ILIKE $1", "like", "ILIKE"),
    ("name NOT LIKE $1", "neq", "NOT LIKE"),
    ("name IN ($1, $2, $3)", "in", "IN"),
    ("name = ANY($1)", "in", "= ANY"),
    ("name NOT IN ($1)", "neq", "NOT IN"),
    ("amount IS NOT DISTINCT FROM $1", "eq", "IS NOT DISTINCT FROM"),
])
def test_predicate_roles_and_operators_are_normalised_to_column_op_value(where: str, role: str, operator: str) -> None:
    shape = parse_query(f"SELECT * FROM t WHERE {where}")
    use = shape.columns[0]
    assert (use.role, use.operator, use.param) == (role, operator, 1), use


def test_between_is_recorded_as_a_lower_and_an_upper_bound() -> None:
    shape = parse_query("SELECT * FROM t WHERE created_at BETWEEN $1 AND $2")
    bounds = [(u.operator, u.param) for u in shape.columns if u.role == "range"]
    assert bounds == [(">=", 1), ("<=", 2)], bounds
    assert (shape.parameters[1].operator, shape.parameters[2].operator) == (">=", "<=")


def test_is_null_and_bare_boolean_columns_are_recorded() -> None:
    shape = parse_query("SELECT * FROM t WHERE deleted_at IS NULL AND NOT archived AND paid IS TRUE")
    null = only(shape, "is_null")
    assert (null.column, null.operator) == ("deleted_at", "IS NULL")
    flags = [(u.column, u.constant) for u in shape.columns if u.role == "eq"]
    assert flags == [("archived", "false"), ("paid", "true")], flags


def test_constant_comparisons_keep_the_constant_for_partial_indexes() -> None:
    shape = parse_query("SELECT id FROM jobs WHERE state = 'queued' ORDER BY run_at LIMIT 10 FOR UPDATE SKIP LOCKED")
    eq = only(shape, "eq")
    assert (eq.column, eq.constant, eq.param) == ("state", "queued", None)


@pytest.mark.parametrize(("where", "expression", "column"), [
    ("lower(email) = $1", "lower(email)", "email"),
    ("lower(u.email) = $1", "lower(email)", "email"),
    ("date_trunc('day', created_at) = $1", "date_trunc('day', created_at)", "created_at"),
    ("created_at::date = $1", "CAST(created_at AS date)", "created_at"),
    ("coalesce(closed_at, opened_at) > $1", "COALESCE(closed_at, opened_at)", "closed_at"),
])
def test_expression_predicates_record_the_unqualified_expression_and_its_columns(
        where: str, expression: str, column: str) -> None:
    shape = parse_query(f"SELECT * FROM users u WHERE {where}")
    use = shape.columns[0]
    assert use.column is None and use.expression == expression, use
    assert column in use.columns and use.table == TableRef(None, "users", "u"), use
    assert shape.parameters[1].expression == expression


def test_expressions_holding_a_normalised_constant_are_marked_parameterised() -> None:
    shape = parse_query("SELECT * FROM t WHERE date_trunc($1, created_at) = $2 AND lower(email) = $3 "
                        "AND note = '$4'")
    flags = [(u.expression or u.column, u.parameterised) for u in shape.columns]
    assert flags == [("date_trunc($1, created_at)", True), ("lower(email)", False), ("note", False)], flags
    assert shape.parameters[1].function == "date_trunc"


def test_order_by_direction_nulls_ordinal_and_group_by() -> None:
    shape = parse_query("SELECT customer_id, count(*) AS n FROM orders GROUP BY 1 "
                        "ORDER BY n DESC, customer_id ASC NULLS FIRST")
    assert uses(shape, "group_by") == [("orders", "customer_id")]
    order = only(shape, "order_by")  # ORDER BY n is count(*): no column to index
    assert (order.column, order.descending, order.nulls_first) == ("customer_id", False, True)
    assert shape.aggregates == ("count",)
    assert shape.intent.startswith("Counts orders"), shape.intent


def test_subqueries_ctes_exists_and_in_subquery_are_walked() -> None:
    shape = parse_query(
        "WITH recent AS (SELECT * FROM orders WHERE created_at >= $1) "
        "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM recent r WHERE r.customer_id = c.id) "
        "AND c.region_id IN (SELECT id FROM regions WHERE name = $2)")
    assert {t.name for t in shape.tables} == {"orders", "customers", "regions"}, shape.tables
    assert shape.ctes == 1 and shape.subqueries == 2
    assert ("orders", "created_at") in uses(shape, "range")
    assert ("regions", "name") in uses(shape, "eq")
    assert ("customers", "region_id") in uses(shape, "in")
    # r.customer_id is a CTE column: not a base table column, so not recorded as one
    assert ("customers", "id") in uses(shape, "join") and all(t != "recent" for t, _ in uses(shape, "join"))
    assert shape.complexity in ("medium", "high")


def test_or_at_the_top_of_where_is_flagged() -> None:
    assert parse_query("SELECT * FROM t WHERE a = $1 OR b = $2").or_predicates
    assert parse_query("SELECT * FROM t WHERE c = $3 AND (a = $1 OR b = $2)").or_predicates
    assert not parse_query("SELECT * FROM t WHERE a = $1 AND b = $2").or_predicates
    assert not parse_query("SELECT * FROM t WHERE a IN (SELECT x FROM u WHERE y = 1 OR z = 2)").or_predicates


def test_update_delete_and_insert_select_are_understood() -> None:
    update = parse_query("UPDATE accounts SET balance = balance - $1 WHERE id = $2")
    assert update.kind == "update" and uses(update, "eq") == [("accounts", "id")]
    assert update.parameters[2].column == "id"
    delete = parse_query("DELETE FROM sessions WHERE expires_at < $1")
    assert delete.kind == "delete" and uses(delete, "range") == [("sessions", "expires_at")]
    insert = parse_query("INSERT INTO archive (id, total) SELECT id, total FROM orders WHERE created_at < $1")
    assert insert.kind == "insert" and [t.name for t in insert.tables] == ["archive", "orders"]
    assert uses(insert, "range") == [("orders", "created_at")]
    assert insert.intent.startswith("Inserts rows into archive from orders"), insert.intent


def test_insert_values_and_update_set_placeholders_take_their_target_column() -> None:
    shape = parse_query("INSERT INTO users (email, name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET name = $3")
    assert [(p.column, p.context) for p in shape.parameters.values()] == [
        ("email", "other"), ("name", "other"), ("name", "other")]


def test_merge_is_understood() -> None:
    shape = parse_query("MERGE INTO stock s USING deliveries d ON s.item_id = d.item_id "
                        "WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty "
                        "WHEN NOT MATCHED THEN INSERT VALUES (d.item_id, d.qty)")
    assert shape.kind == "merge" and sorted(uses(shape, "join")) == [("deliveries", "item_id"), ("stock", "item_id")]


def test_window_functions_aggregates_and_distinct_raise_complexity() -> None:
    shape = parse_query("SELECT DISTINCT customer_id, sum(total) OVER (PARTITION BY customer_id), "
                        "rank() OVER (ORDER BY created_at) FROM orders o JOIN customers c ON c.id = o.customer_id "
                        "WHERE o.total > (SELECT avg(total) FROM orders)")
    assert shape.window_functions == ("sum", "rank") and shape.aggregates == ("avg",)
    assert shape.distinct and shape.complexity == "high", (shape.distinct, shape.complexity)


def test_placeholder_parameters_record_column_operator_context_and_cast() -> None:
    shape = parse_query("SELECT * FROM orders WHERE status IN ($1, $2) AND tag = ANY($3) AND note LIKE $4 "
                        "AND created_at > now() - interval $5 AND $6 >= total AND id = $7::bigint")
    params = shape.parameters
    assert (params[1].column, params[1].context) == ("status", "in_list")
    assert (params[3].column, params[3].context) == ("tag", "any_array")
    assert (params[4].column, params[4].context) == ("note", "like")
    assert (params[5].context, params[5].cast_type) == ("other", "interval")
    assert (params[6].column, params[6].operator, params[6].context) == ("total", "<=", "compare")
    assert (params[7].column, params[7].cast_type) == ("id", "bigint")


def test_unqualified_columns_over_several_tables_are_resolved_from_the_catalog(
        postgresql: psycopg.Connection) -> None:
    postgresql.execute("CREATE TABLE orders (id int, customer_id int, created_at timestamptz)")
    postgresql.execute("CREATE TABLE customers (id int, email text)")
    shape = parse_query("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id "
                        "WHERE email = $1 ORDER BY created_at DESC")
    assert only(shape, "eq").table is None, "email is ambiguous without the catalog"
    rows = postgresql.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                              "WHERE table_schema = 'public'").fetchall()
    columns: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        columns.setdefault((schema, table), set()).add(column)
    resolved = resolve_columns(shape, columns)
    assert only(resolved, "eq").table == TableRef(None, "customers", "c")
    assert only(resolved, "order_by").table == TableRef(None, "orders", "o")
    assert resolved.parameters[1].table == TableRef(None, "customers", "c")


# -- utility and internal statements ---------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "SET search_path = public", "SET application_name = $1", "SHOW work_mem", "BEGIN", "COMMIT",
    "ROLLBACK", "VACUUM ANALYZE orders", "EXPLAIN SELECT 1", "CREATE TABLE x (id int)",
    "CREATE INDEX i ON t (a)", "DEALLOCATE $1", "LOCK TABLE t", "TRUNCATE t",
])
def test_utility_statements_are_flagged_so_the_auditor_skips_them(text: str) -> None:
    shape = parse_query(text)
    assert shape.is_utility and shape.kind == "utility", shape
    reason = skip_reason(text)
    assert reason is not None and reason.startswith("utility"), reason


@pytest.mark.parametrize("text", [
    "/* pg-architect */ SELECT * FROM orders WHERE id = $1",
    "SELECT * FROM pg_catalog.pg_class WHERE relname = $1",
    "SELECT * FROM pg_stat_activity",
    "SELECT queryid, calls FROM pg_stat_statements",
    "SELECT s.queryid FROM public.pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid",
    "SELECT * FROM information_schema.tables t JOIN pg_namespace n ON n.nspname = t.table_schema",
    "SELECT * FROM pgarch.runs WHERE id = $1",
])
def test_our_own_and_catalog_only_statements_are_internal(text: str) -> None:
    assert is_internal(text), text
    assert (skip_reason(text) or "").startswith("internal")


@pytest.mark.parametrize("text", [
    "SELECT * FROM orders WHERE id = $1",
    "SELECT * FROM orders o JOIN pg_catalog.pg_class c ON c.relname = o.name",
    "SELECT 'pg-architect' FROM orders",
])
def test_user_statements_are_not_internal(text: str) -> None:
    assert not is_internal(text), text
    assert skip_reason(text) is None
