"""Rendering an audit report: the contract's JSON, plain text for a terminal, Markdown for Slack or a PR."""

from __future__ import annotations

import json
from typing import Any

from pg_architect.auditor.models import AuditReport


def render(report: AuditReport | dict[str, Any], fmt: str) -> str:
    doc = report.as_json() if isinstance(report, AuditReport) else report
    if fmt == "json":
        return json.dumps(doc, indent=2, default=str)
    if fmt == "markdown":
        return _markdown(doc)
    return _text(doc)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} ms" if value >= 10 else f"{value:.3g} ms"


def _delivered(doc: dict[str, Any], q: dict[str, Any]) -> str:
    """What happened to a PR-level recommendation, as it happened (never the action alone)."""
    rec = q.get("recommendation") or {}
    if rec.get("action") not in ("pr_merge", "pr_review"):
        return " (logged, no pull request)" if rec.get("action") == "log" else " (flagged for investigation)"
    for d in doc.get("deliveries") or []:
        if d.get("fingerprint") == q.get("fingerprint"):
            if d.get("pr_url"):
                return f": pull request #{d['pr_number']} ({d['state']}) {d['pr_url']}"
            return f": migration on branch {d['branch']} of {d['repo']}"
    if doc.get("dry_run"):
        return ": dry run, nothing written"
    return ": no pull request (see delivery below)"


def _text(doc: dict[str, Any]) -> str:
    lines = [f"pg-architect audit {doc['run_id']}  [{doc['status']}]  database {doc.get('database') or '?'}"]
    w = doc.get("window") or {}
    lines.append(f"window: {w.get('from') or 'since the last reset'} .. {w.get('to')}  ({w.get('source')})")
    for note in doc.get("notes") or []:
        lines.append(f"note: {note}")
    if doc.get("error"):
        lines.append(f"error: {doc['error']}")
    k = doc.get("kpis") or {}
    lines.append(
        f"slow statements: {k.get('slow_queries', 0)}  recommended: {k.get('recommended', 0)}  "
        f"avg confidence: {k.get('avg_confidence', 0):.2f}  avg gain: {k.get('avg_gain_percent', 0):.0f} %"
    )
    for i, q in enumerate(doc.get("slow_queries") or [], 1):
        lines.append("")
        lines.append(
            f"{i}. [{q['status']}] {q['calls']} calls, mean {_ms(q['mean_ms'])}, total {_ms(q['total_ms'])}"
            f"  (queryid {q['queryid']})"
        )
        lines.append(f"   {' '.join(q['query'].split())[:300]}")
        if q.get("explanation"):
            e = q["explanation"]
            lines.append(f"   intent: {e['intent']}  (complexity {e['complexity']})")
        rec = q.get("recommendation")
        if rec and q["status"] == "recommended":
            m = rec.get("measurement") or {}
            lines.append(f"   recommend: {rec['sql']}")
            lines.append(f"   rollback:  {rec['rollback_sql']}")
            lines.append(
                f"   measured ({m.get('method')}): {_ms(m.get('before_ms'))} -> {_ms(m.get('after_ms'))}, "
                f"cost {m.get('before_cost', 0):,.0f} -> {m.get('after_cost', 0):,.0f}, "
                f"gain {m.get('gain_percent', 0):.0f} %"
            )
            lines.append(f"   confidence {rec['confidence']:.2f} -> {rec['action']}{_delivered(doc, q)}")
        if q.get("skip_reason"):
            lines.append(f"   reason: {q['skip_reason']}")
    if doc.get("delivery_notes"):
        lines.append("")
        lines.append("delivery:")
        lines += [f"  - {note}" for note in doc["delivery_notes"]]
    if doc.get("index_health"):
        lines.append("")
        lines.append("index health:")
        for h in doc["index_health"]:
            lines.append(f"  - {h['reason']}: {h['index']} ({h['evidence']})  -> {h['sql']}")
    if doc.get("forecasts"):
        lines.append("")
        lines.append("growth (90 days):")
        for f in doc["forecasts"]:
            lines.append(
                f"  - {f['table']}: {f['size_bytes']:,} -> {f['projected_bytes_90d']:,} bytes"
                + (f"  ({f['recommendation']})" if f.get("recommendation") else "")
            )
    if doc.get("settings"):
        lines.append("")
        lines.append("settings (advisory):")
        for s in doc["settings"]:
            restart = ", needs a restart" if s.get("restart") else ""
            lines.append(
                f"  - {s['name']} ({s.get('scope', 'server')}): {s['current']} -> {s['suggested']}, "
                f"confidence {s['confidence']:.2f}{restart}: {s['evidence']}"
            )
            if s.get("sql"):
                lines.append(f"    apply: {s['sql']}    rollback: {s.get('rollback_sql', '')}")
    return "\n".join(lines)


def _markdown(doc: dict[str, Any]) -> str:
    k = doc.get("kpis") or {}
    w = doc.get("window") or {}
    out = [
        f"## pg-architect audit `{doc['run_id']}` ({doc['status']})",
        "",
        f"Database **{doc.get('database') or '?'}**, window {w.get('from') or 'since the last reset'} to "
        f"{w.get('to')} ({w.get('source')}).",
        "",
        "| slow statements | recommended | manual review | avg confidence | avg gain |",
        "|---:|---:|---:|---:|---:|",
        f"| {k.get('slow_queries', 0)} | {k.get('recommended', 0)} | {k.get('manual_review', 0)} | "
        f"{k.get('avg_confidence', 0):.2f} | {k.get('avg_gain_percent', 0):.0f} % |",
        "",
    ]
    for note in doc.get("notes") or []:
        out.append(f"> {note}")
    out += [
        "",
        "| # | status | calls | mean | statement | recommendation | gain | confidence |",
        "|---:|---|---:|---:|---|---|---:|---:|",
    ]
    for i, q in enumerate(doc.get("slow_queries") or [], 1):
        rec = q.get("recommendation") if q["status"] == "recommended" else None
        m = (rec or {}).get("measurement") or {}
        stmt = " ".join(q["query"].split())[:120].replace("|", "\\|")
        out.append(
            f"| {i} | {q['status']} | {q['calls']} | {_ms(q['mean_ms'])} | `{stmt}` | "
            + (
                f"`{rec['sql']}` | {m.get('gain_percent', 0):.0f} % | {rec['confidence']:.2f} ({rec['action']}) |"
                if rec
                else f"{(q.get('skip_reason') or '').replace('|', '/')[:160]} | | |"
            )
        )
    if doc.get("delivery_notes"):
        out += ["", "### Delivery", ""]
        out += [f"- {note}" for note in doc["delivery_notes"]]
    if doc.get("index_health"):
        out += ["", "### Index health", ""]
        out += [f"- **{h['reason']}** `{h['index']}`: {h['evidence']} (`{h['sql']}`)" for h in doc["index_health"]]
    if doc.get("settings"):
        out += ["", "### Settings (advisory)", ""]
        out += [
            f"- **{s['name']}** ({s.get('scope', 'server')}): {s['current']} -> {s['suggested']}, confidence "
            f"{s['confidence']:.2f}{', needs a restart' if s.get('restart') else ''}: {s['evidence']}"
            + (f" (`{s['sql']}`, rollback `{s.get('rollback_sql', '')}`)" if s.get("sql") else "")
            for s in doc["settings"]
        ]
    return "\n".join(out)
