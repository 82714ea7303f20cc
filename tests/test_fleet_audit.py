"""The auditor for several databases (issue 17, item 4): the configured targets audited into one knowledge base,
each row with its server's and database's identity; one audit per target at a time; replicas sharing the
scheduled work through claims in the knowledge base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pg_architect.auditor import daemon as daemon_mod
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.targets import audit_targets
from pg_architect.core.config import load_config
from tests.conftest import ServerInfo, make_database


def small_db(server: ServerInfo, name: str) -> str:
    dsn = make_database(server, name, ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, g % 100 AS k FROM generate_series(1, 20000) g")
        for _ in range(6):
            conn.execute("SELECT count(*) FROM t WHERE k = %s", (7,))
    return dsn


@pytest.fixture(scope="module")
def fleet(embedded_pg: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    orders, billing = small_db(embedded_pg, "fleet_orders"), small_db(embedded_pg, "fleet_billing")
    kb = make_database(embedded_pg, "fleet_kb", ("vector",))
    dsn_file = tmp_path_factory.mktemp("fleet") / "billing.dsn"
    dsn_file.write_text(billing + "\n", encoding="utf-8")
    config = tmp_path_factory.mktemp("fleet") / "pg-architect.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"kb_dsn": kb},
                "targets": [{"name": "orders", "dsn": orders}, {"name": "billing", "dsn_file": str(dsn_file)}],
                "measurement": {"allow_blocking_builds": True},
            }
        ),
        encoding="utf-8",
    )
    return {"orders": orders, "billing": billing, "kb": kb, "config": config}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    return subprocess.run([sys.executable, "-m", "pg_architect", *args], capture_output=True, text=True,
                          timeout=600, env=clean)


def reports(stdout: str) -> list[dict[str, Any]]:
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(stdout.strip()):
        doc, end = decoder.raw_decode(stdout, at)
        docs.append(doc)
        at = end + len(stdout[end:]) - len(stdout[end:].lstrip())
    return docs


def runs_by_database(kb: str) -> dict[str, int]:
    with psycopg.connect(kb) as conn:
        rows = conn.execute(
            "SELECT t.datname, count(r.run_id) FROM pgarch.targets t LEFT JOIN pgarch.audit_runs r USING (target_id)"
            " GROUP BY t.datname ORDER BY 1"
        ).fetchall()
    return dict(rows)


def test_every_target_is_audited_into_one_knowledge_base_with_its_identity(fleet: dict[str, Any]) -> None:
    proc = cli("audit", "--config", str(fleet["config"]), "--format", "json", "--min-calls", "1",
               "--min-mean-ms", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = reports(proc.stdout)
    assert sorted(d["database"] for d in docs) == ["fleet_billing", "fleet_orders"]
    assert all(d["status"] == "ok" for d in docs)
    assert runs_by_database(fleet["kb"]) == {"fleet_billing": 1, "fleet_orders": 1}

    only = cli("audit", "--config", str(fleet["config"]), "--format", "json", "--target", "billing",
               "--min-calls", "1", "--min-mean-ms", "0")
    assert only.returncode == 0, only.stderr[-3000:]
    assert [d["database"] for d in reports(only.stdout)] == ["fleet_billing"]
    assert runs_by_database(fleet["kb"]) == {"fleet_billing": 2, "fleet_orders": 1}

    unknown = cli("audit", "--config", str(fleet["config"]), "--target", "nope")
    assert unknown.returncode == 2 and "no target named 'nope' (targets: orders, billing)" in unknown.stderr


def test_a_scheduled_slot_is_claimed_by_exactly_one_replica(fleet: dict[str, Any]) -> None:
    slot = datetime(2026, 11, 29, 19, 0, tzinfo=UTC)
    sessions = [KnowledgeBase.open(fleet["kb"]) for _ in range(4)]
    try:
        won = [kb.claim_job("orders", "weekly_audit", slot, f"replica-{i}") for i, kb in enumerate(sessions)]
        assert won.count(True) == 1, won
        assert sessions[0].claim_job("billing", "weekly_audit", slot, "replica-0")  # another target: its own claim
    finally:
        for kb in sessions:
            kb.close()


def test_two_replicas_share_a_weekly_slot_each_target_audited_once(fleet: dict[str, Any]) -> None:
    cfg = load_config(fleet["config"])
    targets = audit_targets(cfg, None)
    before = runs_by_database(fleet["kb"])
    slot = datetime(2026, 12, 6, 19, 0, tzinfo=UTC)
    replicas = [
        daemon_mod.Daemon(cfg, "unused", fleet["kb"], daemon_mod.AuditRunner(cfg, "unused", fleet["kb"], targets))
        for _ in range(2)
    ]
    threads = [threading.Thread(target=r.weekly_audit, args=(slot,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    after = runs_by_database(fleet["kb"])
    assert {db: after[db] - before.get(db, 0) for db in after} == {"fleet_billing": 1, "fleet_orders": 1}
    with psycopg.connect(fleet["kb"]) as conn:
        claims = conn.execute("SELECT target_name, count(*) FROM pgarch.job_claims WHERE slot = %s GROUP BY 1",
                              (slot,)).fetchall()
    assert sorted(claims) == [("billing", 1), ("orders", 1)]


def test_targets_without_a_knowledge_base_of_their_own_use_the_configured_one(fleet: dict[str, Any]) -> None:
    cfg = load_config(fleet["config"])
    names = [t.name for t in audit_targets(cfg, None)]
    assert names == ["orders", "billing"]
    assert audit_targets(cfg, None, "billing")[0].dsn == Path(cfg.targets[1].dsn_file or "").read_text().strip()
