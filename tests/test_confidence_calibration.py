"""Confidence calibrated on measured outcomes (issue 20, item 6).

In hypothetical mode (hypopg) every measurement is a planner cost; the calibration (auditor.calibration,
docs/confidence.md) turns it into a confidence that matches what the index really gives once built: the
indexes bench/advisor measures at 5x and more reach a pull request, and none under 1.5x does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from pg_architect.auditor import advisor, calibration, confidence
from pg_architect.auditor.catalog import TableInfo
from pg_architect.auditor.measure import Outcome
from pg_architect.auditor.models import Measurement, action_for
from tests.conftest import ServerInfo, make_database
from tests.test_measurement import audit

PR = ("pr_review", "pr_merge")
EVENTS = TableInfo(
    oid=100, schema="public", name="events", relkind="r", total_bytes=10**9, heap_bytes=9 * 10**8,
    reltuples=1_000_000, n_live_tup=1_000_000, writes=10, seq_scan=100, idx_scan=100,
    columns=["id", "email", "occurred_at"], column_types=["bigint", "text", "timestamp"],
)  # fmt: skip

DOCS = Path(__file__).resolve().parents[1] / "docs" / "confidence.md"


def _query(report: dict[str, Any], fragment: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [q for q in report["slow_queries"] if fragment in q["query"]]
    assert len(found) == 1, [q["query"] for q in report["slow_queries"]]
    return found[0]


def test_the_published_calibration_tables_are_the_code() -> None:
    """docs/confidence.md shows the calibration table and what it gives; both are rendered from the code, so
    a change to one without the other fails here."""
    text = DOCS.read_text()
    for block in (calibration.table_markdown(), calibration.examples_markdown()):
        assert block in text, f"docs/confidence.md does not show:\n{block}"


def _costed(
    key: advisor.Key, cost_ratio: float, *, sample_ms: float, kept: float | None = None, predicate: str | None = None
) -> Outcome:
    """A hypothetical measurement over two samples: executed before (``sample_ms`` each), costed after."""
    m = Measurement(
        method="hypothetical", before_cost=1000.0, after_cost=1000.0 / cost_ratio, before_ms=2 * sample_ms,
        gain_percent=100.0 * (1 - 1 / cost_ratio), worth_applying=True, plan_changed=True, samples=2,
    )  # fmt: skip
    cand = advisor.Candidate(EVENTS, (key,), predicate, "test")
    return Outcome(cand, m, used_index=True, consistent=True, returned_rows=kept, seq_scanned=kept is not None)


def test_a_costed_gain_measured_on_samples_far_lighter_than_the_recorded_calls_stays_below_a_pull_request() -> None:
    """bench/advisor's decoy: the application's ``created_at >= $1`` keeps 94 % of the rows and takes 2.2 s; the
    sampled value kept 3 % and ran in 0.2 s, costed 10x with the index (measured 1.06x once built). The same
    cost ratio on samples that ran like the recorded calls (a two-hour window, measured 100x+) is a PR."""
    occurred = advisor.Key("occurred_at")
    decoy = confidence.score(_costed(occurred, 10.4, sample_ms=207.0), recorded_mean_ms=2170.0)
    window = confidence.score(_costed(occurred, 12.0, sample_ms=149.0), recorded_mean_ms=219.0)
    assert action_for(decoy.score) not in PR, decoy
    assert any("of the recorded mean" in t for t in decoy.terms), decoy.terms
    assert action_for(window.score) in PR, window
    assert action_for(window.score) != "pr_merge", "costed evidence alone never merges"


def test_a_weak_costed_expression_or_partial_index_stays_below_a_pull_request_and_a_strong_one_reaches_it() -> None:
    """hypopg costs an expression or partial index without statistics; the rows the statement's scan keeps
    raise a strong one (one row of a million: 100x+ once built) and never a weak one (60 % of the rows)."""
    lower = advisor.Key(None, "lower(email)")
    for key, predicate in ((lower, None), (advisor.Key("occurred_at"), "email IS NULL")):
        strong = confidence.score(_costed(key, 2.0, sample_ms=100.0, kept=1.0, predicate=predicate))
        weak = confidence.score(_costed(key, 1.3, sample_ms=100.0, kept=600_000.0, predicate=predicate))
        assert action_for(strong.score) in PR, strong
        assert action_for(weak.score) not in PR, weak


def test_hypothetical_confidence_follows_the_real_speed_up_of_column_indexes(
    debian_pg: ServerInfo, embedded_pg: ServerInfo
) -> None:
    """Two column indexes that a real build makes 100x+ faster (a two-hour window over a year of events, a rare
    state in a queue read in run_at order) reach a pull request in hypothetical mode; an index for a filter
    that keeps most of the table does not, whatever its costed estimate."""
    dsn = make_database(debian_pg, "calibration_columns", ("pg_stat_statements", "hypopg"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id int PRIMARY KEY, kind int NOT NULL, amount numeric NOT NULL, "
            "occurred_at timestamp NOT NULL)"
        )
        conn.execute(
            "INSERT INTO events SELECT i, i % 20, (i % 1000) / 10.0, timestamp '2025-01-01' + i * interval '30 s' "
            "FROM generate_series(1, 1000000) i"
        )
        conn.execute(
            "CREATE TABLE jobs (id int PRIMARY KEY, queue text NOT NULL, state text NOT NULL, "
            "run_at timestamptz NOT NULL, attempts int NOT NULL)"
        )
        conn.execute(
            "INSERT INTO jobs SELECT i, 'q' || (i % 8), CASE WHEN i % 997 = 0 THEN 'failed' ELSE 'done' END, "
            "timestamptz '2025-01-01' + i * interval '30 s', i % 5 FROM generate_series(1, 600000) i"
        )
        conn.execute("ANALYZE events")
        conn.execute("ANALYZE jobs")
        conn.execute("SELECT pg_stat_statements_reset()")
        for n in range(6):
            start = f"2025-0{1 + n}-1{n} 10:00"
            conn.execute(
                "SELECT kind, count(*), sum(amount) FROM events WHERE occurred_at >= %s::timestamp "
                "AND occurred_at < %s::timestamp + interval '2 hours' GROUP BY kind",
                (start, start),
            )
            conn.execute(
                "SELECT id, run_at FROM jobs WHERE state = %s AND queue = %s ORDER BY run_at LIMIT 50",
                ("failed", f"q{n}"),
            )
            conn.execute(
                "SELECT date_trunc('month', occurred_at), count(*) FROM events WHERE occurred_at >= %s::timestamp "
                "GROUP BY 1",
                (f"2025-01-0{1 + n}",),
            )
    kb = make_database(embedded_pg, "calibration_columns_kb", ("vector",))
    report = audit(dsn, kb, min_mean_ms="0.5", measurement_mode="hypothetical")
    for fragment in ("interval", "state = $1"):
        q = _query(report, fragment)
        assert q["status"] == "recommended", q
        rec = q["recommendation"]
        assert rec["measurement"]["method"] == "hypothetical", rec["measurement"]
        assert rec["action"] in ("pr_review", "pr_merge"), (rec["confidence"], rec["reasoning"])
        assert rec["action"] != "pr_merge", "costed evidence alone never merges"
    weak = _query(report, "date_trunc")
    rec = weak.get("recommendation")
    if rec is not None:
        assert rec["action"] not in ("pr_review", "pr_merge"), (rec["confidence"], rec["reasoning"])
