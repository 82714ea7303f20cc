"""The daily snapshot: pg_stat_statements into the knowledge base (so audits see a weekly delta), a
health record (database and table sizes, cache, connections) that growth forecasts fit, the
recommendations' lifecycle brought up to date (catalog, pull requests, outcomes), and the knowledge base
purged of what is older than ``auditor.lifecycle.retention_days``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from pg_architect.auditor import health, lifecycle, window
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core import db
from pg_architect.core.config import Config
from pg_architect.core.errors import PgArchitectError

log = logging.getLogger(__name__)


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
            try:
                changes = lifecycle.refresh(cfg, conn, kb, target_id, ident.dbid, snapshot_id)
            except PgArchitectError as exc:  # the snapshot is stored; the next one tries again
                log.warning("lifecycle refresh failed: %s", exc)
                changes = [f"lifecycle not brought up to date: {exc}"]
            purged = kb.purge(now - timedelta(days=cfg.auditor.lifecycle.retention_days))
        finally:
            kb.close()
    finally:
        conn.close()
    lines = [
        f"snapshot {snapshot_id} of {ident.datname}: {len(rows)} pg_stat_statements rows, "
        f"{len(metrics['tables'])} table sizes, at {now:%Y-%m-%d %H:%M:%S} UTC",
        *(f"lifecycle: {line}" for line in changes),
    ]
    if any(purged.values()):
        lines.append("purged: " + ", ".join(f"{n} {what}" for what, n in purged.items() if n))
    return "\n".join(lines)
