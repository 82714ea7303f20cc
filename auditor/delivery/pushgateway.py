"""The audit's metrics pushed to a Prometheus Pushgateway, by the batch-job conventions.

Group: ``job="pg-architect-auditor"`` and ``target=<database>``. A successful run replaces the group (PUT) with
its duration, counts and ``pgarch_audit_last_success_timestamp_seconds``; a failed run only adds (POST) its
duration, ``pgarch_audit_last_run_timestamp_seconds`` and ``pgarch_audit_failed 1``, so the last success
pushed before stays and an alert on its age fires as it should.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway

JOB = "pg-architect-auditor"
TIMEOUT_S = 10.0
ACTIONS = ("pr_merge", "pr_review", "log", "flag")


def push_run(
    url: str,
    target: str,
    *,
    ok: bool,
    started: datetime,
    finished: datetime,
    slow_queries: int = 0,
    actions: Mapping[str, int] | None = None,
    prs_created: int = 0,
) -> None:
    """Push one run's metrics; raises OSError (or urllib's errors) when the Pushgateway cannot be reached."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("pgarch_audit_last_run_timestamp_seconds", "End of the last audit run, failed or not.", finished.timestamp())
    gauge("pgarch_audit_duration_seconds", "Duration of the last audit run.", (finished - started).total_seconds())
    gauge("pgarch_audit_failed", "1 when the last audit run failed.", 0.0 if ok else 1.0)
    if ok:
        gauge("pgarch_audit_last_success_timestamp_seconds", "End of the last successful audit.", finished.timestamp())
        gauge("pgarch_audit_slow_queries", "Slow statements found by the last successful audit.", slow_queries)
        gauge("pgarch_audit_prs_opened", "Pull requests the last successful audit opened.", prs_created)
        recs = Gauge(
            "pgarch_audit_recommendations",
            "Recommendations of the last successful audit, by action.",
            ["action"],
            registry=registry,
        )
        for action in ACTIONS:
            recs.labels(action).set((actions or {}).get(action, 0))
        push_to_gateway(url, job=JOB, registry=registry, grouping_key={"target": target}, timeout=TIMEOUT_S)
    else:
        pushadd_to_gateway(url, job=JOB, registry=registry, grouping_key={"target": target}, timeout=TIMEOUT_S)
