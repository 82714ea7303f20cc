"""Sampling pg_stat_activity as a pseudo duration log (exporter/activity.py, docs/p95.md section 7).

The bookkeeping first, on rows shaped like the sampler's query returns them (no clock involved); then the
sampler on a real server: a statement whose slow mode lies above the sampler's threshold is exported within 5 %
of the server's own logged durations from sampling alone, a role that may not see other roles' sessions
degrades with the source label saying so, and the sampler stops cleanly.
"""

from __future__ import annotations

import math
import random
import threading
import time

import psycopg
import pytest

from pg_architect.core import db
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.core.errors import ConfigError
from pg_architect.exporter.activity import ActivitySampler, SampleRow
from pg_architect.exporter.latency import SOURCE_SAMPLING, Interval, LoggedTail, estimate, merge_tails
from pg_architect.exporter.target import Target
from tests.conftest import ServerInfo, make_database
from tests.exporter_helpers import (
    Scrape,
    bucket_delta,
    config,
    histogram_quantile,
    logged_csv_durations,
    run_concurrently,
    target,
)
from tests.stack import wait_for

HZ = 50.0


def scrape(t: Target) -> Scrape:
    return Scrape(t.scrape())


def _row(pid: int, state: str | None, query_start: float | None, at: float, **kw: object) -> SampleRow:
    fields: dict[str, object] = {
        "pid": pid,
        "own": False,
        "backend_start": 1.0,
        "datid": 5,
        "usesysid": 10,
        "state": state,
        "query_id": 77,
        "query_start": query_start,
        "state_change": kw.pop("state_change", query_start),
        "sampled_at": at,
        "read_by": at + 0.001,
    }
    fields.update(kw)
    return SampleRow(**fields)  # type: ignore[arg-type]


def _own(at: float) -> SampleRow:
    return _row(1, "active", at, at, own=True, query_id=99)


def _sampler() -> ActivitySampler:
    return ActivitySampler("unit", "postgresql://unused", db.Timeouts(), HZ)


def _feed(sampler: ActivitySampler, at: float, *rows: SampleRow) -> None:
    sampler.observe([_own(at), *rows], at, at)  # client clock = server clock: offset 0


def test_a_statement_seen_running_then_idle_is_recorded_with_its_exact_duration() -> None:
    s = _sampler()
    _feed(s, 100.0)
    assert s.window(100.0, 0.0).reason == "baseline"
    _feed(s, 100.02, _row(7, "active", 100.01, 100.02))
    _feed(s, 100.04, _row(7, "active", 100.01, 100.04))
    # Seen idle with the same query_start: it ended at state_change.
    _feed(s, 100.06, _row(7, "idle", 100.01, 100.06, state_change=100.0537))
    # Another backend: seen running, then running a newer statement: it ended within (last seen, newer start].
    _feed(s, 100.08, _row(8, "active", 100.065, 100.08))
    _feed(s, 100.10, _row(8, "active", 100.095, 100.10))
    # The newer one is seen ending (exactly), but is shorter than a sampling interval: no record.
    _feed(s, 100.12, _row(8, "idle", 100.095, 100.12, state_change=100.11))
    w = s.window(100.12, 0.0)
    assert w.complete, w.reason
    assert w.threshold_s == pytest.approx(0.021)  # the longest gap between two samples' reads
    assert (w.exact, w.bounded) == (2, 1)
    calls = w.by_database[5]
    assert list(calls.query_ids) == [77, 77]
    assert calls.durations_s[0] == pytest.approx(0.0437)
    assert calls.durations_s[1] == pytest.approx(0.5 * (100.08 + 100.095) - 100.065)
    assert w.own == (10, 5, 99), "the sampler's own statement is named, to be left out of the p95"
    tail = w.tail(5)
    assert tail is not None and tail.threshold_s == w.threshold_s
    assert sorted(tail.durations_s) == sorted(d for d in calls.durations_s if d >= w.threshold_s)


def test_sampling_that_did_not_cover_the_window_backs_no_estimate() -> None:
    late = _sampler()
    _feed(late, 100.0)
    late.window(99.0, 0.0)  # the baseline cut came before the first sample
    _feed(late, 100.02)
    window = late.window(100.02, 0.0)
    assert not window.complete and "started after" in (window.reason or "")
    assert window.tail(5) is None

    behind = _sampler()
    _feed(behind, 100.0)
    behind.window(100.0, 0.0)
    _feed(behind, 100.02)
    window = behind.window(100.5, 0.0)  # no sample after the window's end
    assert not window.complete and "no sample" in (window.reason or "")

    hidden = _sampler()
    _feed(hidden, 100.0)
    hidden.window(100.0, 0.0)
    # A session of another role, as pg_stat_activity shows it: its database, the rest NULL. Beside it, a
    # backend of database 5 still authenticating (no state, but its start time): that hides nothing.
    _feed(hidden, 100.02, _row(9, None, None, 100.02, datid=6, backend_start=None), _row(10, None, None, 100.02))
    _feed(hidden, 100.04)
    window = hidden.window(100.04, 0.0)
    assert window.complete and window.hidden == {6}
    assert window.tail(6) is None and window.tail(5) is not None


def test_a_sampled_tail_makes_the_p95_a_seen_call_and_clears_the_flag() -> None:
    # 1,000 calls of one statement: 900 near 4 ms, 100 between 80 and 140 ms (the slow mode holds the p95).
    rng = random.Random(5)
    fast = [rng.lognormvariate(math.log(0.004), 0.2) for _ in range(900)]
    slow = [rng.uniform(0.08, 0.14) for _ in range(100)]
    calls = fast + slow
    mean = sum(calls) / len(calls)
    sd = math.sqrt(sum((x - mean) ** 2 for x in calls) / len(calls))
    row = Interval(len(calls), mean, sd, max(calls), True, min(calls))
    truth = sorted(calls)[math.ceil(0.95 * len(calls)) - 1]
    s = _sampler()
    _feed(s, 0.0)
    s.window(0.0, 0.0)
    _feed(s, 0.02)
    sampled = s.window(0.02, 0.0)
    assert sampled.complete
    tail = LoggedTail(0.03, [d for d in calls if d >= 0.03], [1] * len(slow), sampled_below_s=math.inf)
    backed = estimate({1: [row]}, tail)
    assert backed.quantile(0.95) == truth
    assert backed.source(0.95) == SOURCE_SAMPLING
    assert not backed.suspect_bimodal
    assert estimate({1: [row]}, None).suspect_bimodal, "without the tail the two modes are suspected"


def test_the_sampling_rate_is_checked() -> None:
    assert config(exporter_activity_sampling_hz="0").exporter.activity_sampling_hz == 0
    with pytest.raises(ConfigError, match="activity_sampling_hz"):
        config(exporter_activity_sampling_hz="500")


# -- on a real server --------------------------------------------------------------------------------------


def test_a_slow_mode_above_the_samplers_threshold_is_exported_exactly_from_sampling_alone(
    logging_pg: ServerInfo,
) -> None:
    """No duration log: the p95 of a statement whose slow mode lies above G is a sampled call, within 5 % of
    the server's own logged durations (the test's truth, read here, never by the exporter)."""
    dbname = "p95_sampled"
    dsn = make_database(logging_pg, dbname)
    assert isinstance(logging_pg.server, EmbeddedPostgres)
    log_dir = logging_pg.server.data_dir / "log"
    t = target(logging_pg.dsn(), exporter_activity_sampling_hz=str(HZ))
    try:
        rng = random.Random(21)
        # 80 % near 3 ms, 20 % between 1 and 1.5 s: the slow mode holds the p95 and lies far above G, which
        # is about one sampling interval on a quiet machine and grows under load (up to 0.2-0.4 s seen here).
        sleeps = [
            rng.uniform(1.0, 1.5) if rng.random() < 0.2 else rng.lognormvariate(math.log(0.003), 0.3)
            for _ in range(100)
        ]
        scrape(t)  # baseline
        before = scrape(t)
        run_concurrently(
            dsn,
            [("SELECT pg_sleep(%s) /* sampled two-modes */", (s,)) for s in sleeps],
            threads=4,
            application_name="p95-sampling-test",
            simple=True,
        )
        after = scrape(t)
    finally:
        t.close()
    truth_samples = sorted(logged_csv_durations(log_dir, dbname, "p95-sampling-test"))
    assert len(truth_samples) == 100, f"logged {len(truth_samples)} statements"
    truth = truth_samples[math.ceil(0.95 * len(truth_samples)) - 1]
    threshold = after.value("pgarch_activity_sampling_threshold_seconds")
    assert after.value("pgarch_activity_sampling_complete") == 1.0
    assert threshold is not None and threshold < truth, f"G {threshold} s should lie below the p95 {truth} s"
    gauge = after.value("pgarch_query_p95_seconds", datname=dbname)
    assert gauge is not None
    sources = after.samples("pgarch_query_p95_source")
    print(f"p95: gauge {gauge:.5f}s truth {truth:.5f}s, sampling threshold {threshold:.4f}s; {sources}")
    assert abs(gauge - truth) / truth <= 0.05, f"gauge p95 {gauge:.4f}s vs logged {truth:.4f}s"
    assert after.value("pgarch_query_p95_source", datname=dbname, source="activity_sampling") == 1.0
    assert after.value("pgarch_query_p95_suspect", datname=dbname) == 0.0
    from_histogram = histogram_quantile(0.95, bucket_delta(before, after, dbname))
    assert abs(from_histogram - truth) / truth < 0.10, f"histogram p95 {from_histogram:.4f}s vs {truth:.4f}s"
    # The statement's own p95 rests on its own sampled calls too (the database holds this one statement).
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(
            "SELECT queryid FROM pg_stat_statements WHERE query LIKE %s", ("%sampled two-modes%",)
        ).fetchone()
    assert found is not None
    statement = after.value("pgarch_statement_p95_seconds", datname=dbname, queryid=str(found[0]))
    assert statement is not None and abs(statement - truth) / truth <= 0.05, f"statement p95 {statement} vs {truth}"


LOCK = 2121  # the advisory lock a held session waits on


def _held_for_two_samples(
    sampler: ActivitySampler, dsn: str, statement: str, seen_where: str, what: str, application_name: str = ""
) -> None:
    """Run ``statement`` on a connection of its own while this test holds advisory lock LOCK in its database;
    release the lock once pg_stat_activity shows the session held (``seen_where``, a condition on that
    database's rows) and the sampler has taken two samples since. Returns when the statement is done."""
    with psycopg.connect(dsn, autocommit=True) as holder:  # advisory locks are per database
        holder.execute(f"SELECT pg_advisory_lock({LOCK})")
        held = threading.Thread(
            target=run_concurrently,
            args=(dsn, [(statement, ())]),
            kwargs={"threads": 1, "application_name": application_name},
        )
        held.start()
        try:
            wait_for(
                lambda: holder.execute(
                    f"SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND {seen_where}"
                ).fetchone(),
                60,
                what,
            )
            seen = sampler.samples
            wait_for(lambda: sampler.samples >= seen + 2, 60, f"two samples while {what}")
        finally:
            holder.execute(f"SELECT pg_advisory_unlock({LOCK})")
            held.join()


def test_a_role_that_may_not_see_other_sessions_degrades_with_the_source_saying_so(embedded_pg: ServerInfo) -> None:
    dbname = "p95_sampled_hidden"
    dsn = make_database(embedded_pg, dbname)
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS exporter_no_stats")
        admin.execute("CREATE ROLE exporter_no_stats LOGIN")  # no pg_read_all_stats, no pg_monitor
    t = target(embedded_pg.dsn(dbname, user="exporter_no_stats"), exporter_activity_sampling_hz=str(HZ))
    sampler = t.activity
    assert sampler is not None
    try:
        scrape(t)  # baseline; the sampler runs from here on
        # Another role's statement, running (waiting on the lock) while the sampler looks.
        _held_for_two_samples(
            sampler, dsn, f"SELECT pg_advisory_lock({LOCK})", "wait_event_type = 'Lock'", "a statement waits"
        )
        run_concurrently(dsn, [("SELECT pg_sleep(%s)", (0.001,))] * 20, threads=2)
        after = scrape(t)
    finally:
        t.close()
    assert after.value("pg_up") == 1.0
    assert after.value("pgarch_scrape_collector_success", collector="statements") == 1.0
    assert after.value("pgarch_query_p95_source", datname=dbname, source="pg_stat_statements:activity_hidden") == 1.0


@pytest.mark.server_version(170000, "login event triggers")
def test_a_session_still_logging_in_hides_nothing(embedded_pg: ServerInfo) -> None:
    """A backend that is still starting up (here held in a login event trigger, PostgreSQL 17+) shows no state,
    as a session of another role does, but it has its start time: the sampler must not call the database
    hidden (connection churn without a pooler would otherwise turn its p95 back to the model alone)."""
    dbname = "p95_sampled_login"
    dsn = make_database(embedded_pg, dbname)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION held_login() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF current_setting('application_name') = 'held-login' THEN PERFORM pg_advisory_lock({LOCK});"
            f" PERFORM pg_advisory_unlock({LOCK}); END IF; END $$"
        )
        admin.execute("CREATE EVENT TRIGGER held_login ON login EXECUTE FUNCTION held_login()")
    t = target(embedded_pg.dsn(dbname), exporter_activity_sampling_hz=str(HZ))
    sampler = t.activity
    assert sampler is not None
    try:
        scrape(t)  # baseline; the sampler runs from here on
        _held_for_two_samples(
            sampler,
            dsn,
            "SELECT 1",
            "state IS NULL AND backend_type = 'client backend' AND backend_start IS NOT NULL",
            "a backend logs in, without a state",
            application_name="held-login",
        )
        run_concurrently(dsn, [("SELECT pg_sleep(%s)", (0.001,))] * 20, threads=2)
        after = scrape(t)
    finally:
        t.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP EVENT TRIGGER IF EXISTS held_login")
    sources = {
        labels["source"]
        for labels, value in after.samples("pgarch_query_p95_source")
        if labels["datname"] == dbname and value == 1.0
    }
    assert sources == {"pg_stat_statements+activity_sampling"}, sources


def test_the_sampler_stops_cleanly_and_leaves_no_session(embedded_pg: ServerInfo) -> None:
    t = target(embedded_pg.dsn(), exporter_activity_sampling_hz=str(HZ))
    sampler = t.activity
    assert sampler is not None
    scrape(t)
    wait_for(lambda: sampler.samples >= 3, 60, "three samples")

    def sampler_sessions() -> int:
        with psycopg.connect(embedded_pg.dsn(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-architect-exporter'"
                " AND query LIKE '%%pg_backend_pid%%'"
            ).fetchone()
            return int(row[0]) if row else 0

    assert sampler_sessions() == 1
    t.close()
    assert not sampler.alive, "the sampler's thread ended"
    wait_for(lambda: sampler_sessions() == 0 or None, 60, "the sampler's session to end")
    after = sampler.window(time.time(), 1.0)
    assert not after.complete and after.tail(1) is None, "a stopped sampler backs no window"


def test_probed_targets_run_no_sampler(embedded_pg: ServerInfo) -> None:
    from pg_architect.core.config import TargetConfig
    from pg_architect.exporter.fleet import Fleet

    cfg = config(exporter_activity_sampling_hz=str(HZ))
    fleet = Fleet(cfg, [TargetConfig(name="one", dsn=embedded_pg.dsn())])
    try:
        assert all(t.activity is None for t in fleet.servers.values())
        assert all(p.own.activity is None for p in fleet.probes.values())
    finally:
        fleet.close()


def test_the_log_stands_above_its_threshold_and_sampling_fills_in_below_it() -> None:
    logged = LoggedTail(0.25, [0.3, 0.5], [1, 1])
    sampled = LoggedTail(0.04, [0.05, 0.1, 0.31, 0.49], [1, 2, 1, 1], sampled_below_s=math.inf)
    merged = merge_tails(logged, sampled)
    assert merged is not None
    # The log's two calls (exact) above 0.25 s, the sampled ones between G and 0.25 s; the sampled copies of
    # the logged calls are dropped, not counted twice.
    assert sorted(merged.durations_s) == [0.05, 0.1, 0.3, 0.5]
    assert merged.threshold_s == 0.04 and merged.sampled_below_s == 0.25
    assert merge_tails(LoggedTail(0.01, [0.3], [1]), sampled) == LoggedTail(0.01, [0.3], [1])
    assert merge_tails(None, sampled) is sampled and merge_tails(logged, None) is logged
    # 100 calls, 6 of them in the tail: the p95 (rank 95) is the tail's first, a logged call when it lies
    # above the log's threshold, a sampled one between G and it.
    rows = {1: [Interval(98, 0.01, 0.05, 0.55, True, 0.001)], 2: [Interval(2, 0.1, 0.0, 0.1, True, 0.1)]}
    ids = [1] * 6
    at_log = estimate(rows, LoggedTail(0.04, [0.3, 0.35, 0.4, 0.45, 0.5, 0.55], ids, 0.25))
    assert at_log.quantile(0.95) == 0.3 and at_log.source(0.95) == "duration_log"
    at_sampled = estimate(rows, LoggedTail(0.04, [0.05, 0.06, 0.07, 0.08, 0.09, 0.5], ids, 0.25))
    assert at_sampled.quantile(0.95) == 0.05 and at_sampled.source(0.95) == SOURCE_SAMPLING
    below = estimate(rows, LoggedTail(0.04, [0.5], [1], math.inf))
    assert below.source(0.95) == "pg_stat_statements+activity_sampling"


def test_the_samplers_own_statement_is_no_part_of_the_p95(embedded_pg: ServerInfo) -> None:
    """A role that may not switch pg_stat_statements tracking off (pg_monitor, not superuser): the sampler's
    statement is counted there 50 times a second, and left out of the exporter's histogram by its query id."""
    dbname = "p95_sampler_own"
    dsn = make_database(embedded_pg, dbname, ("pg_stat_statements",))
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS exporter_monitor")
        admin.execute("CREATE ROLE exporter_monitor LOGIN IN ROLE pg_monitor")
    t = target(embedded_pg.dsn(dbname, user="exporter_monitor"), exporter_activity_sampling_hz=str(HZ))
    sampler = t.activity
    assert sampler is not None
    try:
        before = scrape(t)  # baseline, once the sampler has taken its first sample
        seen = sampler.samples
        wait_for(lambda: sampler.samples >= seen + 40, 60, "40 samples")
        after = scrape(t)
        window = sampler.window(0.0, 0.0)  # only to read the sampler's own statement's identity
    finally:
        t.close()
    assert window.own is not None
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE queryid = %s", (window.own[2],)
        ).fetchone()
    assert row is not None and row[0] >= 40, f"the sampler's statement should be tracked: {row}"
    counted = (after.value("pgarch_query_duration_seconds_count", datname=dbname) or 0.0) - (
        before.value("pgarch_query_duration_seconds_count", datname=dbname) or 0.0
    )
    # Only the scrape's own statements (about ten) are this database's calls in the window.
    assert 0 < counted < 30, f"{counted} calls counted in the window: the sampler's own were not left out"


def test_a_sampler_that_cannot_connect_degrades_the_p95_source_not_the_scrape(embedded_pg: ServerInfo) -> None:
    dbname = "p95_sampler_refused"
    dsn = make_database(embedded_pg, dbname, ("pg_stat_statements",))
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS exporter_one_conn")
        # The scrape's connection takes the only slot: the sampler's is refused, again and again.
        admin.execute("CREATE ROLE exporter_one_conn LOGIN CONNECTION LIMIT 1 IN ROLE pg_monitor")
    t = target(embedded_pg.dsn(dbname, user="exporter_one_conn"), exporter_activity_sampling_hz=str(HZ))
    sampler = t.activity
    assert sampler is not None
    try:
        scrape(t)
        wait_for(lambda: sampler.failures >= 1, 60, "the sampler's connection to be refused")
        run_concurrently(dsn, [("SELECT pg_sleep(%s)", (0.001,))] * 20, threads=2)
        after = scrape(t)
    finally:
        t.close()
    assert after.value("pg_up") == 1.0
    assert after.value("pgarch_scrape_collector_success", collector="statements") == 1.0
    assert after.value("pgarch_activity_sampling_complete") == 0.0
    assert (after.value("pgarch_activity_sample_failures_total") or 0.0) >= 1.0
    assert after.value("pgarch_query_p95_source", datname=dbname, source="pg_stat_statements") == 1.0
    assert not sampler.alive
