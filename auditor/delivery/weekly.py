"""The weekly report's content, from the knowledge base: the last successful audit, what was delivered, what
is pending review, this month's applied optimisations, and the trends the report page draws.

Rendered as markdown here, as Slack Block Kit by ``slack`` and as an HTML page by ``html``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from pg_architect.auditor.kb import AppliedGain, DeliveryView, KnowledgeBase, LatencyPoint, RunSummary

TREND_DAYS = 90


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    value: float


@dataclasses.dataclass(frozen=True, slots=True)
class Trends:
    p95_ms: tuple[Point, ...]
    cache_hit_ratio: tuple[Point, ...]
    disk_bytes: tuple[Point, ...]
    slow_per_week: tuple[tuple[str, float], ...]
    recommendations_per_week: tuple[tuple[str, float], ...]
    gain_per_applied: tuple[tuple[str, float], ...]  # (label, gain %)
    expected_gain_last_run: tuple[tuple[str, float], ...]
    expected_from_pending: bool = False  # the gains are those of the recommendations pending review


@dataclasses.dataclass(frozen=True, slots=True)
class WeeklyReport:
    generated_at: datetime
    run: dict[str, Any] | None  # the last successful audit's report (None: no audit yet)
    deliveries: tuple[DeliveryView, ...]  # the run's
    pending: tuple[DeliveryView, ...]  # every migration waiting for a person (branch or open pull request)
    applied: tuple[AppliedGain, ...]  # this month's
    trends: Trends
    report_url: str

    # -- the design's numbers -------------------------------------------------------------------------------
    @property
    def kpis(self) -> dict[str, Any]:
        return dict((self.run or {}).get("kpis") or {})

    @property
    def prs_created(self) -> int:
        return sum(1 for d in self.deliveries if d.pr_url)

    @property
    def branches_written(self) -> int:
        return sum(1 for d in self.deliveries if d.channel == "local_git")

    @property
    def top(self) -> dict[str, Any] | None:
        """The recommended statement with the highest measured gain."""
        recommended = [
            q
            for q in (self.run or {}).get("slow_queries") or []
            if q["status"] == "recommended" and q["recommendation"]
        ]
        return max(
            recommended,
            key=lambda q: (q["recommendation"].get("measurement") or {}).get("gain_percent", 0),
            default=None,
        )

    def delivery_of(self, fingerprint: str) -> DeliveryView | None:
        for d in (self.run or {}).get("deliveries") or []:
            if d.get("fingerprint") == fingerprint:
                return next((x for x in self.deliveries if x.recommendation_id == d["recommendation_id"]), None)
        return None

    @property
    def average_applied_gain(self) -> float | None:
        gains = [a.gain_percent for a in self.applied if a.gain_percent is not None]
        return sum(gains) / len(gains) if gains else None

    @property
    def time_saved_s(self) -> float:
        """Estimated per week: calls in the audited window x the measured saving per call, over applied ones."""
        return sum((a.calls or 0) * (a.mean_ms or 0.0) * (a.gain_percent or 0.0) / 100.0 / 1000.0 for a in self.applied)


def where(d: DeliveryView) -> str:
    """Where a migration (or a rewrite's issue) is, in words."""
    if d.channel == "github_issue":
        site = f", call site {d.migration_path}" if d.migration_path else ""
        return f"issue #{d.pr_number} {d.pr_url} (a rewrite: the application's code changes{site})"
    if d.pr_url:
        state = {"pr_open": "open", "merged": "merged", "closed": "closed without merge"}.get(d.state, d.state)
        return f"pull request #{d.pr_number} ({state}) {d.pr_url}"
    return f"branch {d.branch} of {d.repo}"


def build(kb: KnowledgeBase, report_url: str, now: datetime | None = None) -> WeeklyReport:
    run = kb.latest_report("ok")
    run_id = run.get("run_id") if run else None
    deliveries = tuple(kb.deliveries(run_id=run_id)) if run_id else ()
    pending = tuple(kb.deliveries(states=["committed", "pr_open", "issue_open"]))
    t = trends(kb, run, datname=(run or {}).get("database"))
    if not t.expected_gain_last_run and pending:
        # The last audit proposed nothing new (what it found is pending already): show what waits for a person.
        gains = tuple((f"#{d.recommendation_id}", float(d.gain_percent or 0)) for d in reversed(pending))
        t = dataclasses.replace(t, expected_gain_last_run=gains, expected_from_pending=True)
    return WeeklyReport(
        generated_at=now or datetime.now(UTC),
        run=run,
        deliveries=deliveries,
        pending=pending,
        applied=tuple(kb.applied_gains(31)),
        trends=t,
        report_url=report_url,
    )


def weighted_quantile(values: list[float], weights: list[float], q: float) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(w for _, w in pairs)
    acc = 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= q * total:
            return value
    return pairs[-1][0] if pairs else 0.0


def _p95(points: list[LatencyPoint]) -> tuple[Point, ...]:
    """p95 of statement latency per interval: each statement's interval mean, weighted by its calls (pg_stat_
    statements keeps no per-call times; the exporter's histogram is finer, this is what the knowledge base has)."""
    return tuple(Point(p.taken_at, weighted_quantile(p.mean_ms, p.calls, 0.95)) for p in points if p.calls)


def _week(at: datetime) -> str:
    monday = (at - timedelta(days=at.weekday())).date()
    return monday.isoformat()


def trends(kb: KnowledgeBase, run: dict[str, Any] | None, datname: str | None) -> Trends:
    health = kb.all_health(TREND_DAYS)
    cache: list[Point] = []
    disk: list[Point] = []
    previous: dict[str, Any] | None = None
    for h in health:
        if datname is not None and h.datname not in (datname, None):
            continue
        db = next((d for d in h.metrics.get("databases", []) if d.get("datname") == (datname or h.datname)), None)
        if db is None:
            continue
        disk.append(Point(h.taken_at, float(db.get("size_bytes", 0))))
        hit, read = float(db.get("blks_hit", 0)), float(db.get("blks_read", 0))
        if previous is not None and hit >= previous["blks_hit"] and read >= previous["blks_read"]:
            dh, dr = hit - previous["blks_hit"], read - previous["blks_read"]
            if dh + dr > 0:
                cache.append(Point(h.taken_at, dh / (dh + dr)))
        elif previous is None and hit + read > 0:
            cache.append(Point(h.taken_at, hit / (hit + read)))  # since statistics began
        previous = {"blks_hit": hit, "blks_read": read}
    runs: list[RunSummary] = [r for r in kb.run_history(TREND_DAYS) if r.status == "ok"]
    slow: dict[str, float] = {}
    recs: dict[str, float] = {}
    for r in runs:
        slow[_week(r.started_at)] = slow.get(_week(r.started_at), 0) + r.slow_queries
        recs[_week(r.started_at)] = recs.get(_week(r.started_at), 0) + r.recommended
    applied = kb.applied_gains(TREND_DAYS)
    expected = [
        (
            f"#{i} {(q['recommendation'].get('sql') or '')[:60]}",
            float(q["recommendation"]["measurement"]["gain_percent"]),
        )
        for i, q in enumerate((run or {}).get("slow_queries") or [], 1)
        if q["status"] == "recommended" and q.get("recommendation") and q["recommendation"].get("measurement")
    ]
    return Trends(
        p95_ms=_p95(kb.latency_history(TREND_DAYS)),
        cache_hit_ratio=tuple(cache),
        disk_bytes=tuple(disk),
        slow_per_week=tuple(sorted(slow.items())),
        recommendations_per_week=tuple(sorted(recs.items())),
        gain_per_applied=tuple((f"#{a.recommendation_id}", float(a.gain_percent or 0)) for a in reversed(applied)),
        expected_gain_last_run=tuple(expected),
    )


# -- markdown ---------------------------------------------------------------------------------------------------


def headline(w: WeeklyReport) -> list[tuple[str, str]]:
    """The design's numbers, as (label, value)."""
    k = w.kpis
    avg = w.average_applied_gain
    return [
        ("Slow queries detected", str(k.get("slow_queries", 0))),
        ("Optimisations recommended", str(k.get("recommended", 0))),
        ("Pull requests created", str(w.prs_created)),
        ("Migrations on local branches", str(w.branches_written)),
        ("Manual review", str(k.get("manual_review", 0))),
        ("Applied this month", str(len(w.applied))),
        ("Average gain (applied)", f"{avg:.0f} %" if avg is not None else "none yet"),
        ("Time saved (estimated, per week)", f"{w.time_saved_s:,.1f} s" if w.applied else "none yet"),
    ]


def top_line(w: WeeklyReport) -> str | None:
    top = w.top
    if top is None:
        return None
    rec = top["recommendation"]
    gain = (rec.get("measurement") or {}).get("gain_percent", 0)
    d = w.delivery_of(top.get("fingerprint", ""))
    place = where(d) if d is not None else "no pull request or branch (see delivery)"
    return f"{rec['sql']} ({gain:.0f} % faster, confidence {rec['confidence']:.2f}): {place}"


def beyond_indexes(run: dict[str, Any] | None) -> list[str]:
    """The last audit's advisory recommendations beyond indexes, one line each: partitioning plans (from the growth
    forecasts), caches (per statement) and settings. Markdown, Slack and HTML show the same lines."""
    if not run:
        return []
    out: list[str] = []
    for f in run.get("forecasts") or []:
        rec, plan = f.get("recommendation"), f.get("partition")
        if not isinstance(rec, dict) or not plan:
            continue
        m = rec.get("measurement") or {}
        measured = (
            f"measured on a copy ({plan.get('where_measured')}): {m.get('gain_percent', 0):.0f} % less planner cost, "
            f"{plan.get('partitions_scanned') or 0:.1f} of {plan.get('partitions_measured')} partitions read"
            if m
            else "not measured"
        )
        out.append(
            f"Partition {f['table']} by range of {plan['key']}, {plan['interval']} per partition ({measured}; "
            f"confidence {rec['confidence']:.2f}, {rec['action']}): migration and rollback in the full report"
        )
    for q in run.get("slow_queries") or []:
        rec = q.get("recommendation")
        if q.get("status") == "recommended" and rec and rec.get("type") == "cache":
            out.append(
                f"Cache statement {q['queryid']}: {rec['sql'].lstrip('- ')} (advisory, confidence "
                f"{rec['confidence']:.2f})"
            )
    for st in run.get("settings") or []:
        restart = ", needs a restart" if st.get("restart") else ""
        out.append(
            f"Setting {st['name']} ({st.get('scope', 'server')}): {st['current']} -> {st['suggested']} "
            f"(confidence {st['confidence']:.2f}{restart})"
        )
    return out


def markdown(w: WeeklyReport) -> str:
    if w.run is None:
        return "## pg-architect weekly report\n\nNo successful audit yet: run `pg-architect audit`.\n"
    run = w.run
    out = [
        f"## pg-architect weekly report: {run.get('database') or '?'}",
        "",
        f"Audit `{run['run_id']}` of {str(run.get('started_at', ''))[:16]}.",
        "",
        "| | |",
        "|---|---:|",
        *[f"| {label} | {value} |" for label, value in headline(w)],
        "",
    ]
    top = top_line(w)
    if top:
        out += [f"**Top optimisation:** {top}", ""]
    if w.pending:
        out += ["### Pending review", ""]
        out += [f"- `{d.sql}`: {where(d)}" for d in w.pending]
        out.append("")
    if w.applied:
        out += ["### Applied this month", ""]
        out += [f"- `{a.sql}`: {a.gain_percent or 0:.0f} % faster" for a in w.applied]
        out.append("")
    advisory = beyond_indexes(run)
    if advisory:
        out += ["### Beyond indexes (advisory)", ""]
        out += [f"- {line}" for line in advisory]
        out.append("")
    if run.get("delivery_notes"):
        out += ["### Delivery", ""]
        out += [f"- {n}" for n in run["delivery_notes"]]
        out.append("")
    out.append(f"Full report: {w.report_url}")
    return "\n".join(out) + "\n"
