"""The daily snapshot: pg_stat_statements into the knowledge base (so audits see a weekly delta) and a
health record (database and table sizes, cache, connections) that growth forecasts fit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from auditor import health, window
from auditor.kb import KnowledgeBase
from exporter import collectors, db
from exporter.config import Config


def health_metrics(conn: db.Connection) -> dict[str, Any]:
    server = collectors.read_server(conn)
    databases = collectors.read_databases(conn, server, collectors.read_database_sizes(conn, server))
    return {
        "client_backends": server.client_backends,
        "usable_connections": server.usable_connections,
        "databases": [
            {"datname": d.datname, "size_bytes": d.size_bytes, "blks_hit": d.blks_hit, "blks_read": d.blks_read}
            for d in databases
        ],
        "tables": [
            {"table": f"{t.schema}.{t.name}", "size_bytes": t.size_bytes, "rows": t.rows}
            for t in health.table_sizes(conn)
        ],
    }


def take_snapshot(cfg: Config, dsn: str, kb_dsn: str, kind: str = "daily") -> str:
    """Store one snapshot; returns a one-line summary."""
    conn = db.connect(
        dsn,
        application_name="pg-architect-auditor",
        connect_timeout_s=cfg.database.connect_timeout_s,
        statement_timeout_ms=cfg.measurement.statement_timeout_ms,
    )
    try:
        kb = KnowledgeBase.open(kb_dsn, connect_timeout_s=cfg.database.connect_timeout_s)
        try:
            ident = window.identity(conn)
            target_id = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
            rows, info = window.read_snapshot(conn, ident)
            now = datetime.now(UTC)
            snapshot_id = kb.store_snapshot(
                target_id, kind, now, rows, info.stats_reset if info else None, info.dealloc if info else None
            )
            metrics = health_metrics(conn)
            kb.record_health(target_id, metrics)
        finally:
            kb.close()
    finally:
        conn.close()
    return (
        f"snapshot {snapshot_id} of {ident.datname}: {len(rows)} pg_stat_statements rows, "
        f"{len(metrics['tables'])} table sizes, at {now:%Y-%m-%d %H:%M:%S} UTC"
    )
