"""Prove the pg_stat_statements p95 on a real PostgreSQL, against the server's own duration log.

Starts the embedded PostgreSQL with every statement's duration logged to csvlog, runs a known mixture of
statements with log-normally distributed latencies (pg_sleep with log-normal sleep times, and CPU-bound
generate_series with log-normal sizes) from concurrent client threads, and at each window boundary
snapshots pg_stat_statements. Per window it compares, to the true p95 of the durations the server logged
in that window:

- gauge: ``Mixture.quantile(0.95)`` over the rows' interval statistics (exporter.latency);
- histogram: Prometheus' ``histogram_quantile(0.95, ...)`` over ``Mixture.bucket_counts(BUCKETS)``;
- means-only: the p95 of the rows' interval means weighted by calls (what mean-only exporters can offer).

The workers pause at each boundary (their in-flight statements finish first), so every logged statement
falls in exactly the window whose snapshot counted it; the per-window call counts are cross-checked.
Truth is the duration of each statement's ``execute`` message, the part pg_stat_statements times as
execution (planning is timed apart). Run from the repository root:

    python -m bench.p95_accuracy [--windows 20] [--window-seconds 3] [--threads 2] [--seed 1]
                                 [--bimodal | --lock-wait] [--log-threshold-ms T ...] [--sampling-hz HZ]

With ``--sampling-hz`` the exporter's pg_stat_activity sampler (exporter/activity.py) runs beside the workload,
from the ``postgres`` database, and each window is also estimated from sampling alone and from sampling merged
with the log at each ``--log-threshold-ms``; its cost (server CPU of its backend, this process's CPU in the
sampler thread, samples per second) is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import psycopg

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg_architect.core import db
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.core.pgss import Cumulative, Interval, StatementRow, cumulative, interval_of
from pg_architect.core.serverlog import Directory
from pg_architect.exporter.activity import ActivitySampler, ActivityWindow
from pg_architect.exporter.durationlog import DatabaseTail, DurationLog
from pg_architect.exporter.latency import (
    BUCKETS,
    SOURCE_LOG,
    SOURCE_SAMPLING,
    LoggedTail,
    Mixture,
    estimate,
    merge_tails,
    row_quantile,
    row_suspect_bimodal,
)
from pg_architect.exporter.statements import statement_tail

WORKLOAD_DB = "p95bench"
WORKLOAD_APP = "p95bench-workload"
LOCK_APP = "p95bench-lock-holder"
SNAPSHOT_APP = "p95bench-snapshot"
LOG_SETTINGS = {
    "log_min_duration_statement": "0",
    "log_destination": "'csvlog'",
    "logging_collector": "on",
    "log_directory": "'log'",
    "log_rotation_size": "0",
    "log_rotation_age": "0",
}
# csvlog columns (PostgreSQL 14+): the ones read here.
CSV_MESSAGE, CSV_DATABASE, CSV_APPLICATION, CSV_QUERY_ID = 13, 2, 22, 25
DURATION = re.compile(r"^duration: ([0-9.]+) ms  (?:execute [^:]*|statement): ")

SNAPSHOT_SQL = """
SELECT s.userid::bigint AS userid, s.dbid::bigint AS dbid, s.queryid AS queryid, s.toplevel AS toplevel,
       s.calls AS calls, s.total_exec_time AS total_ms, s.stddev_exec_time AS stddev_ms,
       s.min_exec_time AS min_ms, s.max_exec_time AS max_ms, NULL::float8 AS stats_since
FROM pg_stat_statements s
WHERE s.toplevel AND s.queryid IS NOT NULL AND s.dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """One workload statement: its parameter is log-normal (median, sigma); weight is its share of calls.

    With ``slow_share`` > 0 the statement is bimodal: that share of its calls gets ``slow_factor`` times the
    parameter (the known limit of a two-moment model, run with --bimodal).
    """

    name: str
    sql: str
    median: float
    sigma: float
    weight: float
    slow_share: float = 0.0
    slow_factor: float = 1.0

    def parameter(self, rng: random.Random) -> float:
        if self.sigma == 0.0:  # a row id: uniform over 1..median
            return float(rng.randint(1, int(self.median)))
        value = self.median * math.exp(rng.gauss(0.0, self.sigma))
        return value * self.slow_factor if rng.random() < self.slow_share else value


# Distinct parse trees, so each is its own pg_stat_statements row; parameters are floats (float8) so the
# driver's choice of integer type cannot split a statement over several queryids.
WORKLOAD = (
    Statement("sleep-5ms", "SELECT pg_sleep(%s)", 0.005, 0.7, 0.50),
    Statement("sleep-15ms", "SELECT 1 FROM pg_sleep(%s)", 0.015, 0.6, 0.22),
    Statement("sleep-60ms", "SELECT count(*) FROM pg_sleep(%s)", 0.060, 0.4, 0.03),
    Statement("sleep-200ms", "SELECT pg_sleep(%s)::text", 0.200, 0.3, 0.01),
    Statement("cpu-count", "SELECT count(*) FROM generate_series(1, %s::int)", 60_000, 0.7, 0.16),
    Statement("cpu-md5", "SELECT md5(string_agg(i::text, ',')) FROM generate_series(1, %s::int) i", 20_000, 0.5, 0.08),
)

# Three statements, each with a fast mode and a mode 30x slower under one queryid (a cache miss, a lock
# wait, a cold path): 7 %, 10 % and 3 % of their calls slow. --bimodal runs these alone.
BIMODAL = (
    Statement("bimodal-93/7", "SELECT pg_sleep(%s) IS NULL", 0.004, 0.25, 1 / 3, slow_share=0.07, slow_factor=30.0),
    Statement("bimodal-90/10", "SELECT pg_sleep(%s) IS NOT NULL", 0.003, 0.3, 1 / 3, slow_share=0.10, slow_factor=30.0),
    Statement("bimodal-97/3", "SELECT 2 FROM pg_sleep(%s)", 0.008, 0.2, 1 / 3, slow_share=0.03, slow_factor=30.0),
)

# The lock-wait workload (--lock-wait): short updates of a few hot rows, and one client that now and then
# locks some of them in a transaction and holds the locks for a while (a slow job, an idle transaction);
# updates that hit a held row wait for it: a real row lock, not pg_sleep.
LOCK_ROWS = 16
LOCK_HOLD_S = (0.05, 0.2)  # each hold lasts uniformly this long
LOCK_HELD_ROWS = 2
LOCK_GAP_S = 0.1  # between holds
LOCK_WAIT = (
    Statement("hot-update", "UPDATE hot SET v = v + 1 WHERE id = %s", LOCK_ROWS, 0.0, 0.8),
    Statement("hot-read", "SELECT v FROM hot WHERE id = %s", LOCK_ROWS, 0.0, 0.2),
)


Key = tuple[int, int, int, bool]


# -- the workload ------------------------------------------------------------------------------------------


class Workload:
    """Client threads that run the statements, and pause together at each window boundary."""

    def __init__(
        self, dsn: str, statements: Sequence[Statement], threads: int, seed: int, lock_holder: bool = False
    ) -> None:
        self.dsn = dsn
        self.statements = tuple(statements)
        self.stop = threading.Event()
        self.pause = threading.Event()
        clients = threads + (1 if lock_holder else 0)
        self.arrived = threading.Barrier(clients + 1, timeout=60)
        self.released = threading.Barrier(clients + 1, timeout=60)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(threads)]
        if lock_holder:
            self.threads.append(threading.Thread(target=self._hold_locks, args=(seed + 1000,), daemon=True))

    def _hold_locks(self, seed: int) -> None:
        """Lock a few hot rows in a transaction, hold them, commit; pause between holds."""
        rng = random.Random(seed)
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name=LOCK_APP) as conn:
                while not self.stop.is_set():
                    if self.pause.is_set():
                        self.arrived.wait()
                        self.released.wait()
                        continue
                    with conn.transaction():
                        ids = rng.sample(range(1, LOCK_ROWS + 1), LOCK_HELD_ROWS)
                        conn.execute("SELECT v FROM hot WHERE id = ANY(%s) FOR UPDATE", (ids,))
                        time.sleep(rng.uniform(*LOCK_HOLD_S))
                    time.sleep(LOCK_GAP_S * rng.uniform(0.5, 1.5))
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # reported by the main thread, which aborts the run
            self.errors.append(exc)
            self.arrived.abort()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        weights = [s.weight for s in self.statements]
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name=WORKLOAD_APP) as conn:
                while not self.stop.is_set():
                    if self.pause.is_set():
                        self.arrived.wait()
                        self.released.wait()
                        continue
                    stmt = rng.choices(self.statements, weights)[0]
                    conn.execute(stmt.sql, (stmt.parameter(rng),))
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # reported by the main thread, which aborts the run
            self.errors.append(exc)
            self.arrived.abort()

    def at_boundary(self, action: Callable[[], None], last: bool = False) -> None:
        """Pause every client (in-flight statements finish), run ``action``, resume (or stop after the last)."""
        self.pause.set()
        self.arrived.wait()
        try:
            action()
        finally:
            if last:
                self.stop.set()
            self.pause.clear()
            self.released.wait()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


# -- truth from the server's log ---------------------------------------------------------------------------


def read_log(data_dir: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in sorted((data_dir / "log").glob("*.csv")):
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows.extend(csv.reader(fh))
    return rows


def logged_windows(rows: list[list[str]], windows: int) -> list[list[tuple[float, int | None]]]:
    """Workload durations (ms, query_id) per window, split at the snapshot query's own log lines.

    Snapshot k's query is logged after every statement it counted and before any it did not, since the
    clients are paused while it runs and a backend logs a statement's duration before the client sees the
    result.
    """
    per_window: list[list[tuple[float, int | None]]] = [[]]
    for row in rows:
        if len(row) <= CSV_QUERY_ID:
            continue
        match = DURATION.match(row[CSV_MESSAGE])
        if match is None:
            continue
        if row[CSV_APPLICATION] == SNAPSHOT_APP and "pg_stat_statements" in row[CSV_MESSAGE]:
            per_window.append([])
        elif row[CSV_APPLICATION] in (WORKLOAD_APP, LOCK_APP) and row[CSV_DATABASE] == WORKLOAD_DB:
            query_id = int(row[CSV_QUERY_ID]) if row[CSV_QUERY_ID].lstrip("-").isdigit() else None
            per_window[-1].append((float(match.group(1)), query_id))
    # per_window[0] precedes the baseline snapshot; windows run between snapshots 0..windows.
    return per_window[1 : windows + 1]


# -- estimates ---------------------------------------------------------------------------------------------


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float], total: float) -> float:
    """Prometheus' histogram_quantile (promql/quantile.go bucketQuantile), +Inf bucket = total."""
    buckets = [*zip(bounds, counts, strict=True), (math.inf, total)]
    if total <= 0:
        return math.nan
    rank = q * total
    b = next((i for i in range(len(buckets) - 1) if buckets[i][1] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start, count, rank = buckets[b - 1][0], count - buckets[b - 1][1], rank - buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def true_p95(durations_ms: Sequence[float]) -> float:
    """The smallest logged duration with at least 95 % of the window at or below it, in seconds."""
    ordered = sorted(durations_ms)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] / 1000


@dataclasses.dataclass
class WindowResult:
    index: int
    calls: int
    logged: int
    truth_s: float
    gauge_s: float
    histogram_s: float
    means_only_s: float
    suspect: bool
    # With the duration log at each threshold (ms): (gauge, histogram_quantile, source, suspect).
    with_log: dict[float, tuple[float, float, str, bool]] = dataclasses.field(default_factory=dict)
    # Sampling pg_stat_activity alone, and merged with the log at each threshold: the same tuple.
    sampled: tuple[float, float, str, bool] | None = None
    sampled_with_log: dict[float, tuple[float, float, str, bool]] = dataclasses.field(default_factory=dict)
    sampling_threshold_s: float = math.nan

    def error(self, estimate: float) -> float:
        return estimate / self.truth_s - 1


def evaluate(
    intervals: dict[Key, Interval],
    durations: list[tuple[float, int | None]],
    index: int,
    tail: DatabaseTail | None = None,
    thresholds_ms: Sequence[float] = (),
    activity: ActivityWindow | None = None,
) -> WindowResult:
    """The window's estimates against its truth; with ``tail`` (the reader's records) at each threshold too,
    and with ``activity`` (the sampler's window) alone and merged with the log."""
    mix = Mixture(intervals.values())
    means = Mixture(Interval(iv.calls, iv.mean_s, 0.0, None, False, None) for iv in intervals.values())
    result = WindowResult(
        index=index,
        calls=mix.calls,
        logged=len(durations),
        truth_s=true_p95([d for d, _ in durations]),
        gauge_s=mix.quantile(0.95),
        histogram_s=histogram_quantile(0.95, BUCKETS, mix.bucket_counts(BUCKETS), mix.calls),
        means_only_s=means.quantile(0.95),
        suspect=mix.suspect_bimodal,
    )
    statements: dict[int, list[Interval]] = {}
    for key, iv in intervals.items():
        statements.setdefault(key[2], []).append(iv)
    dbid = next(iter(intervals))[1] if intervals else 0
    sampled = activity.tail(dbid) if activity is not None else None
    if activity is not None:
        result.sampling_threshold_s = activity.threshold_s
    if sampled is not None:
        result.sampled = _estimates(statements, sampled)
    for t_ms in thresholds_ms if tail is not None else ():
        assert tail is not None
        # What a server logging at this threshold would have written: the reader's records at or above it.
        kept = [(ms / 1000.0, qid) for ms, qid in zip(tail.durations_ms, tail.query_ids, strict=True) if ms >= t_ms]
        logged = LoggedTail(t_ms / 1000.0, [d for d, _ in kept], [q for _, q in kept])
        result.with_log[t_ms] = _estimates(statements, logged)
        if sampled is not None:
            merged = merge_tails(logged, sampled)
            assert merged is not None
            result.sampled_with_log[t_ms] = _estimates(statements, merged)
    return result


def _estimates(statements: dict[int, list[Interval]], tail: LoggedTail) -> tuple[float, float, str, bool]:
    est = estimate(statements, tail)
    return (
        est.quantile(0.95),
        histogram_quantile(0.95, BUCKETS, est.bucket_counts(BUCKETS), est.calls),
        est.source(0.95),
        est.suspect_bimodal,
    )


def summarise(name: str, errors: Sequence[float]) -> str:
    e = sorted(abs(x) for x in errors)
    within = sum(x <= 0.10 for x in e) / len(e)
    return f"{name:<11} within 10 %: {within:6.1%}   median error {statistics.median(e):6.2%}   worst {e[-1]:7.2%}"


# -- speed -------------------------------------------------------------------------------------------------


def time_scrape_math(rows: int = 5000, repeats: int = 20) -> tuple[float, float]:
    """Median and worst milliseconds for interval_of over ``rows`` rows, the Mixture, its p95 and buckets."""
    rng = random.Random(3)
    pairs = []
    for _ in range(rows):
        n, dn = rng.randint(10, 10**6), rng.randint(2, 1000)
        mean = math.exp(rng.uniform(-1, 6))
        sd, w_mean = mean * rng.uniform(0.1, 2), mean * rng.uniform(0.8, 1.2)
        d = w_mean - mean
        m2 = n * sd**2 + dn * (0.8 * sd) ** 2 + d * d * n * dn / (n + dn)
        prev = Cumulative(n, n * mean, sd, mean / 10, mean * 20)
        pairs.append((prev, Cumulative(n + dn, n * mean + dn * w_mean, math.sqrt(m2 / (n + dn)), mean / 10, mean * 30)))
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        mix = Mixture(iv for prev, cur in pairs if (iv := interval_of(prev, cur)) is not None)
        mix.quantile(0.95)
        mix.bucket_counts(BUCKETS)
        times.append((time.perf_counter() - start) * 1000)
    times = times[2:]
    return statistics.median(times), max(times)


# -- synthetic: no server ---------------------------------------------------------------------------------


def _row(samples: np.ndarray) -> Interval:
    """One row's whole window, as interval_of reports it (exact max and min)."""
    return Interval(
        int(samples.size), float(samples.mean()), float(samples.std()), float(samples.max()), True, float(samples.min())
    )


def synthetic(seed: int) -> int:
    """Accuracy on sampled log-normal mixtures, the bimodality flag's hit and false-alarm rates, and speed."""
    rng = np.random.default_rng(seed)
    print("p95 of sampled log-normal mixtures (2-6 statements, medians 1 ms-2 s, sigma 0.1-1.0), 300 windows each")
    for low, high in ((20, 200), (100, 3000), (1000, 10000)):
        gauge, hist, means = [], [], []
        for _ in range(300):
            rows, samples = [], []
            for _ in range(int(rng.integers(2, 7))):
                median = math.exp(rng.uniform(math.log(0.001), math.log(2.0)))
                x = median * np.exp(rng.normal(0.0, rng.uniform(0.1, 1.0), int(rng.integers(low, high))))
                rows.append(_row(x))
                samples.append(x)
            mix = Mixture(rows)
            truth = float(np.quantile(np.concatenate(samples), 0.95, method="inverted_cdf"))
            gauge.append(mix.quantile(0.95) / truth - 1)
            hist.append(histogram_quantile(0.95, BUCKETS, mix.bucket_counts(BUCKETS), mix.calls) / truth - 1)
            means.append(
                Mixture(Interval(r.calls, r.mean_s, 0, None, False, None) for r in rows).quantile(0.95) / truth - 1
            )
        print(f"  {low}-{high} calls per statement:")
        for name, errors in (("gauge", gauge), ("histogram", hist), ("means-only", means)):
            print("    " + summarise(name, errors))

    print("\nbimodality flag on one statement (fast mode at 1, sigma 0.2; slow mode at r, sigma 0.2), 200 draws each")
    print(f"  {'calls':>5} {'slow share':>10} {'r':>4} {'flagged':>8} {'median p95 error':>17}")
    for n in (500, 5000):
        for share in (0.01, 0.03, 0.1, 0.3):
            for ratio in (3.0, 10.0, 100.0):
                flagged, errors = 0, []
                for _ in range(200):
                    k = int(rng.binomial(n, share))
                    x = np.concatenate((np.exp(rng.normal(0.0, 0.2, n - k)), ratio * np.exp(rng.normal(0.0, 0.2, k))))
                    row = _row(x)
                    flagged += row_suspect_bimodal(row)
                    errors.append(row_quantile(row, 0.95) / float(np.quantile(x, 0.95, method="inverted_cdf")) - 1)
                print(f"  {n:>5} {share:>10.0%} {ratio:>4g} {flagged / 200:>8.0%} {statistics.median(errors):>+17.1%}")
    print("\nfalse alarms on log-normal statements (1,000 draws each)")
    for n in (50, 500, 5000):
        rates = []
        for sigma in (0.2, 0.5, 1.0, 1.5):
            alarms = sum(row_suspect_bimodal(_row(np.exp(rng.normal(0.0, sigma, n)))) for _ in range(1000))
            rates.append(f"sigma {sigma}: {alarms / 1000:.1%}")
        print(f"  {n:>5} calls: " + ", ".join(rates))
    floor_alarms = sum(
        row_suspect_bimodal(_row(0.001 * np.ceil(1000 * 0.005 * np.exp(rng.normal(0.0, 0.7, 300))) + 7e-5))
        for _ in range(1000)
    )
    print(f"  pg_sleep-like (5 ms median, sigma 0.7, rounded up to whole ms), 300 calls: {floor_alarms / 1000:.1%}")

    median_ms, worst_ms = time_scrape_math()
    print(f"\nlatency math for 5,000 rows x {len(BUCKETS)} buckets: median {median_ms:.1f} ms, worst {worst_ms:.1f} ms")
    return 0


# -- the run -----------------------------------------------------------------------------------------------


def snapshot(conn: db.Connection) -> dict[Key, Cumulative]:
    rows = map(StatementRow._make, db.fetch_tuples(conn, SNAPSHOT_SQL, (WORKLOAD_DB,)))
    return {r.key: cumulative(r) for r in rows}


def deltas(prev: dict[Key, Cumulative], cur: dict[Key, Cumulative]) -> dict[Key, Interval]:
    out = {}
    for key, row in cur.items():
        iv = interval_of(prev.get(key), row)
        if iv is not None:
            out[key] = iv
    return out


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="pgarch-p95bench-"))
    server = EmbeddedPostgres(root / "data", settings=LOG_SETTINGS)
    print(f"starting embedded PostgreSQL in {root} ...", flush=True)
    server.start()
    statements: tuple[Statement, ...]
    if args.lock_wait:
        statements, name = LOCK_WAIT, "the lock-wait workload"
    elif args.bimodal:
        statements, name = BIMODAL, "three bimodal statements"
    else:
        statements, name = WORKLOAD, "the log-normal workload"
    try:
        with psycopg.connect(server.dsn(), autocommit=True, application_name="p95bench-setup") as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(f'DROP DATABASE IF EXISTS "{WORKLOAD_DB}"')
            conn.execute(f'CREATE DATABASE "{WORKLOAD_DB}"')
            version = db.fetch_value(conn, "SHOW server_version")
        if args.lock_wait:
            with psycopg.connect(server.dsn(WORKLOAD_DB), autocommit=True) as conn:
                conn.execute("CREATE TABLE hot (id integer PRIMARY KEY, v bigint NOT NULL)")
                conn.execute("INSERT INTO hot SELECT g, 0 FROM generate_series(1, %s) g", (LOCK_ROWS,))
                conn.execute("VACUUM ANALYZE hot")
        snap_conn = psycopg.connect(server.dsn(), autocommit=True, application_name=SNAPSHOT_APP)
        workload = Workload(server.dsn(WORKLOAD_DB), statements, args.threads, args.seed, lock_holder=args.lock_wait)
        snapshots: list[dict[Key, Cumulative]] = []
        # The exporter's own reader of the server's csvlog, cutting windows by the server's clock.
        reader = DurationLog(Directory(str(server.data_dir / "log")), "csvlog")
        tails: list[DatabaseTail | None] = []
        sampler = None
        activity: list[ActivityWindow | None] = []
        if args.sampling_hz > 0:
            # The exporter's sampler, from the postgres database like an exporter watching the whole server.
            sampler = ActivitySampler("bench", server.dsn(), db.Timeouts(), args.sampling_hz)
            sampler.start()
            if not sampler.wait_for_sample(10.0):
                raise RuntimeError(f"the activity sampler took no sample: {sampler.last_error}")

        def take() -> None:
            cut = time.time()
            snapshots.append(snapshot(snap_conn))
            window = reader.collect(snap_conn)
            if window.reason not in (None, "baseline"):
                print(f"  duration log does not back window {len(tails)}: {window.reason}", flush=True)
            tails.append(window.by_database.get(WORKLOAD_DB, DatabaseTail()) if window.complete else None)
            if sampler is not None:
                sampled = sampler.window(cut, 2.0)
                if sampled.reason not in (None, "baseline"):
                    print(f"  sampling does not back window {len(activity)}: {sampled.reason}", flush=True)
                activity.append(sampled if sampled.complete else None)

        print(
            f"PostgreSQL {version}; {args.windows} windows of {args.window_seconds:g} s, {args.threads} client "
            f"threads, {name}",
            flush=True,
        )
        workload.start()
        cost_start = _sampler_cost(sampler)
        workload.at_boundary(take)
        for k in range(args.windows):
            time.sleep(args.window_seconds)
            if workload.errors:
                raise RuntimeError(f"a client failed: {workload.errors[0]!r}")
            workload.at_boundary(take, last=k == args.windows - 1)
        cost_end = _sampler_cost(sampler)
        workload.join()
        if sampler is not None:
            sampler.stop()
        snap_conn.close()
        server.stop()  # flushes the log
        windows = logged_windows(read_log(server.data_dir), args.windows)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            server.destroy()
            shutil.rmtree(root, ignore_errors=True)

    thresholds = sorted(args.log_threshold_ms)
    results, row_errors, sampled_row_errors = [], [], []
    print(
        f"\n{'win':>3} {'calls':>6} {'logged':>6} {'true p95':>10} {'gauge':>10} {'err':>7} "
        f"{'histogram':>10} {'err':>7} {'means-only':>10} {'err':>7}  flag"
        + "".join(f"  {f'log>={t:g}ms':>10} {'err':>7} {'hist':>7}" for t in thresholds)
    )
    for k in range(args.windows):
        intervals = deltas(snapshots[k], snapshots[k + 1])
        result = evaluate(intervals, windows[k], k + 1, tails[k + 1], thresholds, activity[k + 1] if activity else None)
        results.append(result)
        line = (
            f"{result.index:>3} {result.calls:>6} {result.logged:>6} {result.truth_s * 1000:>8.2f}ms "
            f"{result.gauge_s * 1000:>8.2f}ms {result.error(result.gauge_s):>+7.1%} "
            f"{result.histogram_s * 1000:>8.2f}ms {result.error(result.histogram_s):>+7.1%} "
            f"{result.means_only_s * 1000:>8.2f}ms {result.error(result.means_only_s):>+7.1%}"
            f"  {'bimodal?' if result.suspect else '        '}"
        )
        for t in thresholds:
            if t in result.with_log:
                gauge, hist, source, _ = result.with_log[t]
                mark = "*" if source == SOURCE_LOG else " "
                line += f"  {gauge * 1000:>8.2f}ms{mark} {result.error(gauge):>+7.1%} {result.error(hist):>+7.1%}"
            else:
                line += f"  {'(no log)':>10} {'':>7} {'':>7}"
        if result.sampled is not None:
            gauge, hist, source, _ = result.sampled
            mark = "*" if source == SOURCE_SAMPLING else " "
            line += (
                f"  sampled {gauge * 1000:>8.2f}ms{mark} {result.error(gauge):>+7.1%} {result.error(hist):>+7.1%}"
                f" G={result.sampling_threshold_s * 1000:.0f}ms"
            )
        print(line)
        row_errors.extend(per_row_errors(intervals, windows[k]))
        sampled_window = activity[k + 1] if activity else None
        sampled_tail = sampled_window.tail(next(iter(intervals))[1]) if sampled_window and intervals else None
        if sampled_tail is not None:
            sampled_row_errors.extend(per_row_errors(intervals, windows[k], sampled_tail))
    mismatched = [r.index for r in results if r.calls != r.logged]
    print(f"\nwindows whose pg_stat_statements calls differ from the logged count: {mismatched or 'none'}")
    print(f"true p95 {min(r.truth_s for r in results) * 1000:.1f}-{max(r.truth_s for r in results) * 1000:.1f} ms")
    print("without the duration log:")
    print("  " + summarise("gauge", [r.error(r.gauge_s) for r in results]))
    print("  " + summarise("histogram", [r.error(r.histogram_s) for r in results]))
    print("  " + summarise("means-only", [r.error(r.means_only_s) for r in results]))
    flagged = [r for r in results if r.suspect]
    unflagged_bad = [r.index for r in results if not r.suspect and abs(r.error(r.gauge_s)) > 0.10]
    print(
        f"  flagged suspect: {len(flagged)} of {len(results)}; windows off by > 10 % and not flagged: "
        f"{unflagged_bad or 'none'}"
    )
    if row_errors:
        print("  " + summarise("per-row p95", row_errors) + f"   ({len(row_errors)} row-windows with >= 50 calls)")
    for t in thresholds:
        backed = [r for r in results if t in r.with_log]
        if not backed:
            print(f"with the duration log at {t:g} ms: no window backed")
            continue
        print(f"with the duration log at {t:g} ms ({len(backed)} of {len(results)} windows backed):")
        print("  " + summarise("gauge", [r.error(r.with_log[t][0]) for r in backed]))
        print("  " + summarise("histogram", [r.error(r.with_log[t][1]) for r in backed]))
        above = [r for r in backed if r.truth_s * 1000 >= t]
        if above:
            worst = max(abs(r.error(r.with_log[t][0])) for r in above)
            print(f"  windows with true p95 >= {t:g} ms: {len(above)}, gauge worst error {worst:.2%}")
        print(f"  still flagged suspect: {sum(r.with_log[t][3] for r in backed)}")
    if args.sampling_hz > 0:
        print_sampling(results, thresholds, cost_start, cost_end, args.sampling_hz)
        if sampled_row_errors:
            print("  " + summarise("per-row p95", sampled_row_errors) + f"   ({len(sampled_row_errors)} row-windows)")
    median_ms, worst_ms = time_scrape_math()
    print(f"latency math for 5,000 rows x {len(BUCKETS)} buckets: median {median_ms:.1f} ms, worst {worst_ms:.1f} ms")
    return 0


def _sampler_cost(sampler: ActivitySampler | None) -> tuple[float, float, float, int]:
    """(wall clock, the sampler backend's server CPU seconds, this process's sampler CPU seconds, samples)."""
    if sampler is None:
        return (time.monotonic(), 0.0, 0.0, 0)
    server_cpu = math.nan
    if sampler.backend_pid is not None:
        try:
            fields = Path(f"/proc/{sampler.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
            server_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):
            pass  # a server on another machine: its CPU is not ours to read
    return (time.monotonic(), server_cpu, sampler.cpu_seconds, sampler.samples)


def print_sampling(
    results: Sequence[WindowResult],
    thresholds: Sequence[float],
    start: tuple[float, float, float, int],
    end: tuple[float, float, float, int],
    hz: float,
) -> None:
    backed = [r for r in results if r.sampled is not None]
    print(f"with sampling pg_stat_activity at {hz:g} Hz ({len(backed)} of {len(results)} windows backed):")
    if backed:
        print("  " + summarise("gauge", [r.error(r.sampled[0]) for r in backed if r.sampled is not None]))
        print("  " + summarise("histogram", [r.error(r.sampled[1]) for r in backed if r.sampled is not None]))
        gaps = sorted(r.sampling_threshold_s * 1000 for r in backed)
        above = sum(r.sampled is not None and r.sampled[2] == SOURCE_SAMPLING for r in backed)
        print(
            f"  sampler threshold G per window: median {statistics.median(gaps):.1f} ms, max {gaps[-1]:.1f} ms; "
            f"p95 a sampled call in {above} of {len(backed)}; "
            f"still flagged suspect: {sum(bool(r.sampled and r.sampled[3]) for r in backed)}"
        )
    for t in thresholds:
        merged = [r for r in results if t in r.sampled_with_log]
        if merged:
            print(f"  merged with the duration log at {t:g} ms ({len(merged)} windows):")
            print("    " + summarise("gauge", [r.error(r.sampled_with_log[t][0]) for r in merged]))
            print("    " + summarise("histogram", [r.error(r.sampled_with_log[t][1]) for r in merged]))
    seconds = end[0] - start[0]
    print(
        f"  cost over {seconds:.1f} s: {(end[3] - start[3]) / seconds:.1f} samples/s; server CPU of the sampler's "
        f"backend {(end[1] - start[1]) / seconds * 100:.2f} % of a core; this process's CPU in the sampler thread "
        f"{(end[2] - start[2]) / seconds * 100:.2f} % of a core"
    )


def per_row_errors(
    intervals: dict[Key, Interval], durations: list[tuple[float, int | None]], tail: LoggedTail | None = None
) -> list[float]:
    """row_quantile(0.95) against each row's own logged p95 (csvlog carries query_id), rows with >= 50 calls;
    with ``tail`` (the database's sampled calls), the exporter's per-statement p95 backed by the row's share."""
    by_query: dict[int, list[float]] = {}
    for ms, query_id in durations:
        if query_id is not None:
            by_query.setdefault(query_id, []).append(ms)
    errors = []
    for key, iv in intervals.items():
        logged = by_query.get(key[2], [])
        if iv.calls >= 50 and len(logged) == iv.calls:
            own = statement_tail(tail, key[2]) if tail is not None else None
            value = estimate({key[2]: [iv]}, own).quantile(0.95) if own is not None else row_quantile(iv, 0.95)
            errors.append(value / true_p95(logged) - 1)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--window-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data directory (and its csvlog)")
    parser.add_argument(
        "--bimodal", action="store_true", help="three statements with a fast and a 30x slower mode (93/7, 90/10, 97/3)"
    )
    parser.add_argument("--lock-wait", action="store_true", help="hot-row updates that wait on real row locks")
    parser.add_argument(
        "--log-threshold-ms",
        type=float,
        action="append",
        default=[],
        help="also estimate with the duration log at this log_min_duration_statement (repeatable)",
    )
    parser.add_argument(
        "--sampling-hz",
        type=float,
        default=0.0,
        help="also estimate from sampling pg_stat_activity at this rate (exporter/activity.py), and print its cost",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="no server: synthetic accuracy, the bimodality flag's rates, speed"
    )
    args = parser.parse_args(argv)
    if args.windows < 1 or args.window_seconds <= 0 or args.threads < 1:
        parser.error("--windows, --window-seconds and --threads must be positive")
    return synthetic(args.seed) if args.synthetic else run(args)


if __name__ == "__main__":
    sys.exit(main())
