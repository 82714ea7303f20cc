"""The advisor's choices over a whole workload, on a real server (issue 20): samples that run what the workload
runs, decisions that timing noise cannot make, one index where one serves several statements, and no index that
makes another slow statement worse."""

from __future__ import annotations

import math
from typing import Any

import psycopg

from pg_architect.auditor import analysis
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import explain
from pg_architect.auditor.parsing import parse_query
from tests.conftest import ServerInfo, make_database
from tests.test_measurement import audit


def _query(report: dict[str, Any], fragment: str) -> dict[str, Any]:
    found = [q for q in report["slow_queries"] if fragment in q["query"]]
    assert len(found) == 1, [q["query"] for q in report["slow_queries"]]
    return found[0]


def test_equalities_carried_through_joins_are_drawn_from_one_row_so_samples_match_rows(
    embedded_pg: ServerInfo,
) -> None:
    """supabase's multi_index statement: ``author.id = $1 AND publisher.id = $2``, both joined to book. Drawn
    apart, an author and a publisher of no common book match nothing; a hash join over no rows skips its other
    side, and the sample measured 2.7x for an index worth 1.35x. Drawn from one book, every sample matches."""
    dsn = make_database(embedded_pg, "workload_carried_samples", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE publisher (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE author (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE book (id int PRIMARY KEY, title text, author_id int, publisher_id int)")
        conn.execute("INSERT INTO publisher SELECT i, 'p' || i FROM generate_series(1, 500) i")
        conn.execute("INSERT INTO author SELECT i, 'a' || i FROM generate_series(1, 20000) i")
        # Each author publishes with one publisher (as in the peer's data, most books of an author do).
        conn.execute("INSERT INTO book SELECT i, 't' || i, 1 + i % 20000, 1 + (i % 20000) % 500 "
                     "FROM generate_series(1, 200000) i")
        for table in ("publisher", "author", "book"):
            conn.execute(f"ANALYZE {table}")
        text = ("SELECT book.title, publisher.name, author.name FROM book JOIN publisher ON book.publisher_id = "
                "publisher.id JOIN author ON book.author_id = author.id WHERE author.id = $1 AND publisher.id = $2")
        catalog = Snapshot(conn)
        resolved, tables = analysis.resolve(catalog, parse_query(text))
        facts = analysis.analyse(catalog, resolved, tables, 6, rows_per_call=10.0)
        assert len(facts.samples) >= 3, facts.samples
        empty = [sql for sql in facts.samples if not conn.execute(sql).fetchall()]
        assert not empty, f"{len(empty)} of {len(facts.samples)} samples match no row, e.g. {empty[0]}"


def test_a_range_beside_an_equality_is_fitted_to_the_rows_each_call_returned(embedded_pg: ServerInfo) -> None:
    """postgres-mcp's ``status = $1 AND amount > $2``: the calls return 27 % of the table ('pending', 90 % of
    the amounts). Drawn from the statistics alone, the closest sample returned 18 %, where a bitmap scan still
    wins 2-3x though the calls gain 1.45x from the index. The range's bound is fitted to the recorded rows."""
    dsn = make_database(embedded_pg, "workload_range_fit", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10, 2) NOT NULL, status text NOT NULL)")
        conn.execute("INSERT INTO orders SELECT i, (i % 1000)::numeric(10, 2), "
                     "CASE WHEN i % 10 < 7 THEN 'completed' ELSE 'pending' END FROM generate_series(1, 400000) i")
        conn.execute("ANALYZE orders")
        text = "SELECT * FROM orders WHERE status = $1 AND amount > $2"
        per_call = float(conn.execute("SELECT count(*) FROM orders WHERE status = 'pending' AND amount > 100")
                         .fetchone()[0])  # type: ignore[index]
        catalog = Snapshot(conn)
        resolved, tables = analysis.resolve(catalog, parse_query(text))
        facts = analysis.analyse(catalog, resolved, tables, 6, rows_per_call=per_call)
        planned = [explain(conn, sql, analyze=False).rows for sql in facts.samples]
    closest = min(planned, key=lambda rows: abs(math.log(rows / per_call)))
    assert per_call / 1.3 <= closest <= per_call * 1.3, (per_call, planned)


def test_a_read_another_statements_index_makes_slower_is_reported_and_the_index_withdrawn(
    embedded_pg: ServerInfo,
) -> None:
    """``ORDER BY created_at DESC LIMIT 10`` wants an index on created_at. A busier statement sorts the same way
    but keeps only rows whose note contains a word that only the oldest rows have: with that index its plan
    walks the whole index backwards hoping to stop early, visiting the heap at random, several times slower
    than the scan and sort it runs now. Checked
    with the whole set in place, that statement is reported and the index, which costs the workload more time
    than it saves, is withdrawn (on today's code it went out at pr_merge)."""
    dsn = make_database(embedded_pg, "workload_plan_regression", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, created_at timestamptz NOT NULL, note text NOT NULL)")
        # Rows are stored in no particular order of time: walking the time index visits the heap at random.
        conn.execute("INSERT INTO events SELECT i, timestamptz '2026-01-01' + j * interval '1 minute', "
                     "CASE WHEN j < 300 THEN 'archived ' || i ELSE 'note ' || i END "
                     "FROM (SELECT i, (hashint4(i) & 2147483647) % 1000000 AS j FROM generate_series(1, 300000) i) s")
        conn.execute("ANALYZE events")
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(4):
            conn.execute("SELECT id, created_at FROM events ORDER BY created_at DESC LIMIT 10")
        for _ in range(30):
            conn.execute("SELECT id FROM events WHERE position(%s in note) > 0 ORDER BY created_at DESC LIMIT 10",
                         ("archived",))
    kb = make_database(embedded_pg, "workload_plan_regression_kb", ("vector",))
    report = audit(dsn, kb, min_mean_ms="0.5")
    recent = _query(report, "SELECT id, created_at FROM events")
    oldest = _query(report, "position(")
    assert oldest["status"] != "recommended", oldest
    notes = [r for r in oldest["rejected_candidates"] if "makes this statement" in r]
    assert notes and "withdrawn" in notes[0], oldest["rejected_candidates"]
    assert recent["status"] == "no_recommendation", recent
    assert "withdrawn for the workload" in (recent["skip_reason"] or ""), recent
    assert oldest["queryid"] in recent["skip_reason"], recent["skip_reason"]


def test_a_statement_another_statements_index_makes_costlier_is_reported_and_the_index_goes_to_review(
    embedded_pg: ServerInfo,
) -> None:
    """``ORDER BY created_at DESC LIMIT 10`` wants an index on created_at (hundreds of times faster). Another
    slow statement of the workload updates created_at on a tenth of the table: with that index in place each of
    its updates also writes the new index and loses its HOT update, several times what it costs now. Checked
    with the whole set in place, the UPDATE is reported, and the index states it and goes to a review instead
    of an automatic merge (on today's code, each statement measured alone, it went out at pr_merge, silent)."""
    dsn = make_database(embedded_pg, "workload_upkeep", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, bucket int NOT NULL, "
                     "created_at timestamptz NOT NULL, note text NOT NULL)")
        conn.execute("INSERT INTO events SELECT i, i % 10, timestamptz '2026-01-01' + i * interval '1 minute', "
                     "'note ' || i FROM generate_series(1, 300000) i")
        conn.execute("ANALYZE events")
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(4):
            conn.execute("SELECT id, created_at FROM events ORDER BY created_at DESC LIMIT 10")
        for n in range(6):
            with conn.transaction(force_rollback=True):
                conn.execute("UPDATE events SET created_at = created_at + interval '1 day' WHERE bucket = %s",
                             (n,))
    kb = make_database(embedded_pg, "workload_upkeep_kb", ("vector",))
    report = audit(dsn, kb, min_mean_ms="0.5")
    recent = _query(report, "SELECT id, created_at FROM events")
    update = _query(report, "UPDATE events")
    notes = [r for r in update["rejected_candidates"] if "makes this statement" in r]
    assert notes and "events (created_at)" in notes[0] and "kept for a review" in notes[0], update
    assert recent["status"] == "recommended", recent
    rec = recent["recommendation"]
    assert '("created_at")' in rec["sql"], rec["sql"]
    assert "Workload check" in rec["reasoning"] and update["queryid"] in rec["reasoning"], rec["reasoning"]
    assert rec["action"] != "pr_merge", rec


def test_one_index_that_serves_three_statements_is_recommended_once(embedded_pg: ServerInfo) -> None:
    """Three statements on ``user_id``: one filters on it alone (its own best is ``(user_id)``), one sorts by
    created_at within it, one takes a range of created_at within it (both want ``(user_id, created_at)``). The
    wider index serves all three as well: the audit recommends that one index for the three, not two."""
    dsn = make_database(embedded_pg, "workload_merge", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE posts (id int PRIMARY KEY, user_id int NOT NULL, created_at timestamptz NOT NULL, "
                     "title text NOT NULL)")
        conn.execute("INSERT INTO posts SELECT i, i % 20000, timestamptz '2026-01-01' + i * interval '1 minute', "
                     "'title ' || i FROM generate_series(1, 400000) i")
        conn.execute("ANALYZE posts")
        conn.execute("SELECT pg_stat_statements_reset()")
        for n in range(6):
            conn.execute("SELECT id, title FROM posts WHERE user_id = %s", (n * 7,))
            conn.execute("SELECT id FROM posts WHERE user_id = %s ORDER BY created_at DESC LIMIT 5", (n * 11,))
            conn.execute("SELECT count(*) FROM posts WHERE user_id = %s AND created_at > %s",
                         (n * 13, "2026-03-01"))
    kb = make_database(embedded_pg, "workload_merge_kb", ("vector",))
    report = audit(dsn, kb, min_mean_ms="0.2")
    served = [_query(report, "SELECT id, title"), _query(report, "ORDER BY created_at"),
              _query(report, "SELECT count(*)")]
    assert all(q["status"] == "recommended" for q in served), [(q["status"], q["skip_reason"]) for q in served]
    indexes = {q["recommendation"]["sql"] for q in served}
    assert len(indexes) == 1, indexes
    assert '("user_id", "created_at")' in next(iter(indexes)), indexes
    every = [q["recommendation"]["sql"] for q in report["slow_queries"] if q["status"] == "recommended"]
    assert len(set(every)) == 1, every
