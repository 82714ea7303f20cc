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


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseRow:
    dbid: int
    datname: str
    blks_hit: int
    blks_read: int
    size_bytes: int = 0  # from database_sizes.sql, refreshed less often (exporter.database_size_interval_s)


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseSizeRow:
    dbid: int
    size_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class KbPresentRow:
    present: bool


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
