"""Rendering an audit report: the contract's JSON, plain text for a terminal, Markdown for Slack or a PR."""

from __future__ import annotations

import json
from typing import Any

from pg_architect.auditor.llm.sanitize import model_text
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


def rewrite_lines(doc: dict[str, Any], q: dict[str, Any]) -> list[str]:
    """A rewrite (verified, or advisory) in a few lines: the rule, both statements, the evidence, the plans."""
    rec = q.get("recommendation") or {}
    eq = rec.get("equivalence")
    if rec.get("type") != "rewrite" or not eq:
        return []
    rule = eq.get("rule") or "the model's"
    if eq.get("verified"):
        rows = ", ".join(str(n) for n in eq.get("rows") or [])
        head = f"rewrite ({rule}), verified: the same rows on all {eq.get('sets_compared')} sampled parameter " \
            f"set(s) ({rows} row(s)), compared as multisets in a rolled-back read-only transaction"
    else:
        head = f"advisory rewrite ({rule}): not verified equal, it changes what the statement takes or returns"
    m = rec.get("measurement") or {}
    lines = [head, f"original:  {' '.join(str(eq.get('original_sql')).split())}", f"rewritten: {rec['sql']}"]
    if eq.get("reason"):
        lines.append(f"why: {eq['reason']}")
    if m:
        lines.append(
            f"measured ({m.get('method')}): {_ms(m.get('before_ms'))} -> {_ms(m.get('after_ms'))}, "
            f"gain {m.get('gain_percent', 0):.0f} %"
        )
    if eq.get("plan_before"):
        lines.append(f"plan before: {eq['plan_before']}")
    if eq.get("plan_after"):
        lines.append(f"plan after:  {eq['plan_after']}")
    issue = next(
        (d for d in doc.get("deliveries") or [] if d.get("fingerprint") == q.get("fingerprint") and d.get("pr_url")),
        None,
    )
    where = f"issue #{issue['pr_number']} {issue['pr_url']}" if issue else "change it where the application sends it"
    lines.append(
        f"confidence {rec['confidence']:.2f} -> {rec['action']} (source: {rec.get('source')}): never a migration; "
        f"{where}"
    )
    return lines


def lifecycle_lines(doc: dict[str, Any]) -> list[str]:
    """The lifecycle in a few lines: waiting for review, reminders, applied this month, outcomes, time saved."""
    lc = doc.get("lifecycle")
    if not lc:
        return []
    pending = lc.get("pending_review", 0)
    waiting = (
        f"{pending} pending review, oldest {lc['oldest_pending_days']:.0f} day"
        f"{'' if round(lc['oldest_pending_days']) == 1 else 's'}"
        if pending and lc.get("oldest_pending_days") is not None
        else "nothing pending review"
    )
    if lc.get("accepted_waiting"):
        waiting += f"; {lc['accepted_waiting']} accepted, waiting to be applied"
    gain = lc.get("average_gain_percent")
    accuracy = lc.get("accuracy_ratio")
    lines = [
        waiting,
        f"applied this month: {lc.get('applied_this_month', 0)}  "
        f"average gain: {'-' if gain is None else f'{gain:.0f} %'}  "
        f"time saved: {_duration(lc.get('time_saved_seconds') or 0.0)}  "
        f"accuracy: {'-' if accuracy is None else f'{accuracy:.0%}'} of {lc.get('verified', 0)} verified",
    ]
    for r in lc.get("reminders") or []:
        lines.append(
            f"reminder: #{r['recommendation_id']} has waited {r['age_days']:.0f} days ({r['status']}, "
            f"over {lc.get('reminder_after_days')}): {r['sql']}"
        )
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _rec_state(rec: dict[str, Any]) -> str:
    state = rec.get("status") or "-"
    outcome = rec.get("outcome")
    if outcome:
        state += (
            f", {outcome['result']}: {_ms(outcome['before_mean_ms'])} -> {_ms(outcome['after_mean_ms'])} "
            f"(measured {outcome['measured_gain_percent']:.0f} %)"
        )
    return state


def llm_lines(llm: dict[str, Any] | None) -> list[str]:
    """The model's part of one statement, labelled as model output (its text made inert once more)."""
    if not llm:
        return []
    out: list[str] = []
    e = llm.get("explanation")
    if e:
        out.append(
            f"model ({model_text(e.get('model'), 80)}, model output): {model_text(e.get('intent'))} "
            f"(complexity {model_text(e.get('complexity'), 10)}). {model_text(e.get('business_context'))}".rstrip()
        )
    p = llm.get("proposal")
    if p and p.get("type") != "none":
        kind = model_text(p.get("type"), 20)
        out.append(f"model's proposal ({kind}): {p.get('status')}: {model_text(p.get('reason'))}")
    out.extend(f"model: {model_text(n)}" for n in llm.get("notes") or [])
    return out


def beyond_index_lines(item: dict[str, Any]) -> list[str]:
    """A partition recommendation of a forecast (or a cache one of a statement), in a few lines: what, how sure,
    measured how, and the migration with its rollback."""
    rec = item.get("recommendation")
    if not isinstance(rec, dict) or rec.get("type") not in ("partition", "cache"):
        return []
    part = item.get("partition") or {}
    head = f"partition {part.get('key')}, {part.get('interval')}" if rec["type"] == "partition" else "cache"
    m = rec.get("measurement") or {}
    measured = (
        f"measured ({m.get('method')}): cost {m.get('before_cost', 0):,.0f} -> {m.get('after_cost', 0):,.0f}, "
        f"gain {m.get('gain_percent', 0):.0f} % (timed {_ms(m.get('before_ms'))} -> {_ms(m.get('after_ms'))})"
        if m
        else "not measured"
    )
    out = [f"{head}: confidence {rec['confidence']:.2f} -> {rec['action']}, {measured}", rec["reasoning"]]
    if rec["type"] == "partition":
        out += ["migration:", *rec["sql"].splitlines(), "rollback:", *(rec.get("rollback_sql") or "").splitlines()]
    return out


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
    lines += [f"lifecycle: {line}" for line in lifecycle_lines(doc)]
    if doc.get("stuck"):
        lines.append("STUCK: slow statements, none of them handled and no recommendation could be made")
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
        lines.extend(f"   {line}" for line in llm_lines(q.get("llm")))
        rec = q.get("recommendation")
        rewritten = rewrite_lines(doc, q)
        if rewritten:
            lines.extend(f"   {line}" for line in rewritten)
        elif rec and q["status"] == "recommended" and rec.get("type") == "cache":  # advisory, nothing measured
            lines += [f"   {line}" for line in beyond_index_lines(q)]
        elif rec and q["status"] == "recommended":
            m = rec.get("measurement") or {}
            lines.append(f"   recommend: {rec['sql']}")
            lines.append(f"   rollback:  {rec['rollback_sql']}")
            values = {"server_log": ", values of logged calls", "server_log+pg_stats": ", logged and drawn values"}.get(
                str(m.get("parameters")), ""
            )
            lines.append(
                f"   measured ({m.get('method')}{values}): {_ms(m.get('before_ms'))} -> {_ms(m.get('after_ms'))}, "
                f"cost {m.get('before_cost', 0):,.0f} -> {m.get('after_cost', 0):,.0f}, "
                f"gain {m.get('gain_percent', 0):.0f} %"
            )
            lines.append(
                f"   confidence {rec['confidence']:.2f} -> {rec['action']}{_delivered(doc, q)}  [{_rec_state(rec)}]"
                f"  (source: {rec.get('source')})"
            )
        if q.get("skip_reason"):
            lines.append(f"   reason: {q['skip_reason']}")
    if doc.get("delivery_notes"):
        lines.append("")
        lines.append("delivery:")
        lines += [f"  - {note}" for note in doc["delivery_notes"]]
    if doc.get("regressions"):
        lines.append("")
        lines.append("regressions (week over week):")
        for r in doc["regressions"]:
            lines.append(
                f"  - x{r['ratio']}: {_ms(r['previous_mean_ms'])} -> {_ms(r['mean_ms'])}, {r['calls']} calls "
                f"(queryid {r['queryid']})  {' '.join(r['query'].split())[:160]}"
            )
            if r.get("plan_change"):
                lines.append(f"    {r['plan_change']}")
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
                + (f"  ({f['note']})" if f.get("note") else "")
            )
            lines += [f"    {line}" for line in beyond_index_lines(f)]
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
    lc_lines = lifecycle_lines(doc)
    if lc_lines:
        out += ["", "### Recommendations so far", ""] + [f"- {line}" for line in lc_lines]
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
                f"{'rewrite: ' if rec.get('type') == 'rewrite' else ''}"
                f"`{rec['sql']}`{' (source: llm, verified)' if rec.get('source') == 'llm' else ''} | "
                f"{m.get('gain_percent', 0):.0f} % | {rec['confidence']:.2f} ({rec['action']}) |"
                if rec
                else f"{(q.get('skip_reason') or '').replace('|', '/')[:160]} | | |"
            )
        )
    rewritten = [(i, rewrite_lines(doc, q)) for i, q in enumerate(doc.get("slow_queries") or [], 1)]
    if any(lines for _, lines in rewritten):
        out += ["", "### Rewrites", ""]
        for i, lines in rewritten:
            if lines:
                out.append(f"- **#{i}** " + lines[0])
                out += [f"  - `{line}`" if line.startswith(("original:", "rewritten:")) else f"  - {line}"
                        for line in lines[1:]]
    if doc.get("delivery_notes"):
        out += ["", "### Delivery", ""]
        out += [f"- {note}" for note in doc["delivery_notes"]]
    if doc.get("regressions"):
        out += ["", "### Regressions (week over week)", ""]
        for r in doc["regressions"]:
            stmt = " ".join(r["query"].split())[:120]
            change = f" {r['plan_change']}" if r.get("plan_change") else ""
            out.append(
                f"- x{r['ratio']} `{stmt}`: {_ms(r['previous_mean_ms'])} -> {_ms(r['mean_ms'])}, {r['calls']} calls."
                + change
            )
    explained = [(i, q) for i, q in enumerate(doc.get("slow_queries") or [], 1) if q.get("llm")]
    if explained:
        out += ["", "### Model output", ""]
        for i, q in explained:
            out += [f"- **#{i}** " + " ".join(llm_lines(q["llm"])).replace("|", "/")]
    if doc.get("index_health"):
        out += ["", "### Index health", ""]
        out += [f"- **{h['reason']}** `{h['index']}`: {h['evidence']} (`{h['sql']}`)" for h in doc["index_health"]]
    planned = [f for f in doc.get("forecasts") or [] if beyond_index_lines(f)]
    if planned:
        out += ["", "### Partitioning (from the growth forecasts)", ""]
        for f in planned:
            rec = f["recommendation"]
            head, reasoning = beyond_index_lines(f)[:2]
            out += [f"- **{f['table']}**: {head}. {reasoning}", "", "```sql", rec["sql"], "```", "", "Rollback:", ""]
            out += ["```sql", rec.get("rollback_sql") or "", "```"]
    if doc.get("settings"):
        out += ["", "### Settings (advisory)", ""]
        out += [
            f"- **{s['name']}** ({s.get('scope', 'server')}): {s['current']} -> {s['suggested']}, confidence "
            f"{s['confidence']:.2f}{', needs a restart' if s.get('restart') else ''}: {s['evidence']}"
            + (f" (`{s['sql']}`, rollback `{s.get('rollback_sql', '')}`)" if s.get("sql") else "")
            for s in doc["settings"]
        ]
    return "\n".join(out)
