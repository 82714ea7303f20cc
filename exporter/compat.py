"""postgres_exporter's core series, under its names, types and labels, so its dashboards and alerts work here.

The names follow postgres_exporter's default collectors (``collector/pg_stat_database.go``, ``pg_locks.go``,
``pg_stat_activity``, ``pg_replication*.go``, ``pg_stat_bgwriter.go``, ``pg_stat_archiver.go``, ``pg_setting.go``
and the ``pg_static`` version series): its counters carry no ``_total`` suffix unless upstream's name has one
(``pg_stat_database_blks_hit`` but ``pg_stat_bgwriter_checkpoints_timed_total``), so they are built with
:func:`counter`, which keeps a name exactly as given. Times keep upstream's units (milliseconds where
upstream exports the view's milliseconds). PostgreSQL 17 moved checkpoints to ``pg_stat_checkpointer``: its
values are exported under both upstream's ``pg_stat_checkpointer_*`` names and the ``pg_stat_bgwriter_*``
names dashboards written before 17 read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily, Metric, UnknownMetricFamily

from pg_architect.exporter.models import (
    ActivityRow,
    BgwriterRow,
    DatabaseRow,
    LockRow,
    ReplicationRow,
    ServerRow,
    SettingRow,
)

# The settings the postgres-mixin, Grafana dashboard 9628 and our own alerts read (postgres_exporter
# exports all ~300 numeric ones; these are the ones dashboards use, at a fraction of the series). Left out:
# statement_timeout, lock_timeout and idle_in_transaction_session_timeout, which the exporter's connection sets
# for itself, so its session could only report its own values, not the server's.
SETTINGS = (
    "autovacuum",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_max_workers",
    "autovacuum_naptime",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "block_size",
    "checkpoint_completion_target",
    "checkpoint_timeout",
    "deadlock_timeout",
    "default_statistics_target",
    "effective_cache_size",
    "effective_io_concurrency",
    "fsync",
    "hot_standby",
    "log_min_duration_statement",
    "maintenance_work_mem",
    "max_connections",
    "max_locks_per_transaction",
    "max_parallel_maintenance_workers",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_wal_senders",
    "max_wal_size",
    "max_worker_processes",
    "min_wal_size",
    "pg_stat_statements.max",
    "random_page_cost",
    "reserved_connections",
    "seq_page_cost",
    "server_version_num",
    "shared_buffers",
    "superuser_reserved_connections",
    "temp_buffers",
    "track_io_timing",
    "wal_buffers",
    "wal_keep_size",
    "wal_segment_size",
    "work_mem",
)

_SECONDS = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_BYTES = {
    "B": 1,
    "kB": 2**10,
    "MB": 2**20,
    "GB": 2**30,
    "TB": 2**40,
    "1kB": 2**10,
    "2kB": 2**11,
    "4kB": 2**12,
    "8kB": 2**13,
    "16kB": 2**14,
    "32kB": 2**15,
    "64kB": 2**16,
    "16MB": 2**24,
    "32MB": 2**25,
    "64MB": 2**26,
}


class ExactCounter(Metric):
    """A counter whose samples carry exactly ``name`` (prometheus_client's CounterMetricFamily appends
    ``_total``; postgres_exporter's counters mostly do not have it)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, "counter")
        self.exact_name = name
        self._labels = tuple(labels)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.add_sample(self.exact_name, dict(zip(self._labels, values, strict=True)), value)


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> ExactCounter:
    return ExactCounter(name, documentation, labels)


def _gauge(name: str, documentation: str, value: float | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


# -- pg_stat_database, pg_database ---------------------------------------------------------------

_DATABASE_COUNTERS = (
    ("xact_commit", "Number of transactions in this database that have been committed"),
    ("xact_rollback", "Number of transactions in this database that have been rolled back"),
    ("blks_read", "Number of disk blocks read in this database"),
    ("blks_hit", "Number of times disk blocks were found already in the buffer cache"),
    ("tup_returned", "Number of rows returned by queries in this database"),
    ("tup_fetched", "Number of rows fetched by queries in this database"),
    ("tup_inserted", "Number of rows inserted by queries in this database"),
    ("tup_updated", "Number of rows updated by queries in this database"),
    ("tup_deleted", "Number of rows deleted by queries in this database"),
    ("conflicts", "Number of queries canceled due to conflicts with recovery in this database"),
    ("temp_files", "Number of temporary files created by queries in this database"),
    ("temp_bytes", "Total amount of data written to temporary files by queries in this database"),
    ("deadlocks", "Number of deadlocks detected in this database"),
    ("blk_read_time", "Time spent reading data file blocks by backends in this database, in milliseconds"),
    ("blk_write_time", "Time spent writing data file blocks by backends in this database, in milliseconds"),
)
_CONFLICTS = (
    ("confl_tablespace", "dropped tablespaces"),
    ("confl_lock", "lock timeouts"),
    ("confl_snapshot", "old snapshots"),
    ("confl_bufferpin", "pinned buffers"),
    ("confl_deadlock", "deadlocks"),
)


def database_families(rows: Sequence[DatabaseRow]) -> list[Metric]:
    """pg_stat_database_* and pg_stat_database_conflicts_* per database (labels datid, datname)."""
    labels = ("datid", "datname")
    numbackends = GaugeMetricFamily(
        "pg_stat_database_numbackends", "Number of backends currently connected to this database", labels=labels
    )
    counters = {col: counter(f"pg_stat_database_{col}", doc, labels) for col, doc in _DATABASE_COUNTERS}
    stats_reset = counter(
        "pg_stat_database_stats_reset", "Time at which these statistics were last reset (epoch seconds)", labels
    )
    active_time = counter(
        "pg_stat_database_active_time_seconds_total",
        "Time spent executing SQL statements in this database, in seconds",
        labels,
    )
    conflicts = {
        col: counter(
            f"pg_stat_database_conflicts_{col}",
            f"Number of queries in this database that have been canceled due to {what}",
            labels,
        )
        for col, what in _CONFLICTS
    }
    limit = GaugeMetricFamily(
        "pg_database_connection_limit", "Connection limit set for the database", labels=["datname"]
    )
    for row in rows:
        key = [str(row.dbid), row.datname]
        numbackends.add_metric(key, row.numbackends)
        for col, family in counters.items():
            family.add_metric(key, getattr(row, col))
        if row.stats_reset is not None:
            stats_reset.add_metric(key, row.stats_reset)
        if row.active_time is not None:
            active_time.add_metric(key, row.active_time / 1000.0)
        for col, family in conflicts.items():
            family.add_metric(key, getattr(row, col))
        limit.add_metric([row.datname], row.connection_limit)
    return [numbackends, *counters.values(), stats_reset, active_time, *conflicts.values(), limit]


# -- pg_stat_activity, pg_locks --------------------------------------------------------------------


def max_tx_family(activity: Sequence[ActivityRow]) -> Metric:
    max_tx = GaugeMetricFamily(
        "pg_stat_activity_max_tx_duration",
        "max duration in seconds any active transaction has been running",
        labels=["datname", "state"],
    )
    for row in activity:
        max_tx.add_metric([row.datname, row.state], row.max_tx_duration)
    return max_tx


def locks_family(locks: Sequence[LockRow]) -> Metric:
    count = GaugeMetricFamily("pg_locks_count", "Number of locks", labels=["datname", "mode"])
    for lock in locks:
        count.add_metric([lock.datname, lock.mode], lock.count)
    return count


# -- the server: version, start, settings -----------------------------------------------------------


def server_families(server: ServerRow) -> list[Metric]:
    static = UnknownMetricFamily(
        "pg_static", "Version string as reported by postgres", labels=["version", "short_version"]
    )
    static.add_metric([server.version, _short_version(server.server_version)], 1.0)
    start = _gauge("pg_postmaster_start_time_seconds", "Time at which postmaster started", server.postmaster_start_time)
    return [static, start]


def _short_version(server_version: str) -> str:
    """``18.1 (Debian 18.1-1)`` -> ``18.1.0``, as postgres_exporter's semver short_version."""
    head = server_version.split()[0] if server_version.strip() else "0"
    parts = [p for p in head.split(".") if p.isdigit()][:3]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts)


def setting_value(row: SettingRow) -> tuple[str, float] | None:
    """postgres_exporter's metric name suffix and value of one setting; None when it cannot be read."""
    name = row.name.replace(".", "_").replace("-", "_")
    if row.vartype == "bool":
        return name, 1.0 if row.setting == "on" else 0.0
    try:
        value = float(row.setting)
    except ValueError:
        return None
    if row.unit == "":
        return name, value
    if row.unit in _SECONDS:
        return f"{name}_seconds", value if value == -1 else value * _SECONDS[row.unit]
    if row.unit in _BYTES:
        return f"{name}_bytes", value if value == -1 else value * _BYTES[row.unit]
    return None


def settings_families(rows: Sequence[SettingRow]) -> list[Metric]:
    out: list[Metric] = []
    for row in rows:
        found = setting_value(row)
        if found is None:
            continue
        suffix, value = found
        unit = suffix.rsplit("_", 1)[-1] if suffix != row.name.replace(".", "_") else ""
        doc = f"Server Parameter: {row.name}" + (f" [Units converted to {unit}.]" if unit else "")
        out.append(_gauge(f"pg_settings_{suffix}", doc, value))
    return out


# -- bgwriter / checkpointer -------------------------------------------------------------------------


def bgwriter_families(row: BgwriterRow) -> list[Metric]:
    split = row.restartpoints_timed is not None  # PostgreSQL 17+: pg_stat_checkpointer exists
    source = " (PostgreSQL 17+: from pg_stat_checkpointer)" if split else ""

    def one(name: str, doc: str, value: float | None) -> list[Metric]:
        if value is None:
            return []
        family = counter(name, doc)
        family.add_metric([], value)
        return [family]

    out = [
        *one(
            "pg_stat_bgwriter_checkpoints_timed_total",
            "Number of scheduled checkpoints" + source,
            row.checkpoints_timed,
        ),
        *one("pg_stat_bgwriter_checkpoints_req_total", "Number of requested checkpoints" + source, row.checkpoints_req),
        *one(
            "pg_stat_bgwriter_checkpoint_write_time_total",
            "Time spent writing checkpoint files to disk, in milliseconds" + source,
            row.checkpoint_write_time,
        ),
        *one(
            "pg_stat_bgwriter_checkpoint_sync_time_total",
            "Time spent synchronizing checkpoint files to disk, in milliseconds" + source,
            row.checkpoint_sync_time,
        ),
        *one(
            "pg_stat_bgwriter_buffers_checkpoint_total",
            "Number of buffers written during checkpoints" + source,
            row.buffers_checkpoint,
        ),
        *one(
            "pg_stat_bgwriter_buffers_clean_total",
            "Number of buffers written by the background writer",
            row.buffers_clean,
        ),
        *one(
            "pg_stat_bgwriter_maxwritten_clean_total",
            "Number of times the background writer stopped a cleaning scan because it had written too many buffers",
            row.maxwritten_clean,
        ),
        *one(
            "pg_stat_bgwriter_buffers_backend_total",
            "Number of buffers written directly by a backend",
            row.buffers_backend,
        ),
        *one(
            "pg_stat_bgwriter_buffers_backend_fsync_total",
            "Number of times a backend had to execute its own fsync call",
            row.buffers_backend_fsync,
        ),
        *one("pg_stat_bgwriter_buffers_alloc_total", "Number of buffers allocated", row.buffers_alloc),
        *one("pg_stat_bgwriter_stats_reset_total", "Time at which these statistics were last reset", row.stats_reset),
    ]
    if split:
        out += [
            *one("pg_stat_checkpointer_num_timed_total", "Number of scheduled checkpoints", row.checkpoints_timed),
            *one("pg_stat_checkpointer_num_requested_total", "Number of requested checkpoints", row.checkpoints_req),
            *one(
                "pg_stat_checkpointer_restartpoints_timed_total",
                "Number of scheduled restartpoints",
                row.restartpoints_timed,
            ),
            *one(
                "pg_stat_checkpointer_restartpoints_req_total",
                "Number of requested restartpoints",
                row.restartpoints_req,
            ),
            *one(
                "pg_stat_checkpointer_restartpoints_done_total",
                "Number of restartpoints performed",
                row.restartpoints_done,
            ),
            *one(
                "pg_stat_checkpointer_write_time_total",
                "Time spent writing checkpoint and restartpoint files to disk, in milliseconds",
                row.checkpoint_write_time,
            ),
            *one(
                "pg_stat_checkpointer_sync_time_total",
                "Time spent synchronizing checkpoint and restartpoint files to disk, in milliseconds",
                row.checkpoint_sync_time,
            ),
            *one(
                "pg_stat_checkpointer_buffers_written_total",
                "Number of buffers written during checkpoints and restartpoints",
                row.buffers_checkpoint,
            ),
            *one(
                "pg_stat_checkpointer_stats_reset_total",
                "Time at which these statistics were last reset",
                row.checkpointer_stats_reset,
            ),
        ]
    return out


# -- replication, slots, archiver --------------------------------------------------------------------


def replication_families(row: ReplicationRow) -> list[Metric]:
    is_replica = _gauge("pg_replication_is_replica", "Indicates if the server is a replica", row.is_replica)
    lag = _gauge("pg_replication_lag_seconds", "Replication lag behind master in seconds", row.lag_seconds)
    replay = _gauge(
        "pg_replication_last_replay_seconds",
        "Age of last replay in seconds",
        row.last_replay_seconds if row.last_replay_seconds is not None else None,
    )
    active = GaugeMetricFamily(
        "pg_replication_slots_active", "Flag indicating if the slot is active", labels=["slot_name", "database"]
    )
    diff = GaugeMetricFamily(
        "pg_replication_slots_pg_wal_lsn_diff",
        "Replication lag in bytes",
        labels=["slot_name", "database"],
    )
    safe = GaugeMetricFamily(
        "pg_replication_slots_safe_wal_size_bytes",
        "Number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost",
        labels=["slot_name", "slot_type"],
    )
    status = GaugeMetricFamily(
        "pg_replication_slots_wal_status",
        "WAL reservation status of the slot",
        labels=["slot_name", "slot_type", "wal_status"],
    )
    for slot in row.slots:
        name, database = str(slot.get("slot_name") or ""), str(slot.get("database") or "")
        slot_type = str(slot.get("slot_type") or "")
        active.add_metric([name, database], 1.0 if slot.get("active") else 0.0)
        lsn_diff = slot.get("wal_lsn_diff")
        if isinstance(lsn_diff, int | float):
            diff.add_metric([name, database], float(lsn_diff))
        safe_size = slot.get("safe_wal_size")
        if isinstance(safe_size, int | float):
            safe.add_metric([name, slot_type], float(safe_size))
        if slot.get("wal_status"):
            status.add_metric([name, slot_type, str(slot["wal_status"])], 1.0)
    archived = counter("pg_stat_archiver_archived_count", "Number of WAL files that have been successfully archived")
    archived.add_metric([], row.archived_count)
    failed = counter("pg_stat_archiver_failed_count", "Number of failed attempts for archiving WAL files")
    failed.add_metric([], row.failed_count)
    # postgres_exporter reports NaN before anything was archived; absent says the same without a NaN.
    age = _gauge(
        "pg_stat_archiver_last_archive_age",
        "Time in seconds since last WAL segment was successfully archived",
        row.last_archive_age if row.last_archive_age is not None and math.isfinite(row.last_archive_age) else None,
    )
    return [is_replica, lag, replay, active, diff, safe, status, archived, failed, age]
