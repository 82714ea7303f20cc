"""Samples of a statement whose rows per call cannot judge its range (it aggregates) are fitted to its recorded
mean time, on a real server with a workload recorded by pg_stat_statements."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pg_architect.auditor import advisor, analysis
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import (
    FIT_SELECTIVITY,
    TIME_FACTOR,
    Measurer,
    NoRepresentativeSample,
    Plan,
    Recorded,
    explain,
)
from pg_architect.auditor.params import time_fits
from pg_architect.auditor.parsing import parse_query
from pg_architect.core import db
from pg_architect.core.config import MeasurementConfig
from tests.conftest import ServerInfo, make_database
from tests.test_audit import find
from tests.test_measurement import audit, small_shop

# Heavy enough per kept row that the time grows with the rows the range keeps, as the bench decoy's does.
AGGREGATE = (
    "SELECT date_trunc('month', created_at) AS month, count(*), sum(total), stddev(total), variance(total), {} "
    "FROM orders WHERE created_at >= %s GROUP BY 1"
)


def _plan(ms: float, index: str | None = None) -> Plan:
    return Plan(
        cost=1.0, ms=ms, rows=12, nodes=("Aggregate",), index_names=frozenset({index} if index else ()), text=""
    )


def test_only_ranged_aggregates_without_a_limit_are_fitted_to_the_time() -> None:
    assert time_fits(parse_query("SELECT date_trunc($1, created_at), count(*) FROM orders WHERE created_at >= $2 "
                                 "GROUP BY 1"))
    assert time_fits(parse_query("SELECT DISTINCT customer_id FROM orders WHERE total > $1"))
    # Rows per call judge these: no aggregate, or a LIMIT (where the rows lie decides its time), or no range.
    assert not time_fits(parse_query("SELECT id FROM orders WHERE created_at >= $1"))
    assert not time_fits(parse_query("SELECT count(*) FROM (SELECT id FROM orders WHERE created_at >= $1 "
                                     "ORDER BY created_at LIMIT $2) t GROUP BY id LIMIT $3"))
    assert not time_fits(parse_query("SELECT status, count(*) FROM orders WHERE customer_id = $1 GROUP BY status"))


def test_where_only_time_judges_a_sample_it_must_run_near_the_recorded_mean_either_way() -> None:
    recorded = Recorded(mean_ms=1000.0, rows_per_call=40.0, fits_time=True)
    assert recorded.distrust(_plan(1000.0 / TIME_FACTOR * 1.1)) is None
    assert recorded.distrust(_plan(1000.0 * TIME_FACTOR * 0.9)) is None
    too_fast = recorded.distrust(_plan(100.0))
    assert too_fast is not None and "faster" in too_fast, too_fast
    too_slow = recorded.distrust(_plan(4000.0))
    assert too_slow is not None and "slower" in too_slow, too_slow
    # Far faster through an index is what an index made since the statistics does: trusted, as elsewhere.
    assert recorded.distrust(_plan(100.0, index="orders_created_at_idx")) is None
    # The rows (one per day where the calls grouped by month) do not judge it.
    assert recorded.distrust(dataclasses.replace(_plan(900.0), rows=2000, actual_rows=2000)) is None


def test_an_aggregate_over_most_of_a_table_gets_no_index_and_a_selective_one_does(embedded_pg: ServerInfo) -> None:
    """A GROUP BY month over a range the application keeps 94 % of returns one row per month however much the
    range keeps, so its rows per call cannot tell a 5 % sample from the workload's calls: only the recorded time
    can, and a sample fitted to it reads most of the table, where an index does not help. The same shape whose
    calls keep 1 % of the table still gets its index."""
    prod = small_shop(embedded_pg, "time_fit_aggregate", orders=300_000)
    with psycopg.connect(prod, autocommit=True) as conn:
        # Orders are written in time order, as an application's are: a range of created_at is a range of pages.
        conn.execute("CREATE INDEX orders_by_time ON orders (created_at)")
        conn.execute("CLUSTER orders USING orders_by_time")
        conn.execute("DROP INDEX orders_by_time")
        conn.execute("ANALYZE orders")
        for _ in range(6):
            conn.execute(AGGREGATE.format("avg(total)"), (datetime.now(UTC) - timedelta(days=343),))
            conn.execute(AGGREGATE.format("max(total)"), (datetime.now(UTC) - timedelta(days=4),))
    kb = make_database(embedded_pg, "time_fit_aggregate_kb", ("vector",))
    report = audit(prod, kb, min_mean_ms="0.05")
    heavy = find(report, "avg(total)")
    light = find(report, "max(total)")
    assert heavy["status"] != "recommended", _why(heavy)
    assert light["status"] == "recommended" and "created_at" in light["recommendation"]["sql"], _why(light)


def _why(q: dict[str, Any]) -> str:
    rec = q.get("recommendation") or {}
    return f"{q['status']}: {q.get('skip_reason')} {rec.get('sql')} {rec.get('measurement')} {rec.get('reasoning')}"


# -- the fit itself, on a real table: draws bisected over the range's share of the table -------------------------

MONTHLY = (
    "SELECT date_trunc('month', created_at), count(*), sum(total), stddev(total), variance(total) "
    "FROM sales WHERE created_at >= $1 GROUP BY 1"
)
# The range hardly moves this one's time: every row pays the same filter, and the aggregate keeps one row.
FLAT = "SELECT count(*) FROM sales WHERE note = $1 AND created_at >= $2"


@pytest.fixture(scope="module")
def sales(embedded_pg: ServerInfo) -> Iterator[db.Connection]:
    dsn = make_database(embedded_pg, "time_fit_sales")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE sales AS SELECT g AS id, (g % 50000) / 100.0 AS total, 'note ' || (g % 7) AS note, "
            "timestamptz '2025-01-01' + g * interval '2 minutes' AS created_at FROM generate_series(1, 200000) g"
        )
        conn.execute("ANALYZE sales")
    conn = db.connect(dsn, db.Role.AUDITOR, db.Timeouts())
    try:
        yield conn
    finally:
        conn.close()


def _fit(
    conn: db.Connection, text: str
) -> tuple[Callable[[float], str | None], list[advisor.Candidate], list[Any], Measurer]:
    snapshot = Snapshot(conn)
    resolved, tables = analysis.resolve(snapshot, parse_query(text))
    assert time_fits(resolved)
    facts = analysis.analyse(snapshot, resolved, tables, 6)
    found = advisor.generate(snapshot, resolved, tables)
    measurer = Measurer(conn, MeasurementConfig(mode="rollback_build"), hypopg_installed=False, hypopg_available=False)
    return analysis.range_draws(snapshot, facts), list(found.candidates), list(tables.values()), measurer


def _ms(conn: db.Connection, sql: str | None) -> float:
    assert sql is not None
    return min(explain(conn, sql, analyze=True).ms or 0.0 for _ in range(3))


def test_a_sample_far_faster_than_the_recorded_mean_is_replaced_by_draws_fitted_to_it(sales: db.Connection) -> None:
    draw, candidates, tables, measurer = _fit(sales, MONTHLY)
    narrow, whole = draw(0.05), draw(1.0)
    assert narrow is not None and whole is not None and narrow != whole
    # The workload's calls read the whole table: their mean is what the whole range takes here.
    recorded = Recorded(mean_ms=_ms(sales, whole), rows_per_call=12.0, fits_time=True)
    _, outcomes = measurer.measure("select", [narrow], candidates, tables, recorded, keep=2, draw=draw)
    wide = {draw(s) for s in FIT_SELECTIVITY if s >= 0.35}
    assert measurer.kept and set(measurer.kept) <= wide, (measurer.kept, recorded)
    # Read over most of the table, the range's index is not what the plan takes.
    assert not any(o.measurement is not None and o.measurement.worth_applying for o in outcomes), outcomes


def test_no_draw_near_a_recorded_mean_the_range_cannot_reach_is_no_representative_sample(
    sales: db.Connection,
) -> None:
    draw, candidates, tables, measurer = _fit(sales, MONTHLY)
    narrow = draw(0.05)
    assert narrow is not None
    # Far slower than even the whole table runs here, while the range moves the time: no share of it fits.
    recorded = Recorded(mean_ms=100 * _ms(sales, draw(1.0)), rows_per_call=12.0, fits_time=True)
    with pytest.raises(NoRepresentativeSample, match="no draw ran within"):
        measurer.measure("select", [narrow], candidates, tables, recorded, keep=2, draw=draw)
    assert measurer.kept == ()


def test_a_range_that_does_not_move_the_time_leaves_the_samples_to_the_general_rules(sales: db.Connection) -> None:
    draw, candidates, tables, measurer = _fit(sales, FLAT)
    sample = draw(0.05)
    assert sample is not None
    # Slower than any draw by more than TIME_FACTOR (cold reads, say), but within the general rules' 20x.
    recorded = Recorded(mean_ms=8 * _ms(sales, draw(1.0)), rows_per_call=1.0, fits_time=True)
    measurer.measure("select", [sample], candidates, tables, recorded, keep=2, draw=draw)
    assert measurer.kept == (sample,)
