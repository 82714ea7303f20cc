"""Query latency percentiles from pg_stat_statements deltas: pure math, no database access.

pg_stat_statements keeps, per row (userid, dbid, queryid, toplevel), cumulative calls, total time, population
standard deviation, min and max. From two snapshots of a row, ``pg_architect.core.pgss.interval_of`` recovers
the exact mean and standard deviation of the calls made between them (the parallel-variance formula).
:class:`Mixture` models
each row's interval as a log-normal fitted by those two moments, confined to the row's known [min, max], and
mixes the rows weighted by their calls; its quantile is the p95 gauge and its CDF at the bucket bounds,
times the calls, is the histogram. docs/p95.md has the method, the measured accuracy and the limits.

Units: seconds.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Protocol

from pg_architect.core.pgss import Interval

__all__ = [
    "BUCKETS",
    "SOURCE_LOG",
    "SOURCE_LOG_TAIL",
    "SOURCE_PGSS",
    "SOURCE_PGSS_ACTIVITY_HIDDEN",
    "SOURCE_SAMPLING",
    "SOURCE_SAMPLING_TAIL",
    "Estimate",
    "Interval",
    "LogBacked",
    "LoggedTail",
    "Mixture",
    "estimate",
    "merge_tails",
    "row_quantile",
    "row_suspect_bimodal",
]

SOURCE_PGSS = "pg_stat_statements"
"""The p95 rests on pg_stat_statements' moments and bounds alone (the mixture model)."""
SOURCE_LOG = "duration_log"
"""The p95 lies above the log's threshold: it is a logged call's duration, exact."""
SOURCE_LOG_TAIL = "pg_stat_statements+duration_log"
"""The p95 lies below the log's threshold: the model, holding exactly as many calls as the log left below it."""
SOURCE_SAMPLING = "activity_sampling"
"""The p95 lies above the sampler's threshold: a sampled call's duration (pg_stat_activity, exporter/activity.py)."""
SOURCE_SAMPLING_TAIL = "pg_stat_statements+activity_sampling"
"""The p95 lies below the sampler's threshold: the model, holding exactly as many calls as sampling left below it."""
SOURCE_PGSS_ACTIVITY_HIDDEN = "pg_stat_statements:activity_hidden"
"""The model alone, because the sampler's role may not see other roles' sessions (grant pg_read_all_stats)."""


def _buckets(first: float = 0.001, last: float = 60.0, per_doubling: int = 4) -> tuple[float, ...]:
    # 4 significant digits keep the `le` labels short ("0.001189") and the spacing within 0.05 % of 2**(1/4).
    bounds: list[float] = []
    k = 0
    while not bounds or bounds[-1] < last:
        bounds.append(float(f"{first * 2.0 ** (k / per_doubling):.4g}"))
        k += 1
    return tuple(bounds)


BUCKETS: tuple[float, ...] = _buckets()
"""Histogram upper bounds in seconds, 1 ms to 65.54 s spaced by 2**(1/4) (about 9 per decade), no +Inf."""

_SQRT1_2 = math.sqrt(0.5)
# A row whose spread is below this share of its mean is a point mass for every purpose a histogram has.
_POINT_CV = 1e-9
# Rows need this many calls before their shape is judged, and must hold this share of a mixture's calls
# before a doubtful shape flags the whole mixture.
_SUSPECT_MIN_CALLS = 20
_SUSPECT_MIN_SHARE = 0.01
# Thresholds on how badly a row's min and max contradict its fitted log-normal (calibrated by simulation,
# docs/p95.md): a fast mode with a rare slow one puts a fifth or more of the fit below the min; a slow mode
# that is a cluster of its own leaves many calls' worth of the fit above the max; a lone extreme call makes
# the max improbable. A log-normal sample of n calls has about 1/n of the fit below its min and 1 call's
# worth above its max; a floor (a fixed minimum cost) stays around 0.1 below.
_SUSPECT_MASS_BELOW = 0.2
_SUSPECT_CALLS_ABOVE = 8.0
_SUSPECT_MAX_PROBABILITY = 1e-3


# -- the standard normal CDF ----------------------------------------------------------------------------


# Phi(z) is 0 or 1 to double precision beyond this many standard deviations (Phi(-8.5) = 9.5e-18, and
# Phi(8.5) rounds to 1.0): bucket_counts evaluates erfc only inside the window.
_Z_WINDOW = 8.5
_FLOAT_MAX = sys.float_info.max


def _phi1(z: float) -> float:
    """Standard normal CDF at one z, through math.erfc (the lower tail keeps its relative precision)."""
    return 0.5 * math.erfc(-z * _SQRT1_2)


def _phi(z: Iterable[float]) -> array[float]:
    """Standard normal CDF of each z, as an array of doubles; Phi(-inf) = 0, Phi(inf) = 1."""
    return array("d", [0.5 * math.erfc(-v * _SQRT1_2) for v in z])


def _log(x: float) -> float:
    """Natural log with log(0) = -inf (and log of a negative number -inf too: only x > 0 matters here)."""
    return math.log(x) if x > 0.0 else -math.inf


def _exp(x: float) -> float:
    """exp that overflows to inf instead of raising."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _finite_or(x: float, nan: float) -> float:
    """numpy.nan_to_num(x, nan=nan): NaN -> nan, +inf -> the largest float, -inf -> the most negative."""
    if math.isnan(x):
        return nan
    if x == math.inf:
        return _FLOAT_MAX
    if x == -math.inf:
        return -_FLOAT_MAX
    return x


# -- the mixture -----------------------------------------------------------------------------------------


class Mixture:
    """The latency distribution of a scrape window: one log-normal per row, weighted by the row's calls.

    Each row's log-normal has the interval's mean and standard deviation and is confined to the row's known
    range: the fitted mass below ``min_s`` sits at ``min_s`` and the mass above ``max_s`` at ``max_s``, so no
    mass is ever put outside a known bound (an exact max is a call that happened, so the tail's mass belongs
    there). Rows with no spread are point masses at their mean.

    Two moments cannot see a row with a fast and a slow mode. ``suspect_bimodal`` is True when a row with at
    least 20 calls and 1 % of the mixture's calls has a shape its min and max contradict: more than
    max(20 %, 5 / calls) of its fitted mass below its known minimum, more than 8 calls' worth above its
    known maximum, or an exact maximum the fit makes less than 0.1 % likely. It is a hint, not a proof:
    docs/p95.md has its measured hit and false-alarm rates.
    """

    __slots__ = (
        "_calls",
        "_hi",
        "_inv",
        "_lo",
        "_mu",
        "_pt_cum",
        "_pt_x",
        "_rows",
        "_sigma",
        "_steps",
        "_total_s",
        "_w",
        "suspect_bimodal",
        "two_mode_rows",
    )

    def __init__(self, intervals: Iterable[Interval]) -> None:
        calls = 0
        total = 0.0
        points: list[tuple[float, float]] = []
        ws: list[float] = []
        los: list[float] = []
        his: list[float] = []
        mus: list[float] = []
        sigmas: list[float] = []
        exact: list[bool] = []
        moments: list[tuple[float, float, int]] = []
        for iv in intervals:
            if iv.calls <= 0:
                continue
            calls += iv.calls
            w = float(iv.calls)
            # NaN and infinite moments count as 0; an unknown min is 0 and an unknown max unbounded.
            mean = iv.mean_s if math.isfinite(iv.mean_s) else 0.0
            std = iv.stddev_s if math.isfinite(iv.stddev_s) else 0.0
            lo = max(_finite_or(iv.min_s, 0.0) if iv.min_s is not None else 0.0, 0.0)
            hi = max(_finite_or(iv.max_s, math.inf) if iv.max_s is not None else _FLOAT_MAX, lo)
            mean = min(max(mean, 0.0, lo), hi)
            std = max(std, 0.0)
            total += w * mean
            if std <= _POINT_CV * mean or mean <= 0.0 or hi <= lo or w <= 1.0:
                points.append((mean, w))
                continue
            # Non-negative data of n values has a coefficient of variation of at most sqrt(n - 1); past that
            # the input is inconsistent, and capping keeps sigma finite (a subnormal mean overflows to inf).
            cv = min(std / mean, math.sqrt(w - 1.0))
            s2 = math.log1p(cv * cv)
            ws.append(w)
            los.append(lo)
            his.append(hi)
            sigmas.append(math.sqrt(s2))
            mus.append(math.log(mean) - 0.5 * s2)
            exact.append(iv.max_exact and iv.max_s is not None)
            moments.append((mean, std, max(iv.history_calls, iv.calls)))

        # Rows whose own min and max contradict one log-normal: flag the mixture, and where two modes with
        # a common shape fit the row's moments and extremes, model the row as those two (docs/p95.md).
        flags = _misfit(ws, mus, sigmas, los, his, exact)
        share = _SUSPECT_MIN_SHARE * calls
        self.suspect_bimodal: bool = any(flag and w >= share for flag, w in zip(flags, ws, strict=True))
        self.two_mode_rows = 0
        for i, flag in enumerate(flags):
            # Only rows that can move the mixture's quantiles (at most 100 of them) are worth the fit.
            split = _two_modes(ws[i], *moments[i], los[i], his[i]) if flag and ws[i] >= share else None
            if split is None:
                continue
            p, mu1, mu2, sigma = split
            self.two_mode_rows += 1
            w = ws[i]
            ws[i], mus[i], sigmas[i] = w * (1.0 - p), mu1, sigma
            ws.append(w * p)
            mus.append(mu2)
            sigmas.append(sigma)
            los.append(los[i])
            his.append(his[i])

        self._calls = calls
        self._total_s = total
        points.sort(key=lambda p: p[0])  # stable: ties keep their order
        self._pt_x = [x for x, _ in points]
        self._pt_cum = list(itertools.accumulate(w for _, w in points))
        self._w = ws
        self._lo = los
        self._hi = his
        self._mu = mus
        self._sigma = sigmas
        # -1 / (sigma * sqrt 2): Phi((log x - mu) / sigma) = 0.5 * erfc((log x - mu) * inv).
        self._inv = [-_SQRT1_2 / s for s in sigmas]
        self._rows = list(zip(los, his, ws, mus, self._inv, sigmas, strict=True))
        self._steps = sorted(set(self._pt_x) | {v for v in los if v > 0} | {v for v in his if math.isfinite(v)})

    @property
    def calls(self) -> int:
        """Calls in the window."""
        return self._calls

    @property
    def total_s(self) -> float:
        """Time spent in the window's calls (sum of calls * mean)."""
        return self._total_s

    def source(self, q: float = 0.95) -> str:
        """Which evidence the quantile ``q`` rests on: pg_stat_statements alone."""
        return SOURCE_PGSS

    def cdf(self, x_s: float) -> float:
        """Share of the window's calls that took at most ``x_s`` seconds; NaN for an empty mixture."""
        if self._calls == 0 or math.isnan(x_s):
            return math.nan
        value = self._cdf_scalar(x_s) / self._calls
        return min(max(value, 0.0), 1.0)

    def bucket_counts(self, bounds: Sequence[float] = BUCKETS) -> list[float]:
        """Cumulative calls at or below each bound (``calls * F(bound)``): >= 0, non-decreasing, never NaN.

        ``bounds`` must be ascending; the +Inf bucket is ``calls``.
        """
        try:
            b = [float(v) for v in bounds]
        except (TypeError, ValueError) as exc:
            raise ValueError("bucket bounds must be a flat ascending sequence of numbers") from exc
        if any(math.isnan(v) for v in b) or any(b2 < b1 for b1, b2 in itertools.pairwise(b)):
            raise ValueError("bucket bounds must be a flat ascending sequence of numbers")
        n = len(b)
        if self._calls == 0:
            return [0.0] * n
        log_b = [_log(v) for v in b]
        counts = [0.0] * n
        # Weight that is whole from a bound on (the bound at or above the row's max, or far enough above its
        # fit that Phi is 1): a difference array, summed once at the end.
        whole = [0.0] * (n + 1)
        left, right = bisect.bisect_left, bisect.bisect_right
        for lo, hi, w, mu, inv, sigma in self._rows:
            reach = _Z_WINDOW * sigma
            # Bounds below the min (or far below the fit) get nothing; the first bound at or above the max, or
            # past the window (but never below the min), starts the whole weight; the bounds between get erfc.
            below = left(b, lo)
            top = min(left(b, hi), max(right(log_b, mu + reach), below))
            first = max(below, left(log_b, mu - reach, 0, top))
            whole[top] += w
            half = 0.5 * w
            for k in range(first, top):
                counts[k] += half * math.erfc((log_b[k] - mu) * inv)
        if self._pt_x:
            pt_x, pt_cum = self._pt_x, self._pt_cum
            for k, v in enumerate(b):
                i = right(pt_x, v)
                if i:
                    counts[k] += pt_cum[i - 1]
        # Rounding in the normal CDF may not be exactly monotone or exactly within [0, calls]: make it so.
        cap = float(self._calls)
        out: list[float] = []
        running = 0.0
        acc = 0.0
        for k in range(n):
            acc += whole[k]
            c = counts[k] + acc
            if c > running:  # NaN and negative counts stay at the running maximum, which starts at 0
                running = min(c, cap)
            out.append(running)
        return out

    def _row_quantiles(self, q: float) -> list[float]:
        zq = NormalDist().inv_cdf(q)
        ln = [
            min(max(_exp(mu + sigma * zq), lo), hi)
            for mu, sigma, lo, hi in zip(self._mu, self._sigma, self._lo, self._hi, strict=True)
        ]
        return ln + self._pt_x

    def quantile(self, q: float) -> float:
        """The smallest x with F(x) >= q, to 1e-7 relative (bisection on a log scale); NaN with no calls."""
        if math.isnan(q) or not 0.0 <= q <= 1.0:
            if math.isnan(q):
                return math.nan
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self._calls == 0:
            return math.nan
        if q == 0.0:
            return float(min(min(self._lo, default=math.inf), min(self._pt_x, default=math.inf)))
        if q == 1.0:
            return float(max(max(self._hi, default=0.0), max(self._pt_x, default=0.0)))
        # A mixture's quantile lies between its components' quantiles.
        candidates = self._row_quantiles(q)
        lo, hi = min(candidates), max(candidates)
        target = q * self._calls
        if lo >= hi:
            return hi
        if lo <= 0.0:
            if self._cdf_scalar(0.0) >= target:
                return 0.0
            positive = [c for c in candidates if c > 0]
            lo = min(positive) if positive else hi
            while self._cdf_scalar(lo) >= target:
                if lo < 1e-300:
                    return lo
                lo *= 1e-3
        log_lo, log_hi = math.log(lo), math.log(hi)
        while log_hi - log_lo > 1e-7:  # so the quantile is monotone in q even for very narrow rows
            mid = 0.5 * (log_lo + log_hi)
            if self._cdf_scalar(math.exp(mid)) >= target:
                log_hi = mid
            else:
                log_lo = mid
        x = math.exp(log_hi)
        # A step of the CDF (a point mass, or the mass held at a row's min or max) inside the last bracket
        # is the exact answer; bisection only closes in on it.
        first = bisect.bisect_left(self._steps, math.exp(log_lo) * (1 - 1e-12))
        last = bisect.bisect_right(self._steps, x * (1 + 1e-12))
        for step in self._steps[first:last]:
            if self._cdf_scalar(step) >= target:
                return step
        for _ in range(4):  # exp(log(x)) may round a hair below a step of the CDF
            if self._cdf_scalar(x) >= target:
                break
            x = math.nextafter(x, math.inf)
        return x

    def _cdf_scalar(self, x: float) -> float:
        """Calls at or below x."""
        total = 0.0
        if self._rows:
            lx = _log(x)
            erfc = math.erfc
            for lo, hi, w, mu, inv, _ in self._rows:
                # The fitted mass outside a row's known [min, max] sits on the bound it crossed.
                if x >= hi:
                    total += w
                elif x >= lo:
                    total += 0.5 * w * erfc((lx - mu) * inv)
        if self._pt_x:
            i = bisect.bisect_right(self._pt_x, x)
            if i:
                total += self._pt_cum[i - 1]
        return total


def _misfit(
    w: Sequence[float],
    mu: Sequence[float],
    sigma: Sequence[float],
    lo: Sequence[float],
    hi: Sequence[float],
    exact: Sequence[bool],
) -> list[bool]:
    """Rows whose fitted log-normal their own min or max contradicts (a hidden second mode)."""
    flags: list[bool] = []
    for wi, mui, si, loi, hii, ex in zip(w, mu, sigma, lo, hi, exact, strict=True):
        below = _phi1((_log(loi) - mui) / si)  # fitted mass below the known minimum
        above = _phi1((mui - _log(hii)) / si)  # fitted mass above the known maximum, as a lower tail
        # P(max of n calls >= observed max) = 1 - F(max)**n, about n * (1 - F(max)) when that is small.
        max_improbable = ex and wi * above < _SUSPECT_MAX_PROBABILITY
        too_much_below = below > max(_SUSPECT_MASS_BELOW, 5.0 / wi)
        too_much_above = wi * above > _SUSPECT_CALLS_ABOVE
        flags.append(wi >= _SUSPECT_MIN_CALLS and (too_much_below or too_much_above or max_improbable))
    return flags


def _expected_min_z(n: float) -> float:
    """The expected minimum of n standard normal draws (Blom's approximation)."""
    return _NORMAL.inv_cdf(0.625 / (max(n, 1.0) + 0.25))


_NORMAL = NormalDist()
_TWO_MODE_SIGMAS = tuple(0.02 * 75.0 ** (k / 40) for k in range(41))  # 0.02 to 1.5, geometric


def _two_modes(
    w: float, mean: float, std: float, history: int, lo: float, hi: float
) -> tuple[float, float, float, float] | None:
    """A fast and a slow log-normal with a common sigma for one row: (slow share, mu fast, mu slow, sigma).

    Four facts, four unknowns: the window's mean and second moment (exact), and the row's min and max, taken
    as the expected extremes of ``history`` calls (the fast mode's minimum, the slow mode's maximum). For
    each sigma the extremes place both modes and the mean gives the slow share; the second moment picks
    sigma (the smallest root). None when no such pair fits (no second mode, or the bounds are not usable).
    """
    if not (0.0 < lo < mean < hi) or not math.isfinite(hi) or hi >= _FLOAT_MAX or w < _SUSPECT_MIN_CALLS:
        return None
    n = float(max(history, w))
    e2 = mean * mean + std * std
    log_lo, log_hi = math.log(lo), math.log(hi)

    def solve(sigma: float) -> tuple[float, float, float, float] | None:
        p = 0.05
        mu1 = mu2 = 0.0
        half = 0.5 * sigma * sigma
        for _ in range(12):  # the extremes' z moves with log(p): a few rounds settle p to 1e-9
            mu1 = log_lo - sigma * _expected_min_z(n * (1.0 - p))
            mu2 = log_hi + sigma * _expected_min_z(n * p)
            fast, slow = _exp(mu1 + half), _exp(mu2 + half)
            if slow <= 1.5 * fast:
                return None
            nxt = (mean - fast) / (slow - fast)
            if not 0.0 < nxt < 1.0:
                return None
            done = abs(nxt - p) < 1e-9 * nxt
            p = nxt
            if done:
                break
        residual = _exp(4.0 * half) * ((1.0 - p) * _exp(2.0 * mu1) + p * _exp(2.0 * mu2)) - e2
        return residual, p, mu1, mu2

    previous: tuple[float, tuple[float, float, float, float]] | None = None
    for sigma in _TWO_MODE_SIGMAS:
        found = solve(sigma)
        if found is None:
            previous = None
            continue
        if previous is not None and (previous[1][0] < 0.0) != (found[0] < 0.0):
            a, b = previous[0], sigma
            below = previous[1][0] < 0.0
            for _ in range(30):
                mid = 0.5 * (a + b)
                at = solve(mid)
                if at is None:
                    return None
                if (at[0] < 0.0) == below:
                    a = mid
                else:
                    b = mid
            at = solve(0.5 * (a + b))
            if at is None or not 0.0 < at[1] < 0.5:
                return None
            return at[1], at[2], at[3], 0.5 * (a + b)
        previous = (sigma, found)
    return None


def row_quantile(interval: Interval, q: float) -> float:
    """A single row's fitted quantile (for a per-queryid p95); same model as :class:`Mixture`."""
    return Mixture((interval,)).quantile(q)


def row_suspect_bimodal(interval: Interval) -> bool:
    """True when the row's min or exact max contradicts its fitted log-normal (see :class:`Mixture`)."""
    return Mixture((interval,)).suspect_bimodal


# -- the server's duration log ---------------------------------------------------------------------------


class Estimate(Protocol):
    """What the exporter publishes for one database's window: the p95 gauge, the histogram, the flag."""

    @property
    def calls(self) -> int: ...

    @property
    def total_s(self) -> float: ...

    @property
    def suspect_bimodal(self) -> bool: ...

    def quantile(self, q: float) -> float: ...

    def bucket_counts(self, bounds: Sequence[float] = BUCKETS) -> list[float]: ...

    def source(self, q: float = 0.95) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedTail:
    """Every call of one database's window at or above ``threshold_s``, from the server's duration log or from
    sampling pg_stat_activity.

    ``query_ids`` runs parallel to ``durations_s`` (0 where the source did not say); empty when unknown. Calls
    shorter than ``sampled_below_s`` come from sampling, the others from the log (0: the log alone; infinity:
    sampling alone).
    """

    threshold_s: float
    durations_s: Sequence[float]
    query_ids: Sequence[int] = ()
    sampled_below_s: float = 0.0


def merge_tails(logged: LoggedTail | None, sampled: LoggedTail | None) -> LoggedTail | None:
    """One tail from the duration log and from sampling: the log's calls above its threshold (exact), sampled
    calls between the sampler's threshold and the log's. The log alone when its threshold is the lower."""
    if sampled is None or (logged is not None and logged.threshold_s <= sampled.threshold_s):
        return logged
    if logged is None:
        return sampled
    cut = logged.threshold_s
    durations = [d for d in logged.durations_s if d >= cut]
    ids = [q for d, q in itertools.zip_longest(logged.durations_s, logged.query_ids, fillvalue=0) if d >= cut]
    for d, q in itertools.zip_longest(sampled.durations_s, sampled.query_ids, fillvalue=0):
        if d < cut:
            durations.append(d)
            ids.append(q)
    return LoggedTail(sampled.threshold_s, durations, ids, sampled_below_s=cut)


class LogBacked:
    """A window whose calls at or above the log's threshold T are known one by one.

    Above T the CDF is exact: ``calls - k`` calls below T, plus every logged duration at or below x. Below
    T it is the model, scaled to hold exactly the ``calls - k`` calls the log left there. Where the log
    carries query ids, each statement's logged calls are taken out of its pg_stat_statements moments first
    (count, sum and sum of squares are exact), so the model below T describes only the calls below T: a
    slow mode above T no longer distorts the fast one.
    """

    __slots__ = (
        "_below",
        "_calls",
        "_durations",
        "_model",
        "_sampled_below",
        "_scale",
        "_threshold",
        "_total_s",
        "refined",
    )

    def __init__(self, statements: Mapping[int, Sequence[Interval]], tail: LoggedTail) -> None:
        threshold = tail.threshold_s
        # Sampled lines (log_min_duration_sample, log_transaction_sample_rate) below T are not the tail.
        durations = sorted(d for d in tail.durations_s if d >= threshold)
        logged: dict[int, list[float]] = {}
        for qid, d in zip(tail.query_ids, tail.durations_s, strict=False):
            if qid and d >= threshold:
                logged.setdefault(qid, []).append(d)
        rows: list[Interval] = []
        refined = 0
        calls = 0
        total = 0.0
        for qid, intervals in statements.items():
            n = sum(iv.calls for iv in intervals if iv.calls > 0)
            calls += n
            total += sum(iv.calls * iv.mean_s for iv in intervals if iv.calls > 0)
            below = _below(intervals, logged.get(qid, ()), threshold) if qid in logged else None
            if below is not None:
                refined += 1
                if below.calls > 0:
                    rows.append(below)
            else:
                rows.extend(intervals)
        self._calls = calls
        self._total_s = total
        self._threshold = threshold
        self._sampled_below = tail.sampled_below_s
        self._durations = durations
        self._below = max(calls - len(durations), 0)
        self._model = Mixture(rows)
        mass = self._model._cdf_scalar(threshold)
        # The model's calls below T, scaled to the count the log leaves there.
        self._scale = self._below / mass if mass > 0 else 0.0
        self.refined = refined

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def total_s(self) -> float:
        return self._total_s

    @property
    def suspect_bimodal(self) -> bool:
        """Only the model below T can hide a second mode, and only when the p95 rests on it."""
        return self.source(0.95) not in (SOURCE_LOG, SOURCE_SAMPLING) and self._model.suspect_bimodal

    def source(self, q: float = 0.95) -> str:
        if q * self._calls > self._below and self._durations:
            return SOURCE_SAMPLING if self.quantile(q) < self._sampled_below else SOURCE_LOG
        return SOURCE_SAMPLING_TAIL if self._threshold < self._sampled_below else SOURCE_LOG_TAIL

    def quantile(self, q: float) -> float:
        """The smallest x with F(x) >= q: a logged duration above T, the scaled model below it."""
        if math.isnan(q):
            return math.nan
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self._calls == 0:
            return math.nan
        rank = q * self._calls
        if rank > self._below:
            j = max(math.ceil(rank - self._below - 1e-9), 1)
            return self._durations[min(j, len(self._durations)) - 1]
        if self._scale <= 0.0 or self._model.calls == 0:
            return self._threshold  # calls below T the model cannot place: at most T
        inner = min(rank / (self._scale * self._model.calls), 1.0)
        return min(self._model.quantile(inner), self._threshold)

    def bucket_counts(self, bounds: Sequence[float] = BUCKETS) -> list[float]:
        """Cumulative calls at or below each bound: exact from T on, the scaled model below."""
        model = self._model.bucket_counts(bounds)
        out: list[float] = []
        running = 0.0
        for bound, modelled in zip(bounds, model, strict=True):
            if bound >= self._threshold:
                value = float(self._below + bisect.bisect_right(self._durations, bound))
            else:
                value = min(modelled * self._scale, float(self._below))
            running = max(running, value)
            out.append(running)
        return out


def _below(intervals: Sequence[Interval], logged: Sequence[float], threshold: float) -> Interval | None:
    """One statement's calls below T: its window moments minus its logged calls; None if inconsistent.

    Count, sum and sum of squares of a statement's calls are exact from pg_stat_statements; the log gives
    those of its calls at or above T, so the difference is exact too. It is refused (None: keep the whole
    statement) when it contradicts itself, e.g. because the log timed a little more than the executor.
    """
    live = [iv for iv in intervals if iv.calls > 0]
    n = sum(iv.calls for iv in live)
    k = len(logged)
    if k > n:
        return None
    if k == n:
        return Interval(0, 0.0, 0.0, None, False, None)
    s1 = sum(iv.calls * iv.mean_s for iv in live) - math.fsum(logged)
    s2 = sum(iv.calls * (iv.stddev_s**2 + iv.mean_s**2) for iv in live) - math.fsum(x * x for x in logged)
    m = n - k
    mean = s1 / m
    if not 0.0 < mean < threshold:
        return None
    var = s2 / m - mean * mean
    if var < -1e-9 * mean * mean:
        return None
    mins = [iv.min_s for iv in live]
    lo = min(v for v in mins if v is not None) if all(v is not None for v in mins) else None
    maxes = [iv.max_s for iv in live]
    hi = min([threshold, *(v for v in maxes if v is not None)]) if all(v is not None for v in maxes) else threshold
    if lo is not None and (lo > mean or lo >= hi):
        lo = None
    return Interval(m, mean, math.sqrt(max(var, 0.0)), hi, False, lo)


def estimate(statements: Mapping[int, Sequence[Interval]], tail: LoggedTail | None) -> Estimate:
    """One database's window: the mixture of its statements, backed by the duration log when there is one.

    ``statements`` maps a queryid to its rows' intervals. The log is not used when it holds more calls than
    pg_stat_statements counted (the two disagree about the window).
    """
    if tail is not None:
        calls = sum(iv.calls for ivs in statements.values() for iv in ivs if iv.calls > 0)
        if sum(d >= tail.threshold_s for d in tail.durations_s) <= calls:
            return LogBacked(statements, tail)
    return Mixture(iv for ivs in statements.values() for iv in ivs)
