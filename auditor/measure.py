"""Measuring a candidate index without changing the audited database.

Three methods, one chosen per statement and reported with the result:

- ``hypothetical`` (hypopg): plain EXPLAIN with and without a hypothetical index; no lock, nothing built.
  If hypopg is available but not created, it is created inside a transaction that is rolled back.
- ``rollback_build``: BEGIN; EXPLAIN ANALYZE; CREATE INDEX (in a savepoint); ANALYZE when the index has
  expressions; EXPLAIN ANALYZE; ROLLBACK, under lock_timeout and statement_timeout, only for SELECT
  statements on tables below ``measurement.max_table_bytes``.
- ``staging``: the same against ``measurement.staging_dsn``, without the size limit.

DML is never executed: UPDATE/DELETE/INSERT are compared by plain EXPLAIN costs only.
Every statement we EXPLAIN ANALYZE (it came from pg_stat_statements, so it is untrusted) passes the
read-only allow-list first, and every index we build passes the index allow-list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pg_architect.auditor import advisor, catalog, safety
from pg_architect.auditor.advisor import Candidate
from pg_architect.auditor.catalog import TableInfo
from pg_architect.auditor.models import Measurement, MeasurementMethod
from pg_architect.core import db
from pg_architect.core.config import MeasurementConfig
from pg_architect.core.errors import DatabaseError, PgArchitectError, QueryTimeout, UnsafeSQLError
from pg_architect.core.sqlfiles import mark

log = logging.getLogger(__name__)

#: Real timings: repeat each sample and keep the fastest, so a cold cache does not count as "before" gain.
REPEATS = 2
MAX_BUILDS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    cost: float
    ms: float | None
    rows: float  # planned rows of the statement's output (a DML statement's: the rows it would touch)
    nodes: tuple[str, ...]
    index_names: frozenset[str]
    text: str
    actual_rows: float | None = None  # EXPLAIN ANALYZE only
    # EXPLAIN ANALYZE only: rows each table's sequential scan kept (after its filter), by relation name
    scan_rows: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any) -> Plan:
        top = doc[0] if isinstance(doc, list) else doc
        root = top["Plan"]
        nodes: list[str] = []
        names: set[str] = set()
        scanned: dict[str, float] = {}
        stack = [root]
        while stack:
            node = stack.pop()
            label = node.get("Node Type", "?")
            if label == "Seq Scan" and "Relation Name" in node and "Actual Rows" in node:
                kept = float(node["Actual Rows"]) * float(node.get("Actual Loops", 1) or 1)
                scanned[node["Relation Name"]] = scanned.get(node["Relation Name"], 0.0) + kept
            if "Index Name" in node:
                names.add(node["Index Name"])
                label += f" using {node['Index Name']}"
            if "Relation Name" in node:
                label += f" on {node['Relation Name']}"
            nodes.append(label)
            stack.extend(reversed(node.get("Plans", [])))
        # A DML statement's root returns nothing: the rows it touches are its input's.
        output = root["Plans"][0] if root.get("Node Type") == "ModifyTable" and root.get("Plans") else root
        return cls(
            cost=float(root.get("Total Cost", 0.0)),
            ms=top.get("Execution Time"),
            rows=float(output.get("Plan Rows", 0.0)),
            nodes=tuple(nodes),
            index_names=frozenset(names),
            text=" -> ".join(nodes),
            actual_rows=float(output["Actual Rows"]) * float(output.get("Actual Loops", 1) or 1)
            if "Actual Rows" in output
            else None,
            scan_rows=scanned,
        )

    def shape(self) -> tuple[str, ...]:
        return tuple(n.split(" using ")[0] for n in self.nodes)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One candidate's measurement, or why it could not be measured."""

    candidate: Candidate
    measurement: Measurement | None
    used_index: bool = False
    consistent: bool = False
    error: str | None = None
    expression_estimate_only: bool = False
    # Executed before-plans only: the mean rows the sequential scan of the candidate's table kept (what an index
    # on the filter would read instead of the whole table).
    returned_rows: float | None = None
    seq_scanned: bool = False  # the before-plans scan the candidate's table sequentially
    write_note: str | None = None  # DML: the maintenance the index adds to every row the statement writes
    too_slow: bool = False  # with the index a sample ran over its budget and was cancelled (SampleTooSlow)


#: Two measurements this close are the same to us: timings within 25 % (and 0.05 ms; a shared, loaded machine
#: varies that much between two runs of one statement), costs within 2 %.
TIME_NOISE = 0.25
TIME_NOISE_MS = 0.05
COST_NOISE = 0.02


def clears_threshold(m: Measurement, min_gain_percent: float) -> bool:
    """The gain is over ``min_gain_percent``; a timed gain still is with the time after slowed by timing noise.

    One run of a statement on a shared machine varies by ``TIME_NOISE``: an index measured 1.3x faster may be no
    faster at all (the plan that used it on one sample and not on the other measured 1.27x, then 1.03x), and a
    gain the noise could have made is no gain to recommend. Planner costs do not vary between runs.
    """
    if m.gain_percent <= min_gain_percent:
        return False
    if m.before_ms is None or m.after_ms is None:
        return True
    slowed = m.after_ms * (1 + TIME_NOISE) + TIME_NOISE_MS * max(m.samples, 1)
    return slowed < m.before_ms * (1 - min_gain_percent / 100.0)


class CannotMeasure(PgArchitectError):
    """No safe measurement method applies to this statement here."""


class NoRepresentativeSample(CannotMeasure):
    """Every drawn sample was far from what pg_stat_statements recorded for the statement."""


def explain(conn: db.Connection, sql: str, *, analyze: bool) -> Plan:
    """The plan of ``sql`` (an allow-listed workload statement), always inside a READ ONLY (sub)transaction
    that is rolled back: whatever planning or execution would try to write fails instead."""
    options = "ANALYZE, TIMING OFF, FORMAT JSON" if analyze else "FORMAT JSON"
    if analyze and conn.info.server_version >= 170000:
        # EXPLAIN ANALYZE neither fetches TOASTed output values nor formats rows: a page of 5 kB values timed 24
        # ms -> 4 ms with an index and 17 ms -> 17 ms when really fetched. SERIALIZE (17+) times that too.
        options += ", SERIALIZE"
    with rolled_back(conn, read_only=True):
        doc = db.fetch_value(conn, mark(f"EXPLAIN ({options}) {sql}"))
    return Plan.from_json(doc if not isinstance(doc, str) else json.loads(doc))


def representative(conn: db.Connection, samples: Sequence[str], rows_per_call: float | None, keep: int) -> list[str]:
    """The samples ordered by how close their planned rows are to what each call really returned, at most
    ``keep`` of them.

    Parameter values come from statistics, not from the application: a range sampled to be selective makes
    an index look good for a statement whose real calls read most of the table. pg_stat_statements records
    the rows each call returns (or touches), comparable to the plan's row estimate; samples far from it are
    not what the workload runs. The measurement then keeps only samples it can trust (see ``Recorded``).
    """
    if rows_per_call is None or rows_per_call <= 0 or len(samples) <= 1:
        return list(samples[:keep])
    planned = [
        (abs(math.log((explain(conn, s, analyze=False).rows + 1) / (rows_per_call + 1))), i)
        for i, s in enumerate(samples)
    ]
    return [samples[i] for _, i in sorted(planned)[:keep]]


#: A sample may run at most this multiple of the statement's recorded mean (then it is cancelled) ...
SAMPLE_TIMEOUT_FACTOR = 5.0
#: ... but never less than this, so that a 1 ms statement is not cancelled by a scheduling hiccup.
SAMPLE_TIMEOUT_FLOOR_MS = 250.0
#: A sample this many times faster than the recorded mean does not run what the workload runs
#: (``char(10)`` bound as ``char(1)`` matched nothing: 0.9 ms against a 120 ms mean). Wide, because the
#: recorded mean includes cold reads and lock waits a warm measurement does not have.
TOO_FAST_FACTOR = 20.0
#: Rows off by more than this factor either way (with 10 rows of slack, so 0 against 20 is not "far").
ROWS_FACTOR = 10.0
ROWS_SLACK = 10.0
#: Where the rows each call returned say nothing of a range (it aggregates, deduplicates or groups:
#: auditor.params.time_fits), a sample must run within this factor of the recorded mean either way, with
#: TIME_SLACK_MS for statements of a millisecond. Samples are timed warm (the faster of REPEATS runs) while the
#: recorded mean holds the application's cold reads and its concurrency. On bench/advisor, in three runs under
#: load, the samples of the ranged aggregates whose values were right ran at 61-177 % of their recorded means;
#: those of the decoy whose application keeps 94 % of the table (sampled at 5 %) at 12-32 %, its recorded mean
#: itself moving 2x with the load (940-1,965 ms). A table scan's floor compresses the gap (5 % of the rows against
#: 94 % ran 3-8x faster, not 19x): 3x would let the decoy through in one run of four, 2x would catch faithful
#: samples on a busier machine. 2.5x leaves both sides a margin.
TIME_FACTOR = 2.5
TIME_SLACK_MS = 1.0
#: The shares of the table a range keeps that the time fit bisects over (``Measurer._fit_time``), and how many
#: new draws it may time (each cancelled at TIME_FACTOR times the recorded mean): 2^4 covers the 11 intervals.
FIT_SELECTIVITY = (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)
MAX_FIT_DRAWS = 4
#: Draws whose times all lie within this factor of each other show a range that hardly moves the time (a scan of
#: the table does the work, whatever the range keeps): then the time cannot judge the range. The decoy's draws
#: from 10 % to all of the table spread 2.5-4x; the same draws' noise on a loaded machine stays well under 2x.
FIT_SPREAD = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    """What pg_stat_statements recorded for the statement: what a representative sample must resemble."""

    mean_ms: float | None = None
    rows_per_call: float | None = None
    # The samples are the application's own logged calls (auditor.logged): what it ran, trusted as it is.
    logged: bool = False
    # The rows per call cannot judge the statement's range, its time must (auditor.params.time_fits).
    fits_time: bool = False

    def budget_ms(self) -> float | None:
        """How long one run of a sample may take before it is cancelled."""
        if self.mean_ms is None or self.mean_ms <= 0:
            return None
        return max(SAMPLE_TIMEOUT_FACTOR * self.mean_ms, SAMPLE_TIMEOUT_FLOOR_MS)

    def matched_nothing(self, plan: Plan) -> bool:
        """The executed sample returned no row while each call returned at least one: an empty result runs
        another plan (a hash join over no rows skips its other side, a LIMIT never stops early), so such a
        sample is used only when no other one was drawn."""
        if self.logged:
            return False
        return plan.actual_rows == 0 and self.rows_per_call is not None and self.rows_per_call >= 1.0

    def distrust(self, plan: Plan) -> str | None:
        """Why ``plan`` (a sample's, before any new index) is not what the workload runs; None when it is."""
        if self.logged:
            return None  # a call the application made is what the workload runs
        if self.fits_time and plan.ms is not None and self.mean_ms is not None and self.mean_ms > 0:
            return self._far_in_time(plan)
        rows = plan.actual_rows if plan.actual_rows is not None else plan.rows
        if self.rows_per_call is not None and self.rows_per_call >= 0:
            ratio = (rows + ROWS_SLACK) / (self.rows_per_call + ROWS_SLACK)
            if ratio > ROWS_FACTOR or ratio < 1.0 / ROWS_FACTOR:
                measured = "returned" if plan.actual_rows is not None else "is planned to return"
                return f"{measured} {rows:.0f} rows against {self.rows_per_call:.1f} per call recorded"
        # Far faster with an index in its plan is what an index made since the statistics does: trusted, and
        # the candidates then show no gain. Far faster without one reads less than the workload does.
        too_fast = plan.ms is not None and self.mean_ms is not None and plan.ms * TOO_FAST_FACTOR < self.mean_ms
        if too_fast and not plan.index_names:
            assert plan.ms is not None and self.mean_ms is not None
            return f"ran in {plan.ms:.1f} ms against a recorded mean of {self.mean_ms:.1f} ms"
        return None

    def time_distance(self, ms: float) -> float:
        """How far ``ms`` is from the recorded mean, either way: the log of their ratio (with TIME_SLACK_MS)."""
        return abs(math.log((ms + TIME_SLACK_MS) / ((self.mean_ms or 0.0) + TIME_SLACK_MS)))

    def _far_in_time(self, plan: Plan) -> str | None:
        # The rows an aggregate returns follow its grouping, not its range (and a normalised
        # ``date_trunc($1, ...)`` is sampled by day where the calls grouped by month): only the time judges.
        assert plan.ms is not None and self.mean_ms is not None
        if self.time_distance(plan.ms) <= math.log(TIME_FACTOR):
            return None
        if plan.ms < self.mean_ms and plan.index_names:
            return None  # an index made since the statistics (see above): trusted
        way = "slower" if plan.ms > self.mean_ms else "faster"
        return (
            f"ran in {plan.ms:.1f} ms against a recorded mean of {self.mean_ms:.1f} ms, more than {TIME_FACTOR:g}x "
            f"{way} (its rows per call cannot judge its range: it aggregates, deduplicates or groups)"
        )


#: Planner cost units per row a DML statement writes (heap tuple and WAL), and per index entry it adds.
#: EXPLAIN leaves both out (ModifyTable costs nothing), so a plan-cost comparison of DML sees only the search
#: for rows. Set from the peers' suites (Dexter's UPDATE and DELETE of 10 % of 500 k posts, timed with real
#: builds): a written row costs about ten rows of a sequential scan, an index entry (a btree descent and its
#: WAL) five times that; the DELETE's index measured 3.2x, the UPDATE of the indexed column 0.9x.
WRITE_ROW_COST = 0.1
INDEX_ENTRY_COST = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Writes:
    """What one DML statement writes per row it touches, for the maintenance a new index adds to it."""

    kind: str  # insert, update, delete (merge counts as update)
    table_oid: int
    updated: frozenset[str]  # the columns an UPDATE sets
    indexed: frozenset[str]  # columns (or expression texts) already in an index of the table
    indexes: int  # indexes the table has now

    def hot_lost(self) -> bool:
        """An UPDATE that already changes an indexed column is never HOT: every index gets a new entry."""
        return any(self._touches(text) for text in self.indexed)

    def _touches(self, text: str) -> bool:
        return any(column == text or column in text for column in self.updated)

    def per_row(self, cand: Candidate | None) -> tuple[float, str | None]:
        """Cost per written row, without (``cand`` None) or with the candidate index, and why it grew."""
        existing = 0.0
        if self.kind == "insert" or (self.kind == "update" and self.hot_lost()):
            existing = self.indexes * INDEX_ENTRY_COST
        base = WRITE_ROW_COST + existing
        if cand is None or cand.table.oid != self.table_oid:
            return base, None
        texts = [k.column or k.expression or "" for k in cand.keys] + ([cand.predicate] if cand.predicate else [])
        if self.kind == "insert":
            return base + INDEX_ENTRY_COST, "every inserted row adds an entry to the new index"
        if self.kind != "update":
            return base, None  # a DELETE leaves index entries to VACUUM
        if any(self._touches(t) for t in texts):
            if self.hot_lost():
                return base + INDEX_ENTRY_COST, "every updated row adds an entry to the new index"
            return (
                base + (self.indexes + 1) * INDEX_ENTRY_COST,
                f"the statement updates {', '.join(sorted(self.updated))}, which the index contains: its updates "
                f"are no longer HOT, so every updated row adds entries to all {self.indexes + 1} indexes",
            )
        if self.hot_lost():
            return base + INDEX_ENTRY_COST, "every updated row adds an entry to the new index (not HOT already)"
        return base, None


class SampleTooSlow(PgArchitectError):
    """A sample ran over its budget (a small multiple of the recorded mean) and was cancelled."""


# How fast a plain CREATE INDEX reads its table, for the expected lock time of a rolled-back build: measured
# on the reference machine (2 vCPU, a 354 MB table held INSERTs for 3.7 s, about 96 MB/s), halved for margin.
BUILD_BYTES_PER_S = 48 * 1024 * 1024


def expected_lock_ms(table: TableInfo) -> float:
    """How long a plain CREATE INDEX on ``table`` is expected to block its writers (SHARE lock)."""
    return table.heap_bytes / BUILD_BYTES_PER_S * 1000.0


def _without_locks_fix(tables: Sequence[TableInfo], major: int | None) -> str:
    return (
        f"install hypopg on this server (Debian: apt-get install postgresql-{major or '<major>'}-hypopg, then "
        "CREATE EXTENSION hypopg) or set measurement.staging_dsn; to build on this server anyway, which blocks "
        "writes to "
        + ", ".join(t.qualified for t in tables)
        + " while each index builds, set measurement.allow_blocking_builds: true"
    )


def choose_method(
    cfg: MeasurementConfig,
    *,
    kind: str,
    tables: Sequence[TableInfo],
    hypopg: bool,
    staging: bool,
    server_major: int | None = None,
) -> MeasurementMethod:
    """The method for one statement; raise CannotMeasure with the reason (and the fix) when none is safe.

    ``auto`` never blocks writes unless the user opted in: a staging server first (real timings, production
    untouched), then hypothetical indexes (hypopg: planner costs, no lock), then, with
    ``allow_blocking_builds``, a real build in a rolled-back transaction when its expected lock is short.
    """
    if cfg.mode == "hypothetical":
        if not hypopg:
            raise CannotMeasure("measurement.mode is hypothetical but hypopg is not available on this server")
        return "hypothetical"
    if cfg.mode == "staging":
        if not staging:
            raise CannotMeasure("measurement.mode is staging but measurement.staging_dsn is not set")
        return "staging"
    if cfg.mode == "auto":
        if staging:
            return "staging"
        if hypopg:
            return "hypothetical"
        if not cfg.allow_blocking_builds:
            raise CannotMeasure(
                f"cannot measure safely without hypopg or a staging server: {_without_locks_fix(tables, server_major)}"
            )
    # A rolled-back build here: opted in, or mode rollback_build chosen explicitly.
    largest = max(tables, key=lambda t: t.heap_bytes, default=None)
    if largest is not None:
        expected = expected_lock_ms(largest)
        if expected > cfg.max_blocking_ms:
            raise CannotMeasure(
                f"building an index on {largest.qualified} ({largest.heap_bytes / 1e6:.0f} MB) is expected to block "
                f"its writes for about {expected / 1000:.1f} s, over measurement.max_blocking_ms "
                f"({cfg.max_blocking_ms} ms); use hypopg or a staging server"
            )
        if largest.total_bytes > cfg.max_table_bytes:
            raise CannotMeasure(
                f"table {largest.qualified} is {largest.total_bytes} bytes, over measurement.max_table_bytes; "
                "use hypopg or a staging server"
            )
    return "rollback_build"


class Measurer:
    """Measures candidates for one statement on the audited (or staging) server."""

    def __init__(
        self,
        conn: db.Connection,
        cfg: MeasurementConfig,
        *,
        hypopg_installed: bool,
        hypopg_available: bool,
        staging: db.Connection | None = None,
        min_gain_percent: float = 20.0,
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.hypopg_installed = hypopg_installed
        self.hypopg_available = hypopg_available
        self.staging = staging
        self.min_gain_percent = min_gain_percent
        self._writes: Writes | None = None  # of the statement being measured
        self._alongside: tuple[Candidate, ...] = ()  # indexes in place with each candidate (see ``measure``)
        self._after: list[Plan] | None = None  # the timed plans of the candidate ``_build_one`` measured last
        self._draw: Callable[[float], str | None] | None = None  # of the statement being measured (``measure``)
        # The samples the last ``measure`` kept (those that resembled the workload): the workload check
        # (auditor.selection) re-plans the statement with these, so that every comparison uses the same values.
        self.kept: tuple[str, ...] = ()

    @property
    def hypopg(self) -> bool:
        return self.hypopg_installed or self.hypopg_available

    def measure(
        self,
        kind: str,
        samples: Sequence[str],
        candidates: Sequence[Candidate],
        tables: Sequence[TableInfo],
        recorded: Recorded | None = None,
        keep: int | None = None,
        writes: Writes | None = None,
        alongside: Sequence[Candidate] = (),
        draw: Callable[[float], str | None] | None = None,
    ) -> tuple[MeasurementMethod, list[Outcome]]:
        """Measure ``candidates`` with the first ``keep`` of ``samples`` (best first) that resemble what was
        ``recorded``; NoRepresentativeSample when none does, CannotMeasure when no method is safe.

        With ``alongside``, each candidate is measured with those indexes in place too (the workload's other
        choices, auditor.selection), against the statement without any of them. With ``draw`` (the statement
        bound with its range keeping a given share of its rows) and ``recorded.fits_time``, samples timed far from
        the recorded mean are replaced by draws fitted to it (``_fit_time``)."""
        self.kept = ()
        self._alongside = tuple(alongside)
        self._draw = draw
        if not samples:
            raise CannotMeasure("no executable form of the statement (parameters could not be sampled)")
        method = choose_method(
            self.cfg,
            kind=kind,
            tables=tables,
            hypopg=self.hypopg,
            staging=self.staging is not None,
            server_major=db.server_facts(self.conn).version_num // 10000,
        )
        executes = kind == "select" and method != "hypothetical"
        for sql in samples:
            if kind == "select":
                safety.check_readonly_select(sql, self.conn)
            else:
                safety.check_explain_only_dml(sql, self.conn)
        recorded = recorded or Recorded()
        self._writes = writes if kind != "select" else None
        if method == "hypothetical":
            return method, self._hypothetical(samples, candidates, recorded, keep, timed=kind == "select")
        conn = self.staging if method == "staging" and self.staging is not None else self.conn
        return method, self._build(conn, method, samples, candidates, recorded, keep, analyze=executes)

    def _baseline(
        self, conn: db.Connection, samples: Sequence[str], recorded: Recorded, keep: int | None, *, analyze: bool
    ) -> tuple[list[str], list[Plan]]:
        """The first ``keep`` samples that resemble the workload, with their plans before any new index.

        A sample is cancelled once it runs over its budget, and dropped when its rows or its time are far
        from what pg_stat_statements recorded: the next one is tried instead. Where only the time can judge
        (``Recorded.fits_time``) and the first sample ran far from the recorded mean, draws fitted to it replace
        the samples (``_fit_time``).
        """
        timed: dict[str, tuple[float | None, Plan | SampleTooSlow]] = {}
        if analyze and recorded.fits_time and self._draw is not None and recorded.mean_ms:
            first = self._timed_once(conn, samples[0], recorded.budget_ms(), timed)
            far = str(first) if isinstance(first, SampleTooSlow) else recorded.distrust(first)
            if far is not None:
                log.info("sample not representative: %s", far)
                fitted = self._fit_time(conn, recorded, keep, timed, far)
                if fitted is not None:
                    self.kept = tuple(fitted[0])
                    return fitted
                # The range hardly moves the time: it is not what differs from the recorded calls (cold reads,
                # lock waits, other values), the time cannot judge it, and the general rules judge the samples.
                recorded = dataclasses.replace(recorded, fits_time=False)
        kept: list[str] = []
        plans: list[Plan] = []
        why: list[str] = []
        empty: list[tuple[str, Plan]] = []  # samples that matched no row while the workload's calls return rows
        for sql in samples:
            if keep is not None and len(kept) >= keep:
                break
            found = (
                self._timed_once(conn, sql, recorded.budget_ms(), timed)
                if analyze
                else explain(conn, sql, analyze=False)
            )
            if isinstance(found, SampleTooSlow):
                why.append(str(found))
                continue
            plan = found
            reason = recorded.distrust(plan)
            if reason is not None:
                log.info("sample not representative: %s", reason)
                why.append(reason)
                continue
            if recorded.matched_nothing(plan):
                empty.append((sql, plan))
                continue
            kept.append(sql)
            plans.append(plan)
        if not kept and empty:
            # Nothing better was drawn: an empty result is still within the recorded rows' slack.
            kept = [sql for sql, _ in empty[:keep]]
            plans = [plan for _, plan in empty[:keep]]
        self.kept = tuple(kept)
        if not kept:
            raise NoRepresentativeSample(
                f"no representative sample: each of the {len(samples)} drawn parameter set(s) "
                + "; ".join(dict.fromkeys(why))
            )
        return kept, plans

    def _timed_once(
        self,
        conn: db.Connection,
        sql: str,
        budget_ms: float | None,
        timed: dict[str, tuple[float | None, Plan | SampleTooSlow]],
    ) -> Plan | SampleTooSlow:
        """``sql`` timed (``_timed``), or cancelled over ``budget_ms``, once per baseline: a sample drawn again
        (the time fit's draws can be a sample already timed) is not run again."""
        if sql in timed:
            budget, result = timed[sql]
            done = isinstance(result, Plan) or budget is None or (budget_ms is not None and budget >= budget_ms)
            if done:
                return result
        try:
            result = self._timed(conn, sql, True, budget_ms)
        except SampleTooSlow as exc:
            result = exc
        timed[sql] = (budget_ms, result)
        return result

    def _fit_time(
        self,
        conn: db.Connection,
        recorded: Recorded,
        keep: int | None,
        timed: dict[str, tuple[float | None, Plan | SampleTooSlow]],
        far: str,
    ) -> tuple[list[str], list[Plan]] | None:
        """Draws of the statement whose range keeps the share of the table that makes it run as long as the
        recorded mean, when the first sample (``far`` says how) ran far from it and its rows cannot tell.

        A bisection over FIT_SELECTIVITY (time grows with the rows a range keeps): a draw faster than the mean
        moves to wider ranges, a slower or cancelled one to narrower ones; at most MAX_FIT_DRAWS draws are run,
        each cancelled at TIME_FACTOR times the mean. The draws within TIME_FACTOR of it, the nearest first, at
        most ``keep`` (in the order of their ranges). When none is, and their times lie within FIT_SPREAD of each
        other, the range hardly moves the time and cannot be what makes the samples differ from the recorded calls
        (cold reads, lock waits, other values): None, and the general rules judge the samples. Else
        NoRepresentativeSample: the range moves the time, and no share of the table ran as the workload's calls.
        """
        assert self._draw is not None and recorded.mean_ms is not None
        budget = max(TIME_FACTOR * (recorded.mean_ms + TIME_SLACK_MS), SAMPLE_TIMEOUT_FLOOR_MS)
        tried: dict[str, tuple[int, Plan | None]] = {}
        low, high = -1, len(FIT_SELECTIVITY)
        runs = 0
        while high - low > 1:
            middle = (low + high) // 2
            sql = self._draw(FIT_SELECTIVITY[middle])
            if sql is None:
                return None
            if sql not in timed:
                if runs >= MAX_FIT_DRAWS:
                    break
                runs += 1
            safety.check_readonly_select(sql, self.conn)
            result = self._timed_once(conn, sql, budget, timed)
            plan = result if isinstance(result, Plan) else None
            tried.setdefault(sql, (middle, plan))
            if plan is None or (plan.ms or 0.0) > recorded.mean_ms:
                high = middle
            else:
                low = middle
        fitting = sorted(
            (
                (recorded.time_distance(plan.ms or 0.0), position, sql, plan)
                for sql, (position, plan) in tried.items()
                if plan is not None and recorded.time_distance(plan.ms or 0.0) <= math.log(TIME_FACTOR)
            ),
            key=lambda f: (f[0], f[1]),
        )
        tried_text = ", ".join(
            f"{FIT_SELECTIVITY[position]:.1%} of the rows in "
            + (f"{plan.ms or 0.0:.1f} ms" if plan is not None else f"over {budget:.0f} ms (cancelled)")
            for position, plan in sorted(tried.values(), key=lambda t: t[0])
        )
        log.info("time fit against a recorded mean of %.1f ms: its range keeping %s", recorded.mean_ms, tried_text)
        if fitting:
            chosen = sorted(fitting[: keep if keep is not None else len(fitting)], key=lambda f: f[1])
            return [sql for _, _, sql, _ in chosen], [plan for _, _, _, plan in chosen]
        def spread_small(times: list[float]) -> bool:
            return not times or (max(times) + TIME_SLACK_MS) < FIT_SPREAD * (min(times) + TIME_SLACK_MS)

        times = {sql: (plan.ms or 0.0) if plan is not None else budget for sql, (_, plan) in tried.items()}
        finished = [sql for sql, (_, plan) in tried.items() if plan is not None]
        if not spread_small(list(times.values())) and finished:
            # One draw slowed by the machine (a scheduling stall) must not make a flat range look steep: the slowest
            # that finished is timed once more and its faster time counts, as a benchmark keeps its fastest run.
            slowest = max(finished, key=lambda sql: times[sql])
            try:
                again = self._timed(conn, slowest, True, budget)
                times[slowest] = min(times[slowest], again.ms or 0.0)
            except SampleTooSlow:
                pass
        if spread_small(list(times.values())):
            return None
        raise NoRepresentativeSample(
            f"no representative sample: the first {far}; with its range keeping {tried_text}, no draw ran within "
            f"{TIME_FACTOR:g}x of the recorded mean of {recorded.mean_ms:.1f} ms"
        )

    # -- the workload's whole set ------------------------------------------------------------------------
    def indexes_used_with(
        self,
        candidates: Sequence[Candidate],
        statements: Sequence[tuple[str, Sequence[str]]],
        tables: Sequence[TableInfo],
    ) -> list[frozenset[str]]:
        """With every one of ``candidates`` in place at once, which of them (by ``name()``) each statement's plans
        use; ``statements`` are (kind, samples) pairs. Planned only (EXPLAIN), by the method a statement over
        ``tables`` would be measured with: hypothetical indexes, or real ones built in a transaction that is
        rolled back (here or on staging). CannotMeasure when no method is safe."""
        method = choose_method(
            self.cfg,
            kind="select",
            tables=tables,
            hypopg=self.hypopg,
            staging=self.staging is not None,
            server_major=db.server_facts(self.conn).version_num // 10000,
        )
        for kind, samples in statements:
            for sql in samples:
                if kind == "select":
                    safety.check_readonly_select(sql, self.conn)
                else:
                    safety.check_explain_only_dml(sql, self.conn)
        conn = self.staging if method == "staging" and self.staging is not None else self.conn
        used: list[frozenset[str]] = []
        with self._transaction(conn):
            names: dict[str, str] = {}  # the index's name in plans -> the candidate's name
            try:
                if method == "hypothetical" and not self.hypopg_installed:
                    db.execute(conn, mark("CREATE EXTENSION IF NOT EXISTS hypopg"))
                for cand in candidates:
                    ddl = cand.ddl(conn, concurrently=False)
                    safety.check_index_target(conn, safety.check_index_ddl(ddl))
                    if method == "hypothetical":
                        name = db.fetch_value(conn, mark("SELECT indexname FROM hypopg_create_index(%s)"), (ddl,))
                        names[str(name)] = cand.name()
                        continue
                    if self._relation_named(conn, cand) is not None:
                        continue  # measured as "nothing was built" already; nothing to plan with
                    db.execute(conn, mark(ddl))
                    if any(k.column is None for k in cand.keys):
                        db.execute(
                            conn, db.SQL(mark("ANALYZE {}")).format(db.Identifier(cand.table.schema, cand.table.name))
                        )
                    names[cand.name()] = cand.name()
                for _, samples in statements:
                    seen: set[str] = set()
                    for sql in samples:
                        seen |= explain(conn, sql, analyze=False).index_names
                    used.append(frozenset(names[n] for n in seen if n in names))
            finally:
                if method == "hypothetical":
                    db.fetch_value(conn, mark("SELECT hypopg_reset()"))
        return used

    # -- hypothetical -----------------------------------------------------------------------------------
    def _hypothetical(
        self,
        samples: Sequence[str],
        candidates: Sequence[Candidate],
        recorded: Recorded,
        keep: int | None,
        *,
        timed: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._transaction(self.conn):
            if not self.hypopg_installed:
                db.execute(self.conn, mark("CREATE EXTENSION IF NOT EXISTS hypopg"))
            try:
                with db.transaction(self.conn):  # a savepoint: if the statement cannot be planned, say why
                    # What can be measured for real without a lock: the statement's time now (SELECTs,
                    # read-only); the hypothetical index itself only has planner costs.
                    samples, before = self._baseline(self.conn, samples, recorded, keep, analyze=timed)
                for cand in candidates:
                    try:
                        with rolled_back(self.conn):  # one candidate's error must not abort the others
                            outcomes.append(self._hypothetical_one(cand, samples, before))
                    except (UnsafeSQLError, DatabaseError) as exc:
                        outcomes.append(Outcome(cand, None, error=str(exc)))
            finally:
                db.fetch_value(self.conn, mark("SELECT hypopg_reset()"))
        return outcomes

    def _hypothetical_one(self, cand: Candidate, samples: Sequence[str], before: list[Plan]) -> Outcome:
        oids = []
        try:
            for index in (*self._alongside, cand):
                ddl = index.ddl(self.conn, concurrently=False)
                safety.check_index_target(self.conn, safety.check_index_ddl(ddl))
                oids.append(db.fetch_value(self.conn, mark("SELECT indexrelid FROM hypopg_create_index(%s)"), (ddl,)))
            after = [explain(self.conn, s, analyze=False) for s in samples]
        finally:
            for oid in oids:
                db.fetch_value(self.conn, mark("SELECT hypopg_drop_index(%s)"), (oid,))
        return self._outcome(cand, "hypothetical", before, after)

    # -- real builds, rolled back -------------------------------------------------------------------
    def _build(
        self,
        conn: db.Connection,
        method: MeasurementMethod,
        samples: Sequence[str],
        candidates: Sequence[Candidate],
        recorded: Recorded,
        keep: int | None,
        *,
        analyze: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._transaction(conn):
            samples, before = self._baseline(conn, samples, recorded, keep, analyze=analyze)
            for cand in candidates[:MAX_BUILDS] if analyze else candidates:
                self._after = None
                try:
                    with rolled_back(conn):  # a savepoint: the index and its locks go at its end
                        outcome = self._build_one(conn, method, cand, samples, before, analyze, recorded)
                    after = self._after
                    if after is not None:
                        # A shared machine's load drifts and spikes: each timed candidate is compared with the
                        # statement timed again right after it, without it, each sample at the faster of that
                        # and the first baseline (noise only ever adds time).
                        again = [self._timed(conn, s, analyze, recorded.budget_ms()) for s in samples]
                        fastest = [min(a, b, key=lambda p: p.ms or 0.0) for a, b in zip(before, again, strict=True)]
                        outcome = self._outcome(cand, method, fastest, after)
                    outcomes.append(outcome)
                except SampleTooSlow as exc:
                    outcomes.append(Outcome(cand, None, error=f"without this index a sample {exc}"))
                except (UnsafeSQLError, DatabaseError) as exc:
                    outcomes.append(Outcome(cand, None, error=str(exc)))
        return outcomes

    def _build_one(
        self,
        conn: db.Connection,
        method: MeasurementMethod,
        cand: Candidate,
        samples: Sequence[str],
        before: list[Plan],
        analyze: bool,
        recorded: Recorded,
    ) -> Outcome:
        for index in self._alongside:
            # The workload's other choices, in place first (errors as for the candidate itself).
            built = self._build_index(conn, index)
            if built is not None:
                return Outcome(cand, None, error=f"{index.describe()} alongside: {built.error}")
        built = self._build_index(conn, cand)
        if built is not None:
            return built
        if analyze:
            # Timing costs seconds on a large table: only when some sample's plan uses the new index at all.
            planned = [explain(conn, s, analyze=False) for s in samples]
            # New index names in the plan: the candidate's, or on a partitioned table its partitions' indexes.
            if not any(p.index_names - b.index_names for b, p in zip(before, planned, strict=True)):
                return self._outcome(cand, method, [_untimed(p) for p in before], planned)
        try:
            after = [self._timed(conn, s, analyze, recorded.budget_ms()) for s in samples]
        except SampleTooSlow as exc:
            return Outcome(cand, None, error=f"with this index a sample {exc}", too_slow=True)
        if analyze:
            self._after = after
        return self._outcome(cand, method, before, after)

    def _build_index(self, conn: db.Connection, cand: Candidate) -> Outcome | None:
        """Build ``cand`` for real (inside the caller's savepoint); an Outcome with the error when it is not
        measurable (its name is taken, or the table's HOT chains hide it from this transaction), else None."""
        ddl = cand.ddl(conn, concurrently=False)
        safety.check_index_target(conn, safety.check_index_ddl(ddl))
        existing = self._relation_named(conn, cand)
        if existing is not None:
            # CREATE INDEX IF NOT EXISTS would skip it and the plan would not change: say so, measure nothing.
            return Outcome(
                cand, None, error=f"a relation named {cand.name()} already exists ({existing}): nothing was built"
            )
        started = time.monotonic()
        db.execute(conn, mark(ddl))
        log.debug("built %s in %.2fs", cand.describe(), time.monotonic() - started)
        # ``conn`` may be the staging server: the table is found there by name, not by the audited oid.
        table_oid = db.fetch_value(
            conn, mark("SELECT pg_catalog.to_regclass(%s)::oid::bigint"), (cand.qualified_table(conn),)
        )
        found_indexes = catalog.indexes(conn, [table_oid]) if table_oid is not None else []
        built = next((i for i in found_indexes if i.name == cand.name()), None)
        if built is None or not advisor.matches_definition(cand, built, table_oid=table_oid):
            # IF NOT EXISTS met an index of that name with another definition: measuring now would time it.
            found = built.definition if built is not None else "no index"
            return Outcome(cand, None, error=f"index name {cand.name()} is taken ({found}); not measured")
        if any(k.column is None for k in cand.keys):
            # An expression index has no statistics until ANALYZE; without them the plan guesses.
            db.execute(conn, db.SQL(mark("ANALYZE {}")).format(db.Identifier(cand.table.schema, cand.table.name)))
        if self._needs_xmin_wait(conn, cand):
            return Outcome(
                cand,
                None,
                error="the table has HOT-updated rows, so an index built in this "
                "transaction is invisible to its plans; measure with hypopg or a staging server",
            )
        return None

    def _relation_named(self, conn: db.Connection, cand: Candidate) -> str | None:
        """The definition of the relation (an index's ``pg_get_indexdef``, else its kind) that has the
        candidate's name in the table's schema, or None when there is none."""
        row = db.fetch_value(
            conn,
            mark(
                "SELECT CASE WHEN c.relkind IN ('i', 'I') THEN pg_catalog.pg_get_indexdef(c.oid) "
                "ELSE 'a relation of kind ' || c.relkind::text END FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
            ),
            (cand.table.schema, cand.name()),
        )
        return str(row) if row is not None else None

    def _needs_xmin_wait(self, conn: db.Connection, cand: Candidate) -> bool:
        return bool(
            db.fetch_value(
                conn,
                mark(
                    "SELECT i.indcheckxmin FROM pg_catalog.pg_index i JOIN "
                    "pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                ),
                (cand.table.schema, cand.name()),
            )
        )

    def _timed(self, conn: db.Connection, sql: str, analyze: bool, budget_ms: float | None = None) -> Plan:
        if not analyze:
            return explain(conn, sql, analyze=False)
        # Executed statements run read-only too (explain() sees to it): a second guard behind the allow-list.
        plans = [self._run(conn, sql, budget_ms) for _ in range(REPEATS)]
        return min(plans, key=lambda p: p.ms if p.ms is not None else float("inf"))

    def _run(self, conn: db.Connection, sql: str, budget_ms: float | None) -> Plan:
        """One EXPLAIN ANALYZE, cancelled after ``budget_ms`` (SampleTooSlow) when given."""
        if budget_ms is None:
            return explain(conn, sql, analyze=True)
        budget = int(min(budget_ms, self.cfg.statement_timeout_ms))
        try:
            with rolled_back(conn):  # the timeout is local to this savepoint
                db.execute(conn, mark("SELECT pg_catalog.set_config('statement_timeout', %s, true)"), (str(budget),))
                return explain(conn, sql, analyze=True)
        except QueryTimeout as exc:
            if "statement timeout" not in str(exc):
                raise  # a lock timeout: the table is busy, which says nothing about the sample
            raise SampleTooSlow(
                f"ran over {budget} ms ({SAMPLE_TIMEOUT_FACTOR:g}x the recorded mean, at least "
                f"{SAMPLE_TIMEOUT_FLOOR_MS:.0f} ms) and was cancelled"
            ) from exc

    @contextmanager
    def _transaction(self, conn: db.Connection) -> Iterator[None]:
        """A transaction that always rolls back, under the configured lock and statement timeouts."""
        with rolled_back(conn, self.cfg.lock_timeout_ms, self.cfg.statement_timeout_ms):
            yield

    def _outcome(self, cand: Candidate, method: MeasurementMethod, before: list[Plan], after: list[Plan]) -> Outcome:
        before_cost = sum(p.cost for p in before)
        after_cost = sum(p.cost for p in after)
        write_note = None
        if self._writes is not None:
            # DML is compared by cost: add what it writes, the same before and after, and what the new index
            # must maintain for every row it touches, so an index that finds rows faster but costs more to
            # keep up is judged by the whole statement.
            without, _ = self._writes.per_row(None)
            with_index, write_note = self._writes.per_row(cand)
            with_index += sum(self._writes.per_row(index)[0] - without for index in self._alongside)
            before_cost += sum(p.rows for p in before) * without
            after_cost += sum(p.rows for p in after) * with_index
        # A sample whose plan did not change runs what it ran before: any difference in its time is noise (on a
        # loaded machine, one sample timed 3x apart with the same plan), so it counts as its time before.
        after = [
            dataclasses.replace(a, ms=b.ms) if a.ms is not None and _same_plan(b, a) else a
            for b, a in zip(before, after, strict=True)
        ]
        before_ms = sum(p.ms or 0.0 for p in before) if all(p.ms is not None for p in before) else None
        after_ms = sum(p.ms or 0.0 for p in after) if all(p.ms is not None for p in after) else None
        if before_ms is not None and after_ms is not None and before_ms > 0:
            gain = (before_ms - after_ms) / before_ms * 100.0
            per_sample = [(b.ms or 0) > (a.ms or 0) for b, a in zip(before, after, strict=True)]
        else:
            gain = (before_cost - after_cost) / before_cost * 100.0 if before_cost > 0 else 0.0
            per_sample = [b.cost > a.cost for b, a in zip(before, after, strict=True)]
        used = any(a.index_names - b.index_names for b, a in zip(before, after, strict=True))
        changed = any(a.shape() != b.shape() for b, a in zip(before, after, strict=True)) or used
        measurement = Measurement(
            method=method,
            before_cost=before_cost,
            after_cost=after_cost,
            before_ms=before_ms,
            after_ms=after_ms,
            gain_percent=gain,
            worth_applying=False,
            plan_changed=changed,
            plan_before=before[0].text,
            plan_after=after[0].text,
            samples=len(before),
        )
        measurement = dataclasses.replace(
            measurement, worth_applying=used and clears_threshold(measurement, self.min_gain_percent)
        )
        return Outcome(
            cand,
            measurement,
            used_index=used,
            consistent=all(per_sample),
            expression_estimate_only=method == "hypothetical" and any(k.column is None for k in cand.keys),
            returned_rows=(
                sum(p.scan_rows[cand.table.name] for p in before) / len(before)
                if before and all(cand.table.name in p.scan_rows for p in before)
                else None
            ),
            seq_scanned=bool(before) and all(cand.table.name in p.scan_rows for p in before),
            write_note=write_note,
        )


def _same_plan(before: Plan, after: Plan) -> bool:
    """The same plan shape, and no index the plan before did not use."""
    return before.shape() == after.shape() and not (after.index_names - before.index_names)


def _untimed(plan: Plan) -> Plan:
    return dataclasses.replace(plan, ms=None)


class _Rollback(Exception):
    """Raised inside a transaction block to leave it by rolling back."""


@contextmanager
def rolled_back(
    conn: db.Connection,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
    *,
    read_only: bool = False,
) -> Iterator[None]:
    """A transaction (a savepoint when nested) that always ends in ROLLBACK, whatever the block did; with the
    timeouts given (local to it), and READ ONLY when asked."""
    try:
        with db.transaction(conn):
            if lock_timeout_ms is not None and statement_timeout_ms is not None:
                db.execute(
                    conn,
                    mark(
                        "SELECT pg_catalog.set_config('lock_timeout', %s, true),"
                        " pg_catalog.set_config('statement_timeout', %s, true)"
                    ),
                    (str(lock_timeout_ms), str(statement_timeout_ms)),
                )
            if read_only:
                db.execute(conn, mark("SET LOCAL transaction_read_only = on"))
            yield
            raise _Rollback
    except _Rollback:
        pass
