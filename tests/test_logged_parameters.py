"""The slow statements' real parameters, read from the server's log (auditor.logged, ``auditor.server_log``).

On a server that logs its slow statements, the audit measures with the values the application ran: a
constant pg_stat_statements normalised inside an indexed expression comes back (``date_trunc('day', ...)``), and
a range whose calls read most of the table is measured as read, not as a selective sample drawn from pg_stats.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_architect.auditor import logged
from pg_architect.auditor.parsing import parse_query
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.core.serverlog import Directory, ServerFiles
from tests.conftest import ServerInfo, make_database
from tests.test_measurement import audit

# -- lining a logged call up with pg_stat_statements' text (no server) ---------------------------------------


def test_each_placeholder_meets_the_constant_or_bind_parameter_the_call_ran_with() -> None:
    # PostgreSQL 18 numbers constants and bind parameters together, in order of position.
    template = (
        "SELECT count(*) FROM t WHERE date_trunc($1, ts) = $2 AND a = $3 AND j->>$4 = $5 AND a IN ($6 /*, ... */)"
    )
    text = "SELECT count(*) FROM t WHERE date_trunc('day', ts) = $1 AND a = -1 AND j->>'k' = $2 AND a IN (7, 8, 9)"
    binds = logged.bind_parameters("Parameters: $1 = '2024-01-01 00:00:00+00', $2 = 'it''s'", None)
    found = logged.align(template, text, binds)
    assert found is not None
    values, written = found
    assert values == {1: "day", 2: "2024-01-01 00:00:00+00", 3: "-1", 4: "k", 5: "it's", 6: "7"}
    assert written == {1: "'day'", 3: "-1", 4: "'k'"}  # a squashed IN list is data, never written back


def test_another_statement_under_the_same_text_does_not_line_up() -> None:
    template = "SELECT * FROM t WHERE a > $1 AND ts > now() - interval $2"
    assert logged.align(template, "SELECT * FROM t WHERE b > 5 AND ts > now() - interval '2 hours'", {}) is None
    assert logged.align(template, "SELECT * FROM t WHERE a > 5", {}) is None
    # One statement of a multi-statement string is enough.
    found = logged.align(template, "SET x = 1; SELECT * FROM t WHERE a > 5 AND ts > now() - interval '2 hours'", {})
    assert found is not None and found[0] == {1: "5", 2: "2 hours"}


def test_a_parameter_the_server_cut_short_is_left_out() -> None:
    detail = "Parameters: $1 = 'abcdefghij...', $2 = NULL, $3 = 'short'"
    assert logged.bind_parameters(detail, 10) == {2: None, 3: "short"}
    assert logged.bind_parameters(detail, -1) == {1: "abcdefghij...", 2: None, 3: "short"}


def test_constants_written_back_leave_the_other_placeholders_numbered_without_a_gap() -> None:
    text, renumber = logged.with_constants("SELECT 1 FROM t WHERE date_trunc($1, ts) = $2 AND a = $3", {1: "'day'"})
    assert text == "SELECT 1 FROM t WHERE date_trunc('day', ts) = $1 AND a = $2"
    assert renumber == {2: 1, 3: 2}


def test_only_a_constant_every_call_wrote_inside_an_indexed_expression_is_shape() -> None:
    shape = parse_query("SELECT count(*) FROM t WHERE date_trunc($1, ts) = $2 AND a = $3")

    def call(unit: str, a: str) -> logged.LoggedCall:
        return logged.LoggedCall(10.0, {1: unit, 2: "2024-01-01", 3: a}, {1: f"'{unit}'", 3: a})

    assert logged.shape_constants([call("day", "1"), call("day", "1")], shape) == {1: "'day'"}  # not $3: data
    assert logged.shape_constants([call("day", "1"), call("hour", "1")], shape) == {}


# -- a server that logs its slow statements ------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_log_pg() -> Iterator[ServerInfo]:
    """An embedded server logging every statement with its parameters, in all three formats."""
    root = Path(tempfile.mkdtemp(prefix="pgarch-paramlog-"))
    server = EmbeddedPostgres(
        root / "data",
        settings={
            "logging_collector": "on",
            "log_destination": "'csvlog,jsonlog,stderr'",
            "log_directory": "'log'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_rotation_size": "0",
            "log_rotation_age": "0",
            "log_min_duration_statement": "0",
        },
    )
    server.start()
    try:
        yield ServerInfo(host=server.host, port=server.port, user="postgres", server=server)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _query(report: dict[str, Any], fragment: str) -> dict[str, Any]:
    found = [q for q in report["slow_queries"] if fragment in q["query"]]
    assert len(found) == 1, [q["query"] for q in report["slow_queries"]]
    query: dict[str, Any] = found[0]
    return query


DAYS = [datetime(2025, 3, 1) + timedelta(days=d) for d in (3, 40, 77, 150, 233, 301)]


@pytest.fixture(scope="module")
def events_db(slow_log_pg: ServerInfo) -> str:
    dsn = make_database(slow_log_pg, "paramlog", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, occurred_at timestamp NOT NULL, amount int NOT NULL)")
        conn.execute("INSERT INTO events SELECT i, timestamp '2025-03-01' + (i % 365) * interval '1 day' "
                     "+ (i % 86400) * interval '1 s', i % 100 FROM generate_series(1, 400000) i")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, created_at timestamptz NOT NULL, total int NOT NULL)")
        conn.execute("INSERT INTO orders SELECT i, timestamptz '2022-01-01 00:00+00' + i * interval '75 s', i % 500 "
                     "FROM generate_series(1, 400000) i")
        conn.execute("CREATE TABLE visits (id int PRIMARY KEY, session_id bigint NOT NULL)")
        conn.execute("INSERT INTO visits SELECT i, i % 100000 FROM generate_series(1, 400000) i")
        conn.execute("ANALYZE events")
        conn.execute("ANALYZE orders")
        conn.execute("ANALYZE visits")
        conn.execute("SELECT pg_stat_statements_reset()")
        # Only the slowest call of ten reaches the log (the others ran under its threshold).
        for n in range(10):
            conn.execute("SET log_min_duration_statement = " + ("0" if n == 0 else "-1"))
            conn.execute("SELECT count(*) FROM visits WHERE session_id = %s", (1000 + n * 37,))
        conn.execute("RESET log_min_duration_statement")
        for day in DAYS:
            conn.execute("SELECT count(*), sum(amount) FROM events WHERE date_trunc('day', occurred_at) = %s", (day,))
            # The application's months keep 94 % of the orders: an index on created_at serves none of its calls.
            conn.execute(
                "SELECT date_trunc('month', created_at) AS month, count(*), sum(total) FROM orders "
                "WHERE created_at >= %s GROUP BY 1",
                (datetime(2022, 1, 20, tzinfo=UTC) + timedelta(hours=day.day),),
            )
    return dsn


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog", "stderr"])
def test_the_calls_of_a_statement_are_read_from_each_log_format(
    slow_log_pg: ServerInfo, events_db: str, fmt: str
) -> None:
    with psycopg.connect(events_db, autocommit=True) as conn:
        qid, text = conn.execute(
            "SELECT queryid, query FROM pg_stat_statements WHERE query LIKE '%date_trunc%' AND query LIKE '%events%'"
        ).fetchone() or (0, "")
        assert isinstance(slow_log_pg.server, EmbeddedPostgres)
        directory = slow_log_pg.server.data_dir / "log"
        for files in (Directory(str(directory)), ServerFiles("auditor", "auditor.server_log")):
            found = logged.read(conn, files, "paramlog", {qid: text}, 64 << 20, fmt=fmt)
            calls = found.of([qid])
            assert len(calls) == 6, (fmt, files, found)
            # Which placeholder is which depends on the server's numbering: one holds the unit, one the day.
            by_placeholder = sorted((sorted({str(c.values[n]) for c in calls}) for n in (1, 2)), key=len)
            assert by_placeholder[0] == ["day"], by_placeholder
            assert len(by_placeholder[1]) == 6 and by_placeholder[1][0].startswith("2025-03-04")


def test_logged_values_recover_a_normalised_constant_and_keep_a_wide_range_wide(
    slow_log_pg: ServerInfo, events_db: str
) -> None:
    kb = make_database(slow_log_pg, "paramlog_kb", ("vector",))
    without = audit(events_db, kb, min_mean_ms="1")
    assert "replaced a constant" in (_query(without, "occurred_at").get("skip_reason") or "")
    kb = make_database(slow_log_pg, "paramlog_kb_logged", ("vector",))  # nothing pending from the first audit
    report = audit(events_db, kb, min_mean_ms="1", auditor_server_log="pg_read_file")
    day = _query(report, "occurred_at")
    assert day["status"] == "recommended", day["skip_reason"]
    rec = day["recommendation"]
    assert "((date_trunc('day', occurred_at)))" in rec["sql"], rec["sql"]
    assert rec["measurement"]["parameters"] == "server_log"
    assert "of logged calls" in rec["reasoning"]
    # The application's months read 94 % of the orders: no index serves them, whatever a selective draw says.
    monthly = _query(report, "GROUP BY")
    assert monthly["status"] == "no_recommendation", monthly["skip_reason"]
    assert "the plan does not use it" in monthly["skip_reason"], monthly["skip_reason"]
    # One logged call of ten is the statement's slow tail: drawn values stand for the other nine.
    visits = _query(report, "visits")
    assert visits["status"] == "recommended", visits["skip_reason"]
    measured = visits["recommendation"]["measurement"]
    assert measured["parameters"] == "server_log+pg_stats" and measured["samples"] == 2, measured
    assert any("parameters from the server's log: 3 of 3" in n for n in report["notes"]), report["notes"]
    # The values themselves never leave the audit (the plans shown hold no filter value either).
    text = json.dumps(report)
    assert "2022-01-2" not in text
    for day in DAYS:
        assert f"{day:%Y-%m-%d}" not in text


def test_a_server_that_logs_no_slow_statement_is_a_note_and_the_audit_goes_on(embedded_pg: ServerInfo) -> None:
    dsn = make_database(embedded_pg, "paramlog_off", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, k int NOT NULL)")
        conn.execute("INSERT INTO t SELECT i, i % 1000 FROM generate_series(1, 200000) i")
        conn.execute("ANALYZE t")
        for n in range(5):
            conn.execute("SELECT count(*) FROM t WHERE k = %s", (n,))
    kb = make_database(embedded_pg, "paramlog_off_kb", ("vector",))
    report = audit(dsn, kb, min_mean_ms="1", auditor_server_log="pg_read_file")
    assert _query(report, "WHERE k")["status"] == "recommended"
    assert any("log_min_duration_statement is -1" in n for n in report["notes"]), report["notes"]
