"""exporter.latency: interval statistics from pg_stat_statements deltas, and the p95 of their mixture.

Truth here is always computed independently: numpy over the raw samples, a Python emulation of
pg_stat_statements' own counters, and Prometheus' histogram_quantile re-implemented below.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_architect.core.pgss import CANCELLATION_RATIO, Cumulative, Interval, interval_of
from pg_architect.exporter.latency import (
    BUCKETS,
    SOURCE_LOG,
    SOURCE_LOG_TAIL,
    SOURCE_PGSS,
    LogBacked,
    LoggedTail,
    Mixture,
    _phi,
    estimate,
    row_quantile,
    row_suspect_bimodal,
)

# -- independent truth -----------------------------------------------------------------------------------


def cumulative(samples_ms: np.ndarray) -> Cumulative:
    """What pg_stat_statements reports after these calls (population stddev), computed by numpy."""
    return Cumulative(
        calls=int(samples_ms.size),
        total_ms=float(samples_ms.sum()),
        stddev_ms=float(samples_ms.std()),
        min_ms=float(samples_ms.min()),
        max_ms=float(samples_ms.max()),
    )


class PgssCounters:
    """pg_stat_statements' own update (pgss_store): running mean and Welford's sum of squares, in float8."""

    def __init__(self) -> None:
        self.calls = 0
        self.total = 0.0
        self.mean = 0.0
        self.sum_var = 0.0
        self.min = 0.0
        self.max = 0.0

    def add(self, t: float) -> None:
        self.calls += 1
        self.total += t
        if self.calls == 1:
            self.min = self.max = self.mean = t
        else:
            old_mean = self.mean
            self.mean += (t - old_mean) / self.calls
            self.sum_var += (t - old_mean) * (t - self.mean)
            self.min = min(self.min, t)
            self.max = max(self.max, t)

    def snapshot(self) -> Cumulative:
        stddev = math.sqrt(self.sum_var / self.calls) if self.calls > 1 else 0.0
        return Cumulative(self.calls, self.total, stddev, self.min, self.max)


def histogram_quantile(q: float, bounds: Sequence[float], cumulative_counts: Sequence[float], total: float) -> float:
    """Prometheus' histogram_quantile (promql/quantile.go bucketQuantile) over one histogram plus its +Inf."""
    buckets = [*zip(bounds, cumulative_counts, strict=True), (math.inf, total)]
    if total == 0:
        return math.nan
    rank = q * total
    # sort.Search over all but the +Inf bucket: the first whose count reaches the rank.
    b = next((i for i in range(len(buckets) - 1) if buckets[i][1] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def true_quantile(samples: np.ndarray, q: float) -> float:
    """The smallest sample with at least q of the samples at or below it."""
    return float(np.quantile(samples, q, method="inverted_cdf"))


def interval_from_samples(samples_s: np.ndarray) -> Interval:
    """A whole window of one row, as interval_of reports a new row."""
    return Interval(
        calls=int(samples_s.size),
        mean_s=float(samples_s.mean()),
        stddev_s=float(samples_s.std()),
        max_s=float(samples_s.max()),
        max_exact=True,
        min_s=float(samples_s.min()),
    )


# -- buckets ---------------------------------------------------------------------------------------------


def test_buckets_run_from_1ms_past_60s_spaced_by_fourth_root_of_two() -> None:
    ratios = [b / a for a, b in itertools.pairwise(BUCKETS)]
    assert BUCKETS[0] == 0.001
    assert BUCKETS[-1] >= 60 > BUCKETS[-2], BUCKETS[-3:]
    off = [r for r in ratios if abs(r / 2**0.25 - 1) > 1e-3]
    assert not off, f"ratios off 2**(1/4) by more than 0.1 %: {off}"
    assert math.inf not in BUCKETS


# -- interval_of: exact statistics from two snapshots ----------------------------------------------------


def check_exact(interval: Interval | None, prev_ms: np.ndarray, window_ms: np.ndarray) -> None:
    assert interval is not None
    assert interval.calls == window_ms.size
    true_mean = float(window_ms.mean()) / 1000
    whole = np.concatenate((prev_ms, window_ms))
    # The mean is a difference of totals: exact up to the rounding of the larger total.
    mean_slack = 1e-9 * true_mean + 4 * np.finfo(float).eps * whole.sum() / window_ms.size / 1000
    assert abs(interval.mean_s - true_mean) <= mean_slack, (interval, true_mean)
    m2_b = float(((whole - whole.mean()) ** 2).sum())
    true_m2_w = float(((window_ms - window_ms.mean()) ** 2).sum())
    got_var = (interval.stddev_s * 1000) ** 2
    # A stddev within 1e-7 of the mean is float noise, in numpy's truth as much as in the snapshots.
    noise_m2 = window_ms.size * (1e-7 * window_ms.mean()) ** 2
    if interval.variance_fallback:
        # The guard may only fire when the interval's M2 really is a sliver of the cumulative one...
        assert true_m2_w <= 2 * CANCELLATION_RATIO * m2_b + noise_m2, (true_m2_w, m2_b)
        # ...and the fallback never claims more spread than that sliver allows.
        assert got_var <= CANCELLATION_RATIO * m2_b / window_ms.size * (1 + 1e-9), (got_var, m2_b)
    else:
        true_var = true_m2_w / window_ms.size
        # Relative 1e-7, or the float noise of m2_b itself, or a stddev within 1e-7 of the mean.
        slack = 1e-7 * true_var + 1e-12 * m2_b / window_ms.size + noise_m2 / window_ms.size
        assert abs(got_var - true_var) <= slack, f"variance {got_var!r} != numpy's {true_var!r}"
    # The max is exact when it rose (or the window is one call); otherwise the cumulative max bounds it.
    assert interval.max_exact == (window_ms.max() > prev_ms.max() or window_ms.size == 1), interval
    assert interval.max_s is not None
    want_max = window_ms.max() if interval.max_exact else whole.max()
    assert abs(interval.max_s - want_max / 1000) <= 1e-12 * want_max / 1000 + mean_slack, (interval, want_max)
    assert interval.min_s is not None and interval.min_s <= window_ms.min() / 1000 + mean_slack, interval


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 3000),
    split=st.floats(0.01, 0.99),
    sigma=st.floats(0.0, 2.5),
    shift=st.floats(-2.0, 2.0),
)
def test_interval_mean_and_stddev_equal_numpy_over_random_splits(
    seed: int, n: int, split: float, sigma: float, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    samples = np.exp(rng.normal(0.0, sigma, n) + math.log(5.0))
    k = min(max(1, int(n * split)), n - 1)
    # The window's own level may differ from history's (a regression, a fix): exercises the d**2 term.
    samples[k:] *= math.exp(shift)
    prev_ms, window_ms = samples[:k], samples[k:]
    check_exact(interval_of(cumulative(prev_ms), cumulative(samples)), prev_ms, window_ms)


@settings(max_examples=200, deadline=None)
@given(
    prev_ms=st.lists(st.floats(0.001, 1e5), min_size=1, max_size=60),
    window_ms=st.lists(st.floats(0.001, 1e5), min_size=1, max_size=60),
)
def test_interval_is_exact_for_arbitrary_latencies(prev_ms: list[float], window_ms: list[float]) -> None:
    a, w = np.array(prev_ms), np.array(window_ms)
    check_exact(interval_of(cumulative(a), cumulative(np.concatenate((a, w)))), a, w)


def test_interval_from_pg_stat_statements_own_running_counters() -> None:
    # The server keeps a running mean and Welford's M2, not numpy's two-pass values: same answer.
    rng = np.random.default_rng(11)
    counters = PgssCounters()
    history = np.exp(rng.normal(math.log(3.0), 0.8, 200_000))
    for t in history:
        counters.add(float(t))
    prev = counters.snapshot()
    window = np.exp(rng.normal(math.log(9.0), 0.3, 500))
    for t in window:
        counters.add(float(t))
    got = interval_of(prev, counters.snapshot())
    assert got is not None and not got.variance_fallback
    assert got.calls == 500
    assert got.mean_s * 1000 == pytest.approx(window.mean(), rel=1e-9)
    assert got.stddev_s * 1000 == pytest.approx(window.std(), rel=1e-6), (got.stddev_s * 1000, window.std())


def test_single_call_interval_is_a_point_with_exact_max_and_min() -> None:
    prev = Cumulative(calls=10, total_ms=100.0, stddev_ms=3.0, min_ms=4.0, max_ms=20.0)
    cur = Cumulative(calls=11, total_ms=107.5, stddev_ms=3.1, min_ms=4.0, max_ms=20.0)
    got = interval_of(prev, cur)
    assert got == Interval(calls=1, mean_s=0.0075, stddev_s=0.0, max_s=0.0075, max_exact=True, min_s=0.0075), got


def test_no_new_calls_gives_none() -> None:
    row = Cumulative(calls=10, total_ms=100.0, stddev_ms=3.0, min_ms=4.0, max_ms=20.0)
    assert interval_of(row, row) is None
    assert interval_of(None, Cumulative(0, 0.0, 0.0, 0.0, 0.0)) is None


# -- interval_of: resets, evictions, new rows ------------------------------------------------------------


def test_new_row_takes_its_cumulative_values_as_the_interval() -> None:
    cur = Cumulative(calls=40, total_ms=400.0, stddev_ms=2.0, min_ms=5.0, max_ms=19.0)
    got = interval_of(None, cur)
    assert got == Interval(calls=40, mean_s=0.01, stddev_s=0.002, max_s=0.019, max_exact=True, min_s=0.005), got


@pytest.mark.parametrize(
    "prev",
    [
        Cumulative(calls=1000, total_ms=9000.0, stddev_ms=1.0, min_ms=1.0, max_ms=50.0),  # calls went down
        Cumulative(calls=10, total_ms=9000.0, stddev_ms=1.0, min_ms=1.0, max_ms=50.0),  # total went down
        Cumulative(calls=0, total_ms=0.0, stddev_ms=0.0, min_ms=0.0, max_ms=0.0),  # planned, never executed
    ],
    ids=["calls-down", "total-down", "no-calls-before"],
)
def test_reset_or_evicted_row_is_treated_as_new(prev: Cumulative) -> None:
    cur = Cumulative(calls=40, total_ms=400.0, stddev_ms=2.0, min_ms=5.0, max_ms=19.0)
    got = interval_of(prev, cur)
    assert got == interval_of(None, cur), got
    assert got is not None and got.calls == 40 and got.mean_s > 0


def test_max_that_went_down_was_reset_alone_and_bounds_nothing() -> None:
    # PostgreSQL 17's pg_stat_statements_reset(minmax_only => true): calls and totals go on, min/max restart.
    prev = Cumulative(calls=100, total_ms=1000.0, stddev_ms=2.0, min_ms=1.0, max_ms=90.0)
    cur = Cumulative(calls=200, total_ms=2000.0, stddev_ms=2.0, min_ms=6.0, max_ms=30.0)
    got = interval_of(prev, cur)
    assert got is not None
    assert (got.max_s, got.max_exact, got.min_s) == (None, False, None), got


def test_max_that_did_not_move_is_a_bound_not_exact() -> None:
    prev = Cumulative(calls=100, total_ms=1000.0, stddev_ms=2.0, min_ms=1.0, max_ms=90.0)
    cur = Cumulative(calls=200, total_ms=2000.0, stddev_ms=2.0, min_ms=1.0, max_ms=90.0)
    got = interval_of(prev, cur)
    assert got is not None and got.max_s == pytest.approx(0.09) and not got.max_exact, got


cumulatives = st.builds(
    Cumulative,
    calls=st.integers(0, 10**12),
    total_ms=st.floats(0, 1e15),
    stddev_ms=st.floats(0, 1e9),
    min_ms=st.floats(0, 1e9),
    max_ms=st.floats(0, 1e9),
)


@settings(max_examples=500, deadline=None)
@given(prev=st.none() | cumulatives, cur=cumulatives)
def test_any_pair_of_snapshots_gives_none_or_a_sane_interval(prev: Cumulative | None, cur: Cumulative) -> None:
    got = interval_of(prev, cur)
    if got is None:
        assert cur.calls == 0 or (prev is not None and prev.calls == cur.calls and cur.total_ms >= prev.total_ms)
        return
    assert got.calls > 0
    for value in (got.mean_s, got.stddev_s):
        assert math.isfinite(value) and value >= 0, got
    if got.max_s is not None:
        assert got.max_s >= 0 and got.mean_s <= got.max_s * (1 + 1e-12), got
    if got.min_s is not None:
        assert got.min_s >= 0 and got.mean_s >= got.min_s * (1 - 1e-12), got


# -- interval_of: catastrophic cancellation ----------------------------------------------------------------


def long_history_and_short_window(stddev_ulps: int) -> tuple[Cumulative, Cumulative]:
    """10**12 calls of history (mean 10 ms, stddev 100 ms), then 10 calls of 12 ms with stddev 0.1 ms.

    ``stddev_ulps`` moves the reported cumulative stddev by that many units in the last place: the
    rounding the server's float8 arithmetic and the view's sqrt already carry.
    """
    n_a, dn = 10**12, 10
    mean_w, s_w = 12.0, 0.1
    n_b = n_a + dn
    d = mean_w - 10.0
    m2_b = n_a * 100.0**2 + dn * s_w**2 + d * d * n_a * dn / n_b
    stddev_b = math.sqrt(m2_b / n_b)
    for _ in range(abs(stddev_ulps)):
        stddev_b = math.nextafter(stddev_b, math.copysign(math.inf, stddev_ulps))
    prev = Cumulative(n_a, n_a * 10.0, 100.0, 0.5, 4000.0)
    cur = Cumulative(n_b, n_a * 10.0 + dn * mean_w, stddev_b, 0.5, 4000.0)
    return prev, cur


def naive_m2_ms2(prev: Cumulative, cur: Cumulative) -> float:
    dn = cur.calls - prev.calls
    d = (cur.total_ms - prev.total_ms) / dn - prev.total_ms / prev.calls
    return cur.calls * cur.stddev_ms**2 - prev.calls * prev.stddev_ms**2 - d * d * prev.calls * dn / cur.calls


def test_cancellation_falls_back_to_a_narrower_model_that_rounding_cannot_move() -> None:
    true_m2 = 10 * 0.1**2
    naive = [naive_m2_ms2(*long_history_and_short_window(ulps)) for ulps in (-2, -1, 0, 1, 2)]
    # The exact formula is swamped: one ulp of the reported stddev moves it by far more than its own size.
    assert max(naive) - min(naive) > 50 * true_m2 and min(naive) < 0, naive
    got = [interval_of(*long_history_and_short_window(ulps)) for ulps in (-2, -1, 0, 1, 2)]
    assert all(iv is not None and iv.variance_fallback for iv in got), got
    stddevs = [iv.stddev_s for iv in got if iv is not None]
    assert max(stddevs) == pytest.approx(min(stddevs), rel=1e-9), stddevs
    # The documented fallback: the long-run coefficient of variation (100 ms / 10 ms) on the window's mean
    # (12 ms), within the cap the untrusted M2 allows and the Bhatia-Davis bound from [0.5, 4000] ms.
    _, cur = long_history_and_short_window(0)
    cap = math.sqrt(CANCELLATION_RATIO * cur.calls * cur.stddev_ms**2 / 10)
    bhatia_davis = math.sqrt((4000 - 12) * (12 - 0.5))
    want = min(12.0 * cur.stddev_ms / (cur.total_ms / cur.calls), cap, bhatia_davis)
    assert stddevs[2] * 1000 == pytest.approx(want, rel=1e-9), (stddevs[2] * 1000, want)
    assert got[2] is not None and got[2].mean_s == pytest.approx(0.012, rel=1e-6)


def test_negative_interval_m2_falls_back_instead_of_going_negative() -> None:
    prev = Cumulative(calls=1000, total_ms=10_000.0, stddev_ms=5.0, min_ms=1.0, max_ms=40.0)
    cur = Cumulative(calls=1100, total_ms=11_000.0, stddev_ms=4.0, min_ms=1.0, max_ms=40.0)  # M2 shrank
    got = interval_of(prev, cur)
    assert got is not None and got.variance_fallback
    assert math.isfinite(got.stddev_s) and 0 <= got.stddev_s * 1000 <= 4.0, got


def test_fallback_respects_the_bhatia_davis_bound_from_min_and_max() -> None:
    prev = Cumulative(calls=10**9, total_ms=1e10, stddev_ms=50.0, min_ms=9.9, max_ms=10.2)
    cur = Cumulative(calls=10**9 + 10, total_ms=1e10 + 100.0, stddev_ms=50.0, min_ms=9.9, max_ms=10.2)
    got = interval_of(prev, cur)
    assert got is not None and got.variance_fallback
    assert got.stddev_s * 1000 <= math.sqrt((10.2 - 10.0) * (10.0 - 9.9)) * (1 + 1e-9), got


# -- the normal CDF --------------------------------------------------------------------------------------


def test_normal_cdf_matches_math_erf_to_relative_1e7_in_the_lower_tail_and_is_monotone() -> None:
    z = np.linspace(-12, 12, 48_001)
    got = _phi(z)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    rel = np.abs(got - want) / np.maximum(want, 1e-300)
    lower = z <= 0
    assert rel[lower].max() < 1.2e-7, f"worst relative error {rel[lower].max()} at z={z[lower][rel[lower].argmax()]}"
    assert np.abs(got - want).max() < 1e-7
    assert np.all(np.diff(got) >= 0), z[np.flatnonzero(np.diff(got) < 0)][:5]
    assert _phi(np.array([-np.inf, np.inf])).tolist() == [0.0, 1.0]


# -- the mixture: shape guarantees ----------------------------------------------------------------------


intervals = st.builds(
    Interval,
    calls=st.integers(1, 10**7),
    mean_s=st.floats(0, 1e4),
    stddev_s=st.floats(0, 1e5) | st.just(0.0),
    max_s=st.none() | st.floats(0, 1e5),
    max_exact=st.booleans(),
    min_s=st.none() | st.floats(0, 1e3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(intervals, min_size=0, max_size=12))
def test_bucket_counts_are_monotone_non_negative_and_reach_calls(rows: list[Interval]) -> None:
    mix = Mixture(rows)
    bounds = [*BUCKETS, 1e6, math.inf]
    counts = mix.bucket_counts(bounds)
    assert len(counts) == len(bounds)
    assert all(math.isfinite(c) and c >= 0 for c in counts), counts
    diffs = [b - a for a, b in itertools.pairwise(counts)]
    assert min(diffs, default=0) >= 0, f"decreasing bucket counts: {counts}"
    assert counts[-1] == mix.calls == sum(r.calls for r in rows), (counts[-1], mix.calls)
    assert max(counts) <= mix.calls


# Latencies as a server reports them: 0, or at least a nanosecond.
timings = st.just(0.0) | st.floats(1e-9, 1e4)
realistic_intervals = st.builds(
    Interval,
    calls=st.integers(1, 10**7),
    mean_s=timings,
    stddev_s=timings,
    max_s=st.none() | timings,
    max_exact=st.booleans(),
    min_s=st.none() | timings,
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(realistic_intervals, min_size=1, max_size=8), q=st.floats(0.001, 0.999))
def test_quantile_is_where_the_cdf_crosses_q(rows: list[Interval], q: float) -> None:
    mix = Mixture(rows)
    x = mix.quantile(q)
    assert math.isfinite(x) and x >= 0
    assert mix.cdf(x) >= q - 1e-6, (x, mix.cdf(x), q)
    if x > 0:
        assert mix.cdf(x * (1 - 2e-4)) < q + 1e-6, (x, mix.cdf(x * (1 - 2e-4)), q)
    assert mix.quantile(min(q + 0.01, 1.0)) >= x


def test_empty_mixture_has_nan_quantile_and_zero_buckets() -> None:
    mix = Mixture([])
    assert math.isnan(mix.quantile(0.95))
    assert math.isnan(mix.cdf(1.0))
    assert mix.calls == 0 and mix.total_s == 0.0
    assert mix.bucket_counts() == [0.0] * len(BUCKETS)
    assert not mix.suspect_bimodal


def test_calls_and_total_time_are_sums_over_rows() -> None:
    rows = [Interval(10, 0.5, 0.1, None, False, None), Interval(30, 0.1, 0.0, None, False, None)]
    mix = Mixture(rows)
    assert (mix.calls, mix.total_s) == (40, pytest.approx(8.0)), (mix.calls, mix.total_s)


def test_unsorted_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        Mixture([Interval(10, 0.5, 0.1, None, False, None)]).bucket_counts([1.0, 0.5])


def test_point_mass_row_is_a_step_at_its_mean() -> None:
    mix = Mixture([Interval(calls=50, mean_s=0.02, stddev_s=0.0, max_s=None, max_exact=False, min_s=None)])
    assert mix.cdf(0.02 * (1 - 1e-12)) == 0.0
    assert mix.cdf(0.02) == 1.0
    assert mix.quantile(0.95) == pytest.approx(0.02, rel=1e-4)
    counts = mix.bucket_counts([0.01, 0.019, 0.02, 0.021])
    assert counts == [0.0, 0.0, 50.0, 50.0], counts


def test_point_masses_mix_with_log_normal_rows() -> None:
    spread = Interval(calls=900, mean_s=0.01, stddev_s=0.002, max_s=None, max_exact=False, min_s=None)
    slow = Interval(calls=100, mean_s=0.5, stddev_s=0.0, max_s=0.5, max_exact=True, min_s=0.5)
    mix = Mixture([spread, slow])
    # 10 % of calls sit at 0.5 s: the p95 is there, the p85 among the fast row.
    assert mix.quantile(0.95) == pytest.approx(0.5, rel=1e-3)
    assert mix.quantile(0.85) < 0.02
    assert mix.cdf(0.4999) == pytest.approx(0.9, abs=1e-6)


# -- the mixture: known min and max ----------------------------------------------------------------------


def test_no_mass_above_a_known_max() -> None:
    # Mean 10 ms, stddev 10 ms: the fitted log-normal's p99 is about 48 ms, but no call took over 30 ms.
    free = Interval(calls=1000, mean_s=0.01, stddev_s=0.01, max_s=None, max_exact=False, min_s=None)
    bounded = Interval(calls=1000, mean_s=0.01, stddev_s=0.01, max_s=0.03, max_exact=True, min_s=None)
    assert row_quantile(free, 0.99) > 0.03, "the unbounded fit should reach past 30 ms, or this test proves nothing"
    mix = Mixture([bounded])
    assert mix.cdf(0.03) == 1.0
    assert mix.quantile(0.99) <= 0.03
    counts = mix.bucket_counts()
    above = [c for b, c in zip(BUCKETS, counts, strict=True) if b >= 0.03]
    assert all(c == 1000 for c in above), above
    # Below the max the fit is untouched: the tail's mass sits on the max, not spread over the body.
    assert mix.cdf(0.02) == pytest.approx(Mixture([free]).cdf(0.02), rel=1e-12)


def test_no_mass_below_a_known_min() -> None:
    row = Interval(calls=1000, mean_s=0.01, stddev_s=0.01, max_s=None, max_exact=False, min_s=0.004)
    mix = Mixture([row])
    assert mix.cdf(0.004 * (1 - 1e-9)) == 0.0
    assert mix.cdf(0.004) > 0.05  # the fitted mass below the min is held at the min
    assert mix.quantile(0.01) == pytest.approx(0.004, rel=1e-3)


def test_row_quantile_is_the_moment_fitted_log_normal() -> None:
    mean, sd = 0.2, 0.3
    sigma2 = math.log1p((sd / mean) ** 2)
    want = math.exp(math.log(mean) - sigma2 / 2 + math.sqrt(sigma2) * NormalDist().inv_cdf(0.95))
    row = Interval(calls=100, mean_s=mean, stddev_s=sd, max_s=None, max_exact=False, min_s=None)
    assert row_quantile(row, 0.95) == pytest.approx(want, rel=1e-12)
    assert Mixture([row]).quantile(0.95) == pytest.approx(want, rel=1e-4)


# -- the mixture: accuracy on synthetic log-normal mixtures ----------------------------------------------


def synthetic_windows(seed: int, count: int) -> list[tuple[list[Interval], np.ndarray]]:
    """Scrape windows of 2-6 statements, each log-normal with its own median (1 ms-2 s) and spread."""
    rng = np.random.default_rng(seed)
    windows = []
    for _ in range(count):
        rows, samples = [], []
        for _ in range(int(rng.integers(2, 7))):
            median = math.exp(rng.uniform(math.log(0.001), math.log(2.0)))
            x = median * np.exp(rng.normal(0.0, rng.uniform(0.1, 1.0), int(rng.integers(100, 3000))))
            rows.append(interval_from_samples(x))
            samples.append(x)
        windows.append((rows, np.concatenate(samples)))
    return windows


def accuracy_report(errors: Sequence[float]) -> tuple[float, float, str]:
    e = np.abs(np.array(errors))
    within = float(np.mean(e <= 0.10))
    median = float(np.median(e))
    return within, median, f"within 10 %: {within:.1%}, median {median:.2%}, worst {e.max():.1%}"


def quantile_errors(
    windows: list[tuple[list[Interval], np.ndarray]], means_only: bool = False
) -> dict[str, list[float]]:
    errors: dict[str, list[float]] = {"gauge": [], "histogram": []}
    for rows, samples in windows:
        if means_only:
            rows = [Interval(r.calls, r.mean_s, 0.0, None, False, None) for r in rows]
        mix = Mixture(rows)
        truth = true_quantile(samples, 0.95)
        errors["gauge"].append(mix.quantile(0.95) / truth - 1)
        hist = histogram_quantile(0.95, BUCKETS, mix.bucket_counts(), mix.calls)
        errors["histogram"].append(hist / truth - 1)
    return errors


@pytest.mark.parametrize("method", ["gauge", "histogram"])
def test_p95_of_log_normal_mixtures_meets_the_accuracy_goal(method: str) -> None:
    errors = quantile_errors(synthetic_windows(seed=20240601, count=300))[method]
    within, median, summary = accuracy_report(errors)
    worst = sorted(errors, key=abs)[-5:]
    assert within >= 0.95 and median <= 0.03, f"{method}: {summary}; worst errors {worst}"


def test_means_only_baseline_misses_the_goal_so_the_goal_can_fail() -> None:
    errors = quantile_errors(synthetic_windows(seed=20240601, count=100), means_only=True)["gauge"]
    within, median, summary = accuracy_report(errors)
    assert within < 0.5 and median > 0.2, f"the means-only baseline unexpectedly met the goal: {summary}"


def test_single_row_p95_is_close_to_its_sample_p95() -> None:
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(200):
        x = math.exp(rng.uniform(-6, 1)) * np.exp(rng.normal(0, rng.uniform(0.1, 1.2), int(rng.integers(200, 5000))))
        errors.append(row_quantile(interval_from_samples(x), 0.95) / true_quantile(x, 0.95) - 1)
    within, median, summary = accuracy_report(errors)
    assert within >= 0.95 and median <= 0.03, summary


# -- the mixture: bimodality flag ------------------------------------------------------------------------


def test_fast_and_slow_mode_in_one_row_is_flagged_and_split_in_two() -> None:
    # 10 % of the calls ten times slower: one log-normal's p95 is about a third too low; the flag says so,
    # and the two-mode fit (moments plus min and max) finds the slow mode.
    rng = np.random.default_rng(8)
    fast = np.exp(rng.normal(math.log(0.002), 0.2, 900))
    slow = np.exp(rng.normal(math.log(0.02), 0.2, 100))
    samples = np.concatenate((fast, slow))
    row = interval_from_samples(samples)
    one_mode = dataclasses.replace(row, min_s=None, max_s=None)
    error = row_quantile(one_mode, 0.95) / true_quantile(samples, 0.95) - 1
    assert error < -0.2, f"one log-normal should miss this p95 (error {error:+.1%}), or the test is moot"
    mixture = Mixture([row])
    assert mixture.two_mode_rows == 1
    error = mixture.quantile(0.95) / true_quantile(samples, 0.95) - 1
    assert abs(error) < 0.05, f"two-mode p95 off by {error:+.1%}"
    assert row_suspect_bimodal(row)
    other = interval_from_samples(np.exp(rng.normal(math.log(0.01), 0.5, 5000)))
    assert Mixture([row, other]).suspect_bimodal
    assert not row_suspect_bimodal(other)


def test_a_slow_cluster_of_its_own_is_flagged_by_the_fit_left_above_the_max() -> None:
    # 30 % of the calls ten times slower: little of the fit falls below the min, but its tail runs far
    # past the slow cluster's max.
    rng = np.random.default_rng(4)
    samples = np.concatenate((np.exp(rng.normal(0, 0.2, 3500)), 10 * np.exp(rng.normal(0, 0.2, 1500))))
    assert row_suspect_bimodal(interval_from_samples(samples))


def test_a_floor_like_pg_sleeps_whole_milliseconds_is_not_flagged() -> None:
    # pg_sleep sleeps whole milliseconds: a floor, a shape the fit handles, not a second mode.
    rng = np.random.default_rng(6)
    flagged = sum(
        row_suspect_bimodal(interval_from_samples(0.001 * np.ceil(5.0 * np.exp(rng.normal(0, 0.7, 300))) + 7e-5))
        for _ in range(200)
    )
    assert flagged <= 2, f"{flagged} of 200 floored log-normal rows flagged"


def test_log_normal_rows_are_rarely_flagged() -> None:
    flagged = [rows for rows, _ in synthetic_windows(seed=99, count=200) if Mixture(rows).suspect_bimodal]
    assert len(flagged) <= 4, f"{len(flagged)} of 200 unimodal windows flagged, e.g. {flagged[:1]}"


def test_a_flagged_row_with_under_1_percent_of_calls_does_not_flag_the_mixture() -> None:
    rng = np.random.default_rng(8)
    fast = 0.002 * np.exp(rng.normal(0, 0.2, 90))
    slow = 0.02 * np.exp(rng.normal(0, 0.2, 10))
    bimodal = interval_from_samples(np.concatenate((fast, slow)))
    assert row_suspect_bimodal(bimodal)
    bulk = interval_from_samples(np.exp(rng.normal(math.log(0.01), 0.5, 20_000)))
    assert not Mixture([bulk, bimodal]).suspect_bimodal


# -- speed ----------------------------------------------------------------------------------------------


def test_5000_rows_give_a_finite_p95_and_cumulative_buckets() -> None:
    """5,000 rows, as a big server's scrape has them: the math holds at that size. Its cost is a benchmark's
    business, not a test's (bench/p95_accuracy.py prints the milliseconds per scrape)."""
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(5000):
        n = int(rng.integers(10, 10**6))
        mean, sd = math.exp(rng.uniform(-1, 6)), 0.0
        sd = mean * float(rng.uniform(0.1, 2))
        prev = Cumulative(n, n * mean, sd, mean / 10, mean * 20)
        dn = int(rng.integers(2, 1000))
        w_mean = mean * float(rng.uniform(0.8, 1.2))
        d = w_mean - mean
        m2 = n * sd**2 + dn * (0.8 * sd) ** 2 + d * d * n * dn / (n + dn)
        pairs.append((prev, Cumulative(n + dn, n * mean + dn * w_mean, math.sqrt(m2 / (n + dn)), mean / 10, mean * 30)))

    def scrape() -> tuple[float, list[float]]:
        mix = Mixture(iv for prev, cur in pairs if (iv := interval_of(prev, cur)) is not None)
        return mix.quantile(0.95), mix.bucket_counts()

    p95, buckets = scrape()
    assert math.isfinite(p95) and p95 > 0
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(buckets)), "bucket counts must be cumulative"
    assert buckets[-1] <= sum(cur.calls - prev.calls for prev, cur in pairs) * (1 + 1e-9)


def test_quantile_outside_0_1_is_refused_and_nan_passes_through() -> None:
    mix = Mixture([Interval(10, 0.5, 0.1, None, False, None)])
    with pytest.raises(ValueError):
        mix.quantile(1.5)
    assert math.isnan(mix.quantile(math.nan))


# -- backed by the server's duration log ------------------------------------------------------------------


def _two_mode_statements(seed: int, n: int, slow_share: float) -> dict[int, np.ndarray]:
    """Two statements (query ids 1 and 2): one log-normal, one with a fast mode and a 30x slower one."""
    rng = np.random.default_rng(seed)
    plain = np.exp(rng.normal(math.log(0.004), 0.4, n))
    k = int(rng.binomial(n, slow_share))
    mixed = np.concatenate(
        (np.exp(rng.normal(math.log(0.01), 0.25, n - k)), np.exp(rng.normal(math.log(0.3), 0.25, k)))
    )
    return {1: plain, 2: mixed}


def _tail(statements: dict[int, np.ndarray], threshold: float, with_ids: bool = True) -> LoggedTail:
    pairs = [(float(x), qid) for qid, xs in statements.items() for x in xs if x >= threshold]
    return LoggedTail(threshold, [d for d, _ in pairs], [q for _, q in pairs] if with_ids else [])


def test_with_the_log_a_p95_above_its_threshold_is_a_logged_call_exactly() -> None:
    statements = _two_mode_statements(1, 2000, 0.20)
    every = np.concatenate(list(statements.values()))
    threshold = 0.15
    est = estimate({q: [interval_from_samples(x)] for q, x in statements.items()}, _tail(statements, threshold))
    truth = true_quantile(every, 0.95)
    assert truth >= threshold
    assert est.quantile(0.95) == truth
    assert est.source(0.95) == SOURCE_LOG
    assert not est.suspect_bimodal  # the log backs it: nothing left to suspect
    counts = est.bucket_counts(BUCKETS)
    for bound, count in zip(BUCKETS, counts, strict=True):
        if bound >= threshold:
            assert count == int((every <= bound).sum()), f"bucket {bound}"
    assert counts[-1] <= every.size


def test_below_its_threshold_the_log_fixes_the_tail_count_and_the_fast_modes_moments() -> None:
    # 3 % of one statement's calls 30x slower, above T; the p95 lies in the fast modes, below T.
    statements = _two_mode_statements(2, 3000, 0.03)
    every = np.concatenate(list(statements.values()))
    threshold = 0.1
    intervals = {q: [interval_from_samples(x)] for q, x in statements.items()}
    truth = true_quantile(every, 0.95)
    assert truth < threshold
    est = estimate(intervals, _tail(statements, threshold))
    assert isinstance(est, LogBacked) and est.refined == 1
    assert est.source(0.95) == SOURCE_LOG_TAIL
    error = est.quantile(0.95) / truth - 1
    assert abs(error) < 0.05, f"p95 off by {error:+.1%} with the log's tail taken out of the moments"
    first_above = next(i for i, b in enumerate(BUCKETS) if b >= threshold)
    logged = sum(1 for x in every if x >= threshold)
    below_bound = int((every <= BUCKETS[first_above]).sum())
    assert est.bucket_counts(BUCKETS)[first_above] == pytest.approx(below_bound, abs=1e-9)
    assert est.bucket_counts(BUCKETS)[first_above - 1] <= every.size - logged + 1e-9


def test_the_log_is_not_used_when_it_counts_more_calls_than_pg_stat_statements() -> None:
    statements = _two_mode_statements(3, 100, 0.10)
    intervals = {q: [interval_from_samples(x)] for q, x in statements.items()}
    too_many = LoggedTail(0.0, [0.5] * 500)
    est = estimate(intervals, too_many)
    assert isinstance(est, Mixture) and est.source(0.95) == SOURCE_PGSS


def test_a_log_without_query_ids_still_bounds_the_tail() -> None:
    statements = _two_mode_statements(4, 3000, 0.20)
    every = np.concatenate(list(statements.values()))
    threshold = 0.15
    est = estimate({q: [interval_from_samples(x)] for q, x in statements.items()}, _tail(statements, threshold, False))
    assert isinstance(est, LogBacked) and est.refined == 0
    assert est.quantile(0.95) == true_quantile(every, 0.95)
