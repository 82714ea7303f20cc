"""The exporter's collector groups: each reads what it needs and builds metric families.

Groups are independent: one failing (a privilege, a lock, a missing extension) marks
``pgarch_scrape_collector_success{collector}`` 0 and leaves the others' series intact. Per-target state
(previous counters, histogram accumulators) is owned by ``exporter.target.Target`` and passed in.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from pg_architect.core import db, pgss
from pg_architect.core.errors import DatabaseError
from pg_architect.core.pgss import PgssInfoRow, StatementRow, StatementWindow
from pg_architect.exporter import compat
from pg_architect.exporter.latency import (
    BUCKETS,
    SOURCE_PGSS,
    SOURCE_PGSS_ACTIVITY_HIDDEN,
    Estimate,
    Interval,
    LoggedTail,
    Mixture,
    estimate,
    row_quantile,
)
from pg_architect.exporter.models import (
    ActivityRow,
    BgwriterRow,
    DatabaseRow,
    DatabaseSizeRow,
    KbPresentRow,
    KpiRow,
    LlmUsageRow,
    LockRow,
    ReplicationRow,
    ServerRow,
    SettingRow,
)
from pg_architect.exporter.queries import QUERIES
from pg_architect.exporter.statements import estimates, statement_tail, tails

if TYPE_CHECKING:  # the duration log's and the sampler's modules load only when they are on
    from pg_architect.exporter.activity import ActivityWindow
    from pg_architect.exporter.durationlog import LogWindow

log = logging.getLogger(__name__)

ACTIONS = ("pr_merge", "pr_review", "log", "flag")
INTEGRATIONS = ("github", "slack", "grafana", "pushgateway", "llm")


# -- server -------------------------------------------------------------------------------------


def read_activity(conn: db.Connection, server: ServerRow) -> list[ActivityRow]:
    return db.fetch(conn, db.query(conn, QUERIES, "activity"), None, ActivityRow)


def read_server(conn: db.Connection) -> ServerRow:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "server"), None, ServerRow)
    assert row is not None  # a single-row SELECT without FROM always returns one row
    return row


def server_metrics(server: ServerRow, activity: Sequence[ActivityRow]) -> list[Metric]:
    max_conn = GaugeMetricFamily("pg_settings_max_connections", "Maximum number of concurrent connections.")
    max_conn.add_metric([], server.max_connections)
    reserved = GaugeMetricFamily(
        "pg_settings_superuser_reserved_connections", "Connection slots reserved for superusers."
    )
    reserved.add_metric([], server.superuser_reserved_connections)
    count = GaugeMetricFamily(
        "pg_stat_activity_count", "Client backends by database and state.", labels=["datname", "state"]
    )
    for row in activity:
        count.add_metric([row.datname, row.state], row.count)
    ratio = GaugeMetricFamily(
        "pgarch_connections_used_ratio",
        "Client backends / (max_connections - superuser_reserved_connections - reserved_connections).",
    )
    usable = server.usable_connections
    ratio.add_metric([], server.client_backends / usable if usable > 0 else 1.0)
    return [max_conn, reserved, count, ratio, *compat.server_families(server)]


def read_locks(conn: db.Connection) -> list[LockRow]:
    return db.fetch(conn, db.query(conn, QUERIES, "locks"), None, LockRow)


def read_settings(conn: db.Connection) -> list[SettingRow]:
    # max_connections and superuser_reserved_connections come with the server row (server_metrics).
    names = [n for n in compat.SETTINGS if n not in ("max_connections", "superuser_reserved_connections")]
    return db.fetch(conn, db.query(conn, QUERIES, "settings"), {"names": names}, SettingRow)


def read_bgwriter(conn: db.Connection) -> BgwriterRow:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "bgwriter"), None, BgwriterRow)
    assert row is not None  # one-row views
    return row


def read_replication(conn: db.Connection) -> ReplicationRow:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "replication"), None, ReplicationRow)
    assert row is not None  # pg_stat_archiver has exactly one row
    return row


# -- databases: sizes and cache -----------------------------------------------------------------


def read_databases(conn: db.Connection, server: ServerRow, sizes: dict[int, int]) -> list[DatabaseRow]:
    """Every database's counters, with its size from ``sizes`` (see read_database_sizes)."""
    rows = db.fetch(conn, db.query(conn, QUERIES, "databases"), None, DatabaseRow)
    return [dataclasses.replace(r, size_bytes=sizes.get(r.dbid, 0)) for r in rows]


def read_database_sizes(conn: db.Connection, server: ServerRow) -> dict[int, int]:
    rows = db.fetch(conn, db.query(conn, QUERIES, "database_sizes"), None, DatabaseSizeRow)
    return {r.dbid: r.size_bytes for r in rows}


def database_metrics(rows: Sequence[DatabaseRow], previous: dict[str, tuple[int, int]] | None) -> list[Metric]:
    size = GaugeMetricFamily(
        "pg_database_size_bytes",
        "Disk space used by the database (read at most every exporter.database_size_interval_s).",
        labels=["datname"],
    )
    ratio = GaugeMetricFamily(
        "pgarch_cache_hit_ratio",
        "blks_hit / (blks_hit + blks_read) between the last two scrapes; absent when no block was touched.",
        labels=["datname"],
    )
    for row in rows:
        size.add_metric([row.datname], row.size_bytes)
        if previous is not None and row.datname in previous:
            prev_hit, prev_read = previous[row.datname]
            d_hit, d_read = row.blks_hit - prev_hit, row.blks_read - prev_read
            # Counters reset (pg_stat_reset) or no block touched: no ratio rather than a made-up one.
            if d_hit >= 0 and d_read >= 0 and d_hit + d_read > 0:
                ratio.add_metric([row.datname], d_hit / (d_hit + d_read))
    return [size, ratio, *compat.database_families(rows)]


# -- statements: the latency histogram and p95 ---------------------------------------------------


def read_statements(conn: db.Connection, server: ServerRow) -> tuple[Iterator[StatementRow], PgssInfoRow | None]:
    if not server.pgss_schema or not server.pgss_version:
        if server.pgss_loaded:
            raise DatabaseError(
                "pg_stat_statements is loaded but not created in this database: CREATE EXTENSION pg_stat_statements"
            )
        raise DatabaseError("pg_stat_statements is not in shared_preload_libraries")
    return pgss.read_lazily(conn)


@dataclasses.dataclass
class HistogramState:
    """Cumulative histogram of one database, accumulated window by window (counters never decrease)."""

    buckets: list[float] = dataclasses.field(default_factory=lambda: [0.0] * len(BUCKETS))
    count: float = 0.0
    sum_s: float = 0.0

    def add(self, mixture: Estimate) -> None:
        for i, value in enumerate(mixture.bucket_counts(BUCKETS)):
            self.buckets[i] += value
        self.count += mixture.calls
        self.sum_s += mixture.total_s


@dataclasses.dataclass(frozen=True, slots=True)
class StatementTotals:
    """One statement (dbid, queryid) summed over users and nesting levels, cumulative."""

    calls: int
    total_s: float


def statement_totals(
    rows: Iterable[StatementRow], keys: set[tuple[int, int]] | None = None
) -> dict[tuple[int, int], StatementTotals]:
    """Cumulative calls and time per (dbid, queryid), for ``keys`` only when given."""
    calls: dict[tuple[int, int], int] = {}
    seconds: dict[tuple[int, int], float] = {}
    for row in rows:
        key = (row.dbid, row.queryid)
        if keys is not None and key not in keys:
            continue
        calls[key] = calls.get(key, 0) + row.calls
        seconds[key] = seconds.get(key, 0.0) + row.total_ms / 1000.0
    return {key: StatementTotals(calls[key], seconds[key]) for key in calls}


def top_statements(window: StatementWindow | None, rows: Iterable[StatementRow], limit: int) -> list[tuple[int, int]]:
    """The ``limit`` statements with the most execution time in the window (cumulative before one exists)."""
    if limit <= 0:
        return []
    if window is not None and window.intervals:
        spent = {key: sum(iv.calls * iv.mean_s for iv in ivs) for key, ivs in window.by_statement().items()}
    else:
        spent = {key: t.total_s for key, t in statement_totals(rows).items()}
    return sorted(spent, key=lambda k: (-spent[k], k))[:limit]


def statement_metrics(
    window: StatementWindow | None,
    rows: Iterable[StatementRow],  # iterated up to twice
    datnames: dict[int, str],
    histograms: dict[str, HistogramState],
    top_n: int,
    log: LogWindow | None = None,
    activity: ActivityWindow | None = None,
) -> list[Metric]:
    """Histogram and p95 per database, plus bounded per-queryid series for the top statements.

    ``log`` is the server's duration log for the same window, when the exporter reads it, and ``activity``
    what sampling pg_stat_activity saw in it, when the exporter samples (docs/p95.md).
    """
    p95 = GaugeMetricFamily(
        "pgarch_query_p95_seconds",
        "p95 statement latency between the last two scrapes (log-normal mixture of pg_stat_statements "
        "deltas); absent when no statement finished.",
        labels=["datname"],
    )
    suspect = GaugeMetricFamily(
        "pgarch_query_p95_suspect",
        "1 when a statement's own min or max in the window contradicts its fitted shape (a fast and a slow mode "
        "in one statement) and the p95 rests on that model (not on the duration log or complete sampling): "
        "it may be off either way; see docs/p95.md.",
        labels=["datname"],
    )
    source = GaugeMetricFamily(
        "pgarch_query_p95_source",
        "1 for the evidence pgarch_query_p95_seconds rests on: pg_stat_statements (the model alone), "
        "duration_log (a logged call, exact), pg_stat_statements+duration_log (the model below the log's "
        "threshold, holding the calls the log left there), activity_sampling (a call seen in pg_stat_activity "
        "samples), pg_stat_statements+activity_sampling (the model below the sampler's threshold), or "
        "pg_stat_statements:activity_hidden (the model alone: the sampler may not see other roles' sessions).",
        labels=["datname", "source"],
    )
    own = activity.own if activity is not None else None
    # The calls the duration log and the sampler know one by one, per database: the p95s rest on them.
    known = tails({key[1] for key in window.intervals}, datnames, log, activity) if window is not None else {}
    if window is not None:
        for dbid, mixture in estimates(window, known, own).items():
            datname = datnames.get(dbid)
            if datname is None or mixture.calls <= 0:
                continue
            histograms.setdefault(datname, HistogramState()).add(mixture)
            value = mixture.quantile(0.95)
            if not math.isnan(value):
                p95.add_metric([datname], value)
                suspect.add_metric([datname], 1.0 if mixture.suspect_bimodal else 0.0)
                label = mixture.source(0.95)
                if label == SOURCE_PGSS and activity is not None and dbid in activity.hidden:
                    label = SOURCE_PGSS_ACTIVITY_HIDDEN
                source.add_metric([datname, label], 1.0)
    for datname in datnames.values():
        # Zero-valued from the first scrape on, so rate() and absent() work before the first window closes.
        histograms.setdefault(datname, HistogramState())
    for gone in set(histograms) - set(datnames.values()):
        del histograms[gone]  # a dropped database: its series go with it
    hist = HistogramMetricFamily(
        "pgarch_query_duration_seconds",
        "Statement latency from pg_stat_statements deltas between scrapes (top-level statements).",
        labels=["datname"],
    )
    for datname in sorted(histograms):
        state = histograms[datname]
        buckets = [(_le(bound), value) for bound, value in zip(BUCKETS, state.buckets, strict=True)]
        buckets.append(("+Inf", state.count))
        hist.add_metric([datname], buckets, state.sum_s)
    calls = CounterMetricFamily(
        "pgarch_statement_calls",
        "Calls of a top statement (cumulative, pg_stat_statements).",
        labels=["datname", "queryid"],
    )
    seconds = CounterMetricFamily(
        "pgarch_statement_exec_seconds",
        "Execution time of a top statement (cumulative, pg_stat_statements).",
        labels=["datname", "queryid"],
    )
    stmt_p95 = GaugeMetricFamily(
        "pgarch_statement_p95_seconds",
        "p95 latency of a top statement between the last two scrapes.",
        labels=["datname", "queryid"],
    )
    sampler = (own[1], own[2]) if own is not None else None
    top = [key for key in top_statements(window, rows, top_n + 1) if key != sampler][:top_n]
    totals = statement_totals(rows, set(top))
    per_statement = window.by_statement() if window is not None else {}
    for key in top:
        datname = datnames.get(key[0])
        if datname is None:
            continue
        labels = [datname, str(key[1])]
        calls.add_metric(labels, totals[key].calls)
        seconds.add_metric(labels, totals[key].total_s)
        intervals = per_statement.get(key)
        if intervals:
            value = _statement_p95(intervals, known.get(key[0]), key[1])
            if not math.isnan(value):
                stmt_p95.add_metric(labels, value)
    return [p95, suspect, source, hist, calls, seconds, stmt_p95]


def _statement_p95(intervals: list[Interval], tail: LoggedTail | None, query_id: int) -> float:
    """One statement's p95: backed by its own calls in the database's tail where they can be told apart."""
    own = statement_tail(tail, query_id) if tail is not None else None
    if own is not None:
        return estimate({query_id: intervals}, own).quantile(0.95)
    return row_quantile(intervals[0], 0.95) if len(intervals) == 1 else Mixture(intervals).quantile(0.95)


def _le(bound: float) -> str:
    return f"{bound:.6g}"


# -- disk -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DiskUsage:
    used_bytes: int
    size_bytes: int
    source: str  # "statvfs" or "configured"


def read_disk(
    server: ServerRow, databases: Sequence[DatabaseRow], data_directory: str | None, capacity: int | None
) -> DiskUsage | None:
    """Filesystem use of the data directory when this process can see it, else the configured capacity."""
    path = data_directory or server.data_directory
    if path and os.path.isdir(path):
        st = os.statvfs(path)
        size = st.f_blocks * st.f_frsize
        return DiskUsage(used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, size_bytes=size, source="statvfs")
    if capacity:
        return DiskUsage(used_bytes=sum(d.size_bytes for d in databases), size_bytes=capacity, source="configured")
    return None


def disk_metrics(usage: DiskUsage) -> list[Metric]:
    doc = {
        "statvfs": "of the filesystem holding the data directory (statvfs)",
        "configured": "databases' size against exporter.disk_capacity_bytes",
    }[usage.source]
    used = GaugeMetricFamily("pgarch_disk_used_bytes", f"Bytes used, {doc}.", labels=["source"])
    used.add_metric([usage.source], usage.used_bytes)
    size = GaugeMetricFamily("pgarch_disk_size_bytes", f"Capacity in bytes, {doc}.", labels=["source"])
    size.add_metric([usage.source], usage.size_bytes)
    ratio = GaugeMetricFamily("pgarch_disk_used_ratio", f"Used / capacity, {doc}.", labels=["source"])
    ratio.add_metric([usage.source], usage.used_bytes / usage.size_bytes if usage.size_bytes else 0.0)
    return [used, size, ratio]


# -- the auditor's KPIs, read from the knowledge base ---------------------------------------------

EMPTY_KPIS = KpiRow(0.0, 0.0, 0.0, 0, 0.0, 0.0, False, 0, 0, 0, 0, 0, 0, 0)


def read_kpis(conn: db.Connection, system_identifier: str | None, datname: str, present: bool | None = None) -> KpiRow:
    """The KPIs of (system_identifier, datname); ``present`` False when the caller already knows the knowledge
    base is not in ``conn``'s database (the server row says so for the audited database): no query then."""
    if present is False or system_identifier is None:
        return EMPTY_KPIS
    row = db.fetch_one(conn, db.query(conn, QUERIES, "kb_present"), None, KbPresentRow)
    if row is None or not row.present:
        return EMPTY_KPIS
    params = {"system_identifier": system_identifier, "datname": datname}
    kpis = db.fetch_one(conn, db.query(conn, QUERIES, "kb_kpis"), params, KpiRow) or EMPTY_KPIS
    if row.failures_present:  # knowledge base migration 002 and later
        rows = db.fetch_tuples(conn, db.query(conn, QUERIES, "kb_integration_failures"), params)
        kpis = dataclasses.replace(kpis, integration_failures={str(r[0]): int(r[1]) for r in rows})
    return kpis


def kpi_metrics(k: KpiRow) -> list[Metric]:
    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc)
        family.add_metric([], value)
        return family

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc)
        family.add_metric([], value)
        return family

    recs = GaugeMetricFamily(
        "pgarch_audit_recommendations", "Recommendations in the last audit, by action.", labels=["action"]
    )
    for action, value in zip(ACTIONS, (k.pr_merge, k.pr_review, k.log, k.flag), strict=True):
        recs.add_metric([action], value)
    failures = CounterMetricFamily(
        "pgarch_integration_failures",
        "Failed deliveries (github, git, slack, grafana, pushgateway, llm); never fails an audit.",
        labels=["integration"],
    )
    for integration in sorted({*INTEGRATIONS, *k.integration_failures}):
        failures.add_metric([integration], k.integration_failures.get(integration, 0))
    return [
        gauge("pgarch_audit_last_run_timestamp_seconds", "Start of the last audit (0: never).", k.last_run_ts),
        gauge(
            "pgarch_audit_last_success_timestamp_seconds",
            "End of the last successful audit (0: never).",
            k.last_success_ts,
        ),
        gauge("pgarch_audit_duration_seconds", "Duration of the last audit (so far, if it runs).", k.duration_s),
        gauge("pgarch_audit_slow_queries", "Slow queries found by the last successful audit.", k.slow_queries),
        recs,
        gauge(
            "pgarch_audit_confidence_avg_ratio",
            "Average confidence of the last audit's recommendations.",
            k.avg_confidence,
        ),
        gauge(
            "pgarch_audit_gain_avg_ratio",
            "Average measured gain of the last audit's recommendations.",
            k.avg_gain_percent / 100.0,
        ),
        gauge(
            "pgarch_audit_stuck",
            "1 when the last audit found slow queries and could recommend nothing.",
            1.0 if k.stuck else 0.0,
        ),
        counter("pgarch_audit_prs_created", "Pull requests opened since the knowledge base began.", k.prs_created),
        counter("pgarch_optimizations_applied", "Recommendations applied since the knowledge base began.", k.applied),
        gauge("pgarch_knowledge_base_records", "Recommendations stored in the knowledge base.", k.records),
        failures,
        *lifecycle_metrics(k),
    ]


def lifecycle_metrics(k: KpiRow) -> list[Metric]:
    """What became of the recommendations: lifecycle counts, verified outcomes, accuracy, time saved."""
    statuses = GaugeMetricFamily("pgarch_recommendations", "Recommendations by lifecycle status.", labels=["status"])
    for status, value in k.statuses.items():
        statuses.add_metric([status], value)
    outcomes = CounterMetricFamily(
        "pgarch_optimizations_verified",
        "Applied recommendations by measured outcome (pg_stat_statements before and after).",
        labels=["outcome"],
    )
    for outcome, value in k.outcomes.items():
        outcomes.add_metric([outcome], value)
    verified = sum(k.outcomes.values())
    accuracy = GaugeMetricFamily(
        "pgarch_agent_accuracy_ratio",
        "Share of verified applied recommendations whose outcome is improved (0 until one is verified).",
    )
    accuracy.add_metric([], k.verified_improved / verified if verified else 0.0)
    saved = CounterMetricFamily(
        "pgarch_time_saved_seconds", "Statement time saved by applied recommendations (calls x saved mean)."
    )
    saved.add_metric([], k.time_saved_s)
    size = GaugeMetricFamily("pgarch_knowledge_base_size_bytes", "Size of the knowledge base's tables and indexes.")
    size.add_metric([], k.kb_bytes)
    return [statuses, outcomes, accuracy, saved, size]


# -- the auditor's use of a language model (issue 19), from the knowledge base ------------------------------


def read_llm_usage(conn: db.Connection, system_identifier: str | None, datname: str) -> list[LlmUsageRow]:
    """The model usage the auditor stored for this database; empty before migration 005 or any LLM audit."""
    present = db.fetch_one(conn, db.query(conn, QUERIES, "kb_llm_present"), None, KbPresentRow)
    if present is None or not present.present or system_identifier is None:
        return []
    params = {"system_identifier": system_identifier, "datname": datname}
    return db.fetch(conn, db.query(conn, QUERIES, "kb_llm_usage"), params, LlmUsageRow)


def llm_metrics(rows: Sequence[LlmUsageRow]) -> list[Metric]:
    """``pgarch_llm_requests_total{outcome}``, ``pgarch_llm_tokens_total{kind}`` and the request latency
    summary; nothing at all when no audit has used a model."""
    if not rows:
        return []
    requests = CounterMetricFamily(
        "pgarch_llm_requests", "Requests the auditor made to its language model, by outcome.", labels=["outcome"]
    )
    tokens = CounterMetricFamily(
        "pgarch_llm_tokens", "Tokens the auditor's model requests used, by kind.", labels=["kind"]
    )
    latency: dict[str, float] = {}
    for row in rows:
        if row.family == "requests":
            requests.add_metric([row.label], row.value)
        elif row.family == "tokens":
            tokens.add_metric([row.label], row.value)
        else:
            latency[row.family] = row.value
    out: list[Metric] = [requests, tokens]
    if latency:
        out.append(
            SummaryMetricFamily(
                "pgarch_llm_request_duration_seconds",
                "Time the auditor waited for its language model, per HTTP request.",
                count_value=int(latency.get("latency_count", 0.0)),
                sum_value=latency.get("latency_sum", 0.0),
            )
        )
    return out
