"""The audit's results as typed models; ``as_json`` gives the contract's report JSON."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

SlowQueryStatus = Literal["recommended", "skipped", "no_recommendation", "error"]
Action = Literal["pr_merge", "pr_review", "log", "flag"]
RecommendationType = Literal["index", "rewrite", "partition", "cache", "settings"]
MeasurementMethod = Literal["hypothetical", "rollback_build", "staging"]


def action_for(confidence: float) -> Action:
    """The contract's confidence table."""
    if confidence >= 0.90:
        return "pr_merge"
    if confidence >= 0.80:
        return "pr_review"
    if confidence >= 0.60:
        return "log"
    return "flag"


@dataclasses.dataclass(frozen=True, slots=True)
class Explanation:
    intent: str
    tables: tuple[str, ...]
    complexity: Literal["low", "medium", "high"]


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    method: MeasurementMethod
    before_cost: float
    after_cost: float
    before_ms: float | None = None
    after_ms: float | None = None
    gain_percent: float = 0.0
    worth_applying: bool = False
    plan_changed: bool = False
    plan_before: str | None = None
    plan_after: str | None = None
    samples: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Recommendation:
    type: RecommendationType
    sql: str
    rollback_sql: str | None
    reasoning: str
    confidence: float
    source: Literal["advisor", "llm"]
    measurement: Measurement | None
    action: Action
    pr_url: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SlowQuery:
    queryid: str
    query: str
    calls: int
    mean_ms: float
    total_ms: float
    status: SlowQueryStatus
    fingerprint: str = ""
    queryids: tuple[int, ...] = ()
    skip_reason: str | None = None
    explanation: Explanation | None = None
    recommendation: Recommendation | None = None
    regression_of: int | None = None
    rejected: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class IndexHealth:
    type: Literal["drop_index"]
    index: str
    reason: Literal["unused", "duplicate", "redundant", "invalid"]
    sql: str
    rollback_sql: str
    evidence: str


@dataclasses.dataclass(frozen=True, slots=True)
class Forecast:
    table: str
    size_bytes: int
    projected_bytes_90d: int
    recommendation: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SettingSuggestion:
    name: str
    current: str
    suggested: str
    evidence: str
    confidence: float
    scope: str = "server"  # "server", "statement" (SET LOCAL), or "table <schema.name>"
    sql: str = ""
    rollback_sql: str = ""
    restart: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    start: datetime | None
    end: datetime
    source: Literal["snapshot-delta", "cumulative"]


@dataclasses.dataclass(frozen=True, slots=True)
class Kpis:
    slow_queries: int = 0
    recommended: int = 0
    prs_created: int = 0
    manual_review: int = 0
    avg_confidence: float = 0.0
    avg_gain_percent: float = 0.0

    @classmethod
    def of(cls, slow: list[SlowQuery]) -> Kpis:
        recs = [q.recommendation for q in slow if q.recommendation is not None and q.status == "recommended"]
        gains = [r.measurement.gain_percent for r in recs if r.measurement is not None]
        return cls(
            slow_queries=len(slow),
            recommended=len(recs),
            prs_created=sum(1 for r in recs if r.pr_url),
            manual_review=sum(1 for r in recs if r.action in ("pr_review", "flag")),
            avg_confidence=round(sum(r.confidence for r in recs) / len(recs), 4) if recs else 0.0,
            avg_gain_percent=round(sum(gains) / len(gains), 2) if gains else 0.0,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """Where a recommendation's migration went: a GitHub pull request, or a branch of a local repository."""

    recommendation_id: int
    fingerprint: str
    channel: str  # github | local_git
    repo: str
    branch: str
    commit_sha: str | None
    migration_path: str
    pr_number: int | None
    pr_url: str | None
    state: str  # committed | pr_open | merged | closed
    created: bool  # made by this run (False: found from an earlier one)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    status: Literal["ok", "failed", "running"]
    window: Window | None
    slow_queries: tuple[SlowQuery, ...] = ()
    index_health: tuple[IndexHealth, ...] = ()
    forecasts: tuple[Forecast, ...] = ()
    settings: tuple[SettingSuggestion, ...] = ()
    kpis: Kpis = dataclasses.field(default_factory=Kpis)
    error: str | None = None
    database: str | None = None
    dry_run: bool = False
    notes: tuple[str, ...] = ()
    deliveries: tuple[DeliveryRecord, ...] = ()
    # What delivery did, in words: "pull request #12 opened ...", "PR threshold reached, GitHub not configured".
    delivery_notes: tuple[str, ...] = ()

    @property
    def stuck(self) -> bool:
        """Slow queries were found and none of them got a recommendation."""
        return bool(self.slow_queries) and not any(q.status == "recommended" for q in self.slow_queries)

    def as_json(self) -> dict[str, Any]:
        """The contract's report JSON (extra keys are additions, never renames)."""
        return {
            "run_id": self.run_id,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "status": self.status,
            "database": self.database,
            "dry_run": self.dry_run,
            "error": self.error,
            "window": None
            if self.window is None
            else {"from": _iso(self.window.start), "to": _iso(self.window.end), "source": self.window.source},
            "slow_queries": [_slow_json(q) for q in self.slow_queries],
            "index_health": [dataclasses.asdict(h) for h in self.index_health],
            "forecasts": [dataclasses.asdict(f) for f in self.forecasts],
            "settings": [dataclasses.asdict(s) for s in self.settings],
            "kpis": dataclasses.asdict(self.kpis),
            "notes": list(self.notes),
            "deliveries": [dataclasses.asdict(d) for d in self.deliveries],
            "delivery_notes": list(self.delivery_notes),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _slow_json(q: SlowQuery) -> dict[str, Any]:
    rec = q.recommendation
    out: dict[str, Any] = {
        "queryid": q.queryid,
        "queryids": [str(i) for i in q.queryids],
        "fingerprint": q.fingerprint,
        "query": q.query,
        "calls": q.calls,
        "mean_ms": round(q.mean_ms, 3),
        "total_ms": round(q.total_ms, 3),
        "status": q.status,
        "skip_reason": q.skip_reason,
        "explanation": None
        if q.explanation is None
        else {
            "intent": q.explanation.intent,
            "tables": list(q.explanation.tables),
            "complexity": q.explanation.complexity,
        },
        "recommendation": None,
        "regression_of": q.regression_of,
        "rejected_candidates": list(q.rejected),
    }
    if rec is not None:
        m = rec.measurement
        out["recommendation"] = {
            "type": rec.type,
            "sql": rec.sql,
            "rollback_sql": rec.rollback_sql,
            "reasoning": rec.reasoning,
            "confidence": round(rec.confidence, 3),
            "source": rec.source,
            "measurement": None
            if m is None
            else {
                "method": m.method,
                "before_ms": None if m.before_ms is None else round(m.before_ms, 3),
                "after_ms": None if m.after_ms is None else round(m.after_ms, 3),
                "before_cost": round(m.before_cost, 2),
                "after_cost": round(m.after_cost, 2),
                "gain_percent": round(m.gain_percent, 2),
                "worth_applying": m.worth_applying,
                "plan_changed": m.plan_changed,
                "samples": m.samples,
            },
            "action": rec.action,
            "pr_url": rec.pr_url,
        }
    return out
