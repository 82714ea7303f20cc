"""The daily snapshot: pg_stat_statements into the knowledge base (so audits see a weekly delta) and a
health record (database and table sizes, cache, connections) that growth forecasts fit."""

from __future__ import annotations

from datetime import UTC, datetime

from pg_architect.auditor import health, window
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core import db
from pg_architect.core.config import Config


def take_snapshot(cfg: Config, dsn: str, kb_dsn: str, kind: str = "daily") -> str:
    """Store one snapshot; returns a one-line summary."""
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    try:
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            ident = window.identity(conn)
            target_id = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
            snap = window.read_snapshot(conn, ident, min_mean_ms=cfg.auditor.thresholds.min_mean_ms)
            rows, info = snap.rows, snap.info
            now = datetime.now(UTC)
            snapshot_id = kb.store_snapshot(
                target_id,
                kind,
                now,
                rows,
                info.stats_reset if info else None,
                info.dealloc if info else None,
                snap.fingerprints,
            )
            metrics = health.health_metrics(conn)
            kb.record_health(target_id, metrics)
        finally:
            kb.close()
    finally:
        conn.close()
    return (
        f"snapshot {snapshot_id} of {ident.datname}: {len(rows)} pg_stat_statements rows, "
        f"{len(metrics['tables'])} table sizes, at {now:%Y-%m-%d %H:%M:%S} UTC"
    )
