"""Typed, frozen rows: SQL aliases equal the field names (psycopg's class_row builds them)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class ServerRow:
    server_version_num: int
    max_connections: int
    superuser_reserved_connections: int
    reserved_connections: int
    data_directory: str | None
    current_datname: str
    pgss_schema: str | None
    pgss_version: str | None
    shared_preload_libraries: str | None
    system_identifier: str | None
    client_backends: int
    version: str
    server_version: str
    postmaster_start_time: float
    conf_load_time: float
    kb_present: bool

    @property
    def usable_connections(self) -> int:
        """Connections ordinary roles may open: max minus the reserved slots."""
        return self.max_connections - self.superuser_reserved_connections - self.reserved_connections

    @property
    def pgss_loaded(self) -> bool:
        libraries = {lib.strip().strip('"') for lib in (self.shared_preload_libraries or "").split(",")}
        return "pg_stat_statements" in libraries


@dataclasses.dataclass(frozen=True, slots=True)
class ActivityRow:
    datname: str
    state: str
    count: int
    max_tx_duration: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class LockRow:
    datname: str
    mode: str
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class BgwriterRow:
    """pg_stat_bgwriter, and from PostgreSQL 17 pg_stat_checkpointer (None: not in this version)."""

    checkpoints_timed: float
    checkpoints_req: float
    checkpoint_write_time: float
    checkpoint_sync_time: float
    buffers_checkpoint: float
    buffers_clean: float
    maxwritten_clean: float
    buffers_backend: float | None
    buffers_backend_fsync: float | None
    buffers_alloc: float
    stats_reset: float
    restartpoints_timed: float | None
    restartpoints_req: float | None
    restartpoints_done: float | None
    checkpointer_stats_reset: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicationRow:
    is_replica: bool
    lag_seconds: float
    last_replay_seconds: float | None
    archived_count: float
    failed_count: float
    last_archive_age: float | None
    slots: list[dict[str, object]]


@dataclasses.dataclass(frozen=True, slots=True)
class SettingRow:
    name: str
    setting: str
    unit: str
    vartype: str
    short_desc: str


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseRow:
    """pg_stat_database and pg_stat_database_conflicts of one database (times in ms, as the view has them)."""

    dbid: int
    datname: str
    blks_hit: int
    blks_read: int
    connection_limit: int = -1
    numbackends: int = 0
    xact_commit: int = 0
    xact_rollback: int = 0
    tup_returned: int = 0
    tup_fetched: int = 0
    tup_inserted: int = 0
    tup_updated: int = 0
    tup_deleted: int = 0
    conflicts: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    deadlocks: int = 0
    blk_read_time: float = 0.0
    blk_write_time: float = 0.0
    stats_reset: float | None = None
    active_time: float | None = None
    confl_tablespace: int = 0
    confl_lock: int = 0
    confl_snapshot: int = 0
    confl_bufferpin: int = 0
    confl_deadlock: int = 0
    size_bytes: int = 0  # from database_sizes.sql, refreshed less often (exporter.database_size_interval_s)


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseSizeRow:
    dbid: int
    size_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class KbPresentRow:
    present: bool
    failures_present: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class LlmUsageRow:
    """One series of the auditor's model usage (kb_llm_usage.sql)."""

    family: str  # requests | tokens | latency_sum | latency_count
    label: str
    value: float


@dataclasses.dataclass(frozen=True, slots=True)
class KpiRow:
    last_run_ts: float
    last_success_ts: float
    duration_s: float
    slow_queries: int
    avg_confidence: float
    avg_gain_percent: float
    stuck: bool
    pr_merge: int
    pr_review: int
    log: int
    flag: int
    prs_created: int
    applied: int
    records: int
    status_pending: int = 0
    status_pr_open: int = 0
    status_merged: int = 0
    status_applied: int = 0
    status_rejected: int = 0
    status_superseded: int = 0
    status_obsolete: int = 0
    verified_improved: int = 0
    verified_improved_less: int = 0
    verified_no_change: int = 0
    verified_regressed: int = 0
    time_saved_s: float = 0.0
    kb_bytes: float = 0.0
    # integration -> failed deliveries since the knowledge base began (github, git, slack, grafana, ...)
    integration_failures: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def statuses(self) -> dict[str, int]:
        """Recommendations by lifecycle status (the contract's label values)."""
        return {
            "pending": self.status_pending,
            "pr_open": self.status_pr_open,
            "merged": self.status_merged,
            "applied": self.status_applied,
            "rejected": self.status_rejected,
            "superseded": self.status_superseded,
            "obsolete": self.status_obsolete,
        }

    @property
    def outcomes(self) -> dict[str, int]:
        """Verified outcomes of applied recommendations."""
        return {
            "improved": self.verified_improved,
            "improved_less": self.verified_improved_less,
            "no_change": self.verified_no_change,
            "regressed": self.verified_regressed,
        }
