"""What happens after an audit is stored: pull requests (or local branches), the Grafana annotation, the
Pushgateway push. Each is optional and fails soft: a failure is logged, recorded in the knowledge base
(``pgarch_integration_failures_total{integration}``) and written into the report, and the audit stays ok.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from pg_architect.auditor.delivery import issues, pulls, pushgateway
from pg_architect.auditor.delivery.grafana import TAGS, Grafana, audit_text
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import AuditReport, DeliveryRecord, Kpis, SlowQuery
from pg_architect.auditor.report import llm_lines
from pg_architect.core import db
from pg_architect.core.config import Config, parse_listen
from pg_architect.core.errors import redact

log = logging.getLogger(__name__)


def api_base_url(cfg: Config) -> str:
    """How people reach the admin API: ``auditor.api.public_url``, else its listen address."""
    if cfg.auditor.api.public_url:
        return cfg.auditor.api.public_url.rstrip("/")
    host, port = parse_listen(cfg.auditor.api.listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def run_url(cfg: Config, run_id: str) -> str:
    return f"{api_base_url(cfg)}/admin/database/runs/{run_id}"


class _Failures:
    """Collects failures: logged at once, recorded in the knowledge base, said in the report."""

    def __init__(self, kb: KnowledgeBase, target_id: int | None, run_id: str) -> None:
        self.kb = kb
        self.target_id = target_id
        self.run_id = run_id
        self.notes: list[str] = []

    def add(self, integration: str, error: str) -> None:
        error = redact(error)
        log.warning("%s delivery failed (the audit is not affected): %s", integration, error)
        self.notes.append(f"{integration} failed: {error} (counted in pgarch_integration_failures_total)")
        try:
            self.kb.record_failure(integration, error, target_id=self.target_id, run_id=self.run_id)
        except Exception as exc:  # the knowledge base itself: still never fail the audit
            log.error("could not record the %s failure in the knowledge base: %s", integration, exc)


def deliver(cfg: Config, conn: db.Connection, kb: KnowledgeBase, report: AuditReport, target_id: int) -> AuditReport:
    """Deliver a stored, successful run; returns the report with what was delivered (stored again)."""
    at_threshold = [
        q
        for q in report.slow_queries
        if q.status == "recommended" and q.recommendation is not None and q.recommendation.action.startswith("pr_")
    ]
    if report.dry_run:
        note = f"dry run: {len(at_threshold)} recommendation(s) at the PR threshold; nothing written, nothing sent"
        return dataclasses.replace(report, delivery_notes=(note,))
    failures = _Failures(kb, target_id, report.run_id)
    notes: list[str] = []
    try:
        notes += pulls.refresh_pull_requests(cfg, kb)
    except Exception as exc:
        failures.add("github", f"refreshing pull request states: {exc}")
    try:
        model = {q.fingerprint: llm_lines(dataclasses.asdict(q.llm)) for q in report.slow_queries if q.llm is not None}
        result = pulls.deliver(cfg, conn, kb, report.run_id, run_url(cfg, report.run_id), model)
    except Exception as exc:  # a bug or the knowledge base: the audit still stands
        log.exception("delivery of run %s failed", report.run_id)
        result = pulls.PullResult(notes=[f"delivery failed: {exc}"])
    try:
        rewrites = [r for r in kb.pr_recommendations(report.run_id) if r.type == "rewrite"]
        if rewrites and any(i == "github" for i, _ in result.failures):
            # The pull requests' failure (a token, the network, a rate limit) would be the issues' too.
            issued = pulls.PullResult(notes=[f"{len(rewrites)} rewrite issue(s) not attempted: GitHub failed above"])
        else:
            issued = issues.deliver(cfg, kb, report, rewrites, run_url(cfg, report.run_id))
    except Exception as exc:
        log.exception("delivery of run %s's rewrites failed", report.run_id)
        issued = pulls.PullResult(notes=[f"delivery of rewrites failed: {exc}"])
    result.records += issued.records
    result.notes += issued.notes
    result.failures += issued.failures
    for integration, error in result.failures:
        failures.add(integration, error)
    notes += [n for n in result.notes if " failed: " not in n]
    report = _with_deliveries(report, result.records)
    _annotate(cfg, report, result.records, failures)
    _push(cfg, report, failures)
    report = dataclasses.replace(report, delivery_notes=tuple(notes + failures.notes))
    try:
        kb.update_run_delivery(report.run_id, report.kpis.prs_created, report.as_json())
    except Exception as exc:
        log.error("could not store run %s's deliveries in its report: %s", report.run_id, exc)
    return report


def _with_deliveries(report: AuditReport, records: list[DeliveryRecord]) -> AuditReport:
    by_fingerprint = {r.fingerprint: r for r in records}

    def update(q: SlowQuery) -> SlowQuery:
        d = by_fingerprint.get(q.fingerprint)
        if d is None or q.recommendation is None or d.pr_url is None or d.channel == "github_issue":
            return q
        return dataclasses.replace(q, recommendation=dataclasses.replace(q.recommendation, pr_url=d.pr_url))

    slow = tuple(update(q) for q in report.slow_queries)
    kpis = dataclasses.replace(
        Kpis.of(list(slow)),
        prs_created=sum(1 for r in records if r.pr_url and r.created and r.channel != "github_issue"),
    )
    return dataclasses.replace(report, slow_queries=slow, kpis=kpis, deliveries=tuple(records))


def _annotate(cfg: Config, report: AuditReport, records: list[DeliveryRecord], failures: _Failures) -> None:
    token = cfg.secret("grafana_token")
    if not cfg.grafana.url or not token:
        return
    grafana = Grafana(cfg.grafana.url, token, cfg.grafana.dashboard_uid)
    try:
        grafana.annotate(
            audit_text(report.as_json(), run_url(cfg, report.run_id)),
            list(TAGS),
            report.started_at,
            report.finished_at or datetime.now(UTC),
        )
        for r in records:
            if r.pr_url and r.created and r.channel != "github_issue":
                grafana.annotate(
                    f"pg-architect opened pull request #{r.pr_number} ({r.branch}): "
                    f'<a href="{r.pr_url}">{r.pr_url}</a>',
                    ["pg-architect", "pull-request"],
                    report.finished_at or datetime.now(UTC),
                )
    except Exception as exc:
        failures.add("grafana", str(exc))


def _push(cfg: Config, report: AuditReport, failures: _Failures) -> None:
    if not cfg.pushgateway.url:
        return
    actions: dict[str, int] = {}
    for q in report.slow_queries:
        if q.status == "recommended" and q.recommendation is not None:
            actions[q.recommendation.action] = actions.get(q.recommendation.action, 0) + 1
    try:
        pushgateway.push_run(
            cfg.pushgateway.url,
            report.database or "unknown",
            ok=report.status == "ok",  # an audit where every statement failed is stored as failed
            started=report.started_at,
            finished=report.finished_at or datetime.now(UTC),
            slow_queries=report.kpis.slow_queries,
            actions=actions,
            prs_created=report.kpis.prs_created,
        )
    except Exception as exc:
        failures.add("pushgateway", str(exc))


def after_failure(
    cfg: Config, kb: KnowledgeBase, run_id: str, target_id: int, started: datetime, database: str, error: str
) -> None:
    """A failed run: the Pushgateway gets its duration and failure (never a success time), Grafana a region."""
    failures = _Failures(kb, target_id, run_id)
    finished = datetime.now(UTC)
    if cfg.pushgateway.url:
        try:
            pushgateway.push_run(cfg.pushgateway.url, database, ok=False, started=started, finished=finished)
        except Exception as exc:
            failures.add("pushgateway", str(exc))
    token = cfg.secret("grafana_token")
    if cfg.grafana.url and token:
        doc: dict[str, Any] = {"database": database, "status": "failed", "kpis": {}}
        try:
            Grafana(cfg.grafana.url, token, cfg.grafana.dashboard_uid).annotate(
                audit_text(doc, run_url(cfg, run_id)) + f" ({redact(error)[:200]})",
                [*TAGS, "failed"],
                started,
                finished,
            )
        except Exception as exc:
            failures.add("grafana", str(exc))
