"""The report as one self-contained HTML page: inline CSS and inline SVG charts, no script, no font, no image
and no request to anywhere (its Content-Security-Policy forbids them), so it opens the same from the admin
API, from a file, or attached to a ticket.

Charts: p95 statement latency, cache hit ratio and database size (daily health snapshots and pg_stat_statements
snapshots in the knowledge base), slow statements and recommendations per week (audit runs), the gain of
each applied optimisation (or, before any is applied, the measured gain of the last audit's recommendations).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pg_architect.auditor.delivery.weekly import Point, WeeklyReport, beyond_indexes, headline, top_line, where
from pg_architect.auditor.report import rewrite_lines

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 560, 200, 64, 36, 14, 14

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0cc}main{padding:20px 28px;max-width:1240px}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin-bottom:18px}
.kpi{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px #0001}
.kpi b{display:block;font-size:22px}.kpi span{color:#5b6575;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(580px,1fr));gap:14px}
figure{background:#fff;border-radius:8px;margin:0;padding:10px 12px;box-shadow:0 1px 2px #0001}
figcaption{font-weight:600;margin-bottom:4px}figure p.note{color:#5b6575;font-size:12px;margin:4px 0 0}
svg text{font-size:11px;fill:#5b6575}.line{fill:none;stroke:#2f6fde;stroke-width:2}.dot{fill:#2f6fde}
.bar{fill:#23a26d}.grid{stroke:#e3e6eb}.empty{color:#8a93a3;font-style:italic;padding:30px 0;text-align:center}
section{background:#fff;border-radius:8px;padding:12px 16px;margin:16px 0;box-shadow:0 1px 2px #0001}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef2;
vertical-align:top}code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;
border-radius:3px;word-break:break-word}.badge{padding:1px 6px;border-radius:9px;font-size:12px;background:#e7ecf7}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _scale(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = (0.0, hi * 1.2) if hi > 0 else (hi - 1, hi + 1)
    else:
        lo = 0.0 if lo >= 0 else lo
    return lo, hi


def line_chart(
    chart_id: str, title: str, points: Sequence[Point], fmt: Callable[[float], str], empty: str, note: str = ""
) -> str:
    if not points:
        return _figure(chart_id, title, f'<p class="empty">{_e(empty)}</p>', 0, note)
    xs = [p.at.timestamp() for p in points]
    lo, hi = _scale([p.value for p in points])
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0

    def x(t: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * ((t - x0) / span if x1 > x0 else 0.5)

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))

    parts = [_axes(lo, hi, fmt, y)]
    coords = " ".join(f"{x(t):.1f},{y(p.value):.1f}" for t, p in zip(xs, points, strict=True))
    if len(points) > 1:
        parts.append(f'<polyline class="line" points="{coords}"/>')
    for t, p in zip(xs, points, strict=True):
        parts.append(
            f'<circle class="dot" data-value="{p.value:.6g}" cx="{x(t):.1f}" cy="{y(p.value):.1f}" r="3.5">'
            f"<title>{_e(_when(p.at))}: {_e(fmt(p.value))}</title></circle>"
        )
    parts.append(f'<text x="{PAD_L}" y="{H - 8}">{_e(_when(points[0].at))}</text>')
    if len(points) > 1:
        parts.append(f'<text x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{_e(_when(points[-1].at))}</text>')
    return _figure(chart_id, title, _svg(title, parts), len(points), note)


def bar_chart(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str],
    empty: str,
    note: str = "",
) -> str:
    if not items:
        return _figure(chart_id, title, f'<p class="empty">{_e(empty)}</p>', 0, note)
    lo, hi = _scale([v for _, v in items] + [0.0])

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))

    slot = (W - PAD_L - PAD_R) / len(items)
    parts = [_axes(lo, hi, fmt, y)]
    for i, (label, value) in enumerate(items):
        left = PAD_L + i * slot + slot * 0.15
        top, bottom = min(y(value), y(0)), max(y(value), y(0))
        parts.append(
            f'<rect class="bar" data-value="{value:.6g}" x="{left:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(bottom - top, 1):.1f}"><title>{_e(label)}: {_e(fmt(value))}</title></rect>'
        )
        if len(items) <= 12:
            short = label if len(label) <= 14 else label[:13] + "…"
            parts.append(f'<text x="{left + slot * 0.35:.1f}" y="{H - 8}" text-anchor="middle">{_e(short)}</text>')
    return _figure(chart_id, title, _svg(title, parts), len(items), note)


def _axes(lo: float, hi: float, fmt: Callable[[float], str], y: Callable[[float], float]) -> str:
    out = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_e(fmt(v))}</text>')
    return "".join(out)


def _svg(title: str, parts: list[str]) -> str:
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{_e(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _figure(chart_id: str, title: str, body: str, n: int, note: str) -> str:
    extra = f'<p class="note">{_e(note)}</p>' if note else ""
    return (
        f'<figure class="chart" id="{chart_id}" data-points="{n}"><figcaption>{_e(title)}</figcaption>'
        f"{body}{extra}</figure>"
    )


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def _ms(v: float) -> str:
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms"


def _bytes(v: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(v) < 1024 or unit == "TB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TB"


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>{body}</main></body></html>\n"
    )


def weekly_page(w: WeeklyReport) -> str:
    """The weekly report page (``GET /admin/database/report`` with ``Accept: text/html``)."""
    t = w.trends
    run = w.run or {}
    title = f"pg-architect report: {run.get('database') or 'no audit yet'}"
    subtitle = (
        f"last audit {run.get('run_id')} started {str(run.get('started_at', ''))[:16]}; "
        f"generated {_when(w.generated_at)} UTC"
        if run
        else f"no successful audit yet; generated {_when(w.generated_at)} UTC"
    )
    kpis = "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in headline(w))
    if t.gain_per_applied:
        applied_title = "Gain per applied optimisation"
    elif t.expected_from_pending:
        applied_title = "Measured gain of the recommendations pending review"
    else:
        applied_title = "Measured gain of the last audit's recommendations"

    charts = [
        line_chart(
            "chart-p95",
            "p95 statement latency",
            t.p95_ms,
            _ms,
            "Needs two pg_stat_statements snapshots (daily snapshot or audit).",
            "Each statement's mean time between snapshots, weighted by its calls.",
        ),
        line_chart(
            "chart-cache",
            "Cache hit ratio",
            t.cache_hit_ratio,
            lambda v: f"{v * 100:.1f} %",
            "Needs a daily health snapshot (pg-architect snapshot).",
        ),
        line_chart(
            "chart-disk",
            "Database size",
            t.disk_bytes,
            _bytes,
            "Needs a daily health snapshot (pg-architect snapshot).",
        ),
        bar_chart(
            "chart-slow", "Slow statements per week", t.slow_per_week, lambda v: f"{v:.0f}", "No successful audit yet."
        ),
        bar_chart(
            "chart-recs",
            "Recommendations per week",
            t.recommendations_per_week,
            lambda v: f"{v:.0f}",
            "No successful audit yet.",
        ),
        bar_chart(
            "chart-gain",
            applied_title,
            t.gain_per_applied or t.expected_gain_last_run,
            lambda v: f"{v:.0f} %",
            "Nothing recommended or applied yet.",
            "" if t.gain_per_applied else "No optimisation has been applied yet: these are measured gains.",
        ),
    ]
    top = top_line(w)
    sections = [f'<div class="kpis">{kpis}</div>']
    if top:
        sections.append(f"<section><b>Top optimisation</b><p>{_e(top)}</p></section>")
    sections.append(f'<div class="charts">{"".join(charts)}</div>')
    sections.append(_pending(w))
    notes = run.get("delivery_notes") or []
    if notes:
        sections.append(
            "<section><b>Delivery of the last audit</b><ul>"
            + "".join(f"<li>{_e(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    sections.append(_beyond_indexes(run))
    if run:
        sections.append(_statements(run))
    return _page(title, subtitle, "".join(sections))


def _beyond_indexes(run: dict[str, Any] | None) -> str:
    lines = beyond_indexes(run)
    if not lines:
        return ""
    items = "".join(f"<li>{_e(x)}</li>" for x in lines)
    return f"<section><b>Beyond indexes (advisory)</b><ul>{items}</ul></section>"


def _pending(w: WeeklyReport) -> str:
    if not w.pending:
        return "<section><b>Pending review</b><p>Nothing is waiting for a decision.</p></section>"
    rows = "".join(
        f"<tr><td><code>{_e(d.sql)}</code></td><td>{d.confidence:.2f} ({_e(d.action)})</td>"
        f"<td>{d.gain_percent or 0:.0f} %</td><td>{_link(d.pr_url, where(d))}</td></tr>"
        for d in w.pending
    )
    return (
        "<section><b>Pending review</b><table><tr><th>migration</th><th>confidence</th><th>gain</th>"
        f"<th>where</th></tr>{rows}</table></section>"
    )


def _link(url: str | None, text: str) -> str:
    if url and url.startswith(("https://", "http://")):
        return f'<a href="{_e(url)}">{_e(text)}</a>'
    return _e(text)


def _statements(doc: dict[str, Any]) -> str:
    rows = []
    for q in doc.get("slow_queries") or []:
        rec = q.get("recommendation") if q["status"] == "recommended" else None
        m = (rec or {}).get("measurement") or {}
        what = (
            f"<code>{_e(rec['sql'])}</code><br>{m.get('gain_percent', 0):.0f} % faster, confidence "
            f'{rec["confidence"]:.2f} <span class="badge">{_e(rec["action"])}</span>'
            if rec
            else _e(q.get("skip_reason") or "")
        )
        rewritten = rewrite_lines(doc, q)
        if rewritten:  # the evidence of a rewrite (or an advisory one), line by line
            what = f"<b>{_e(rewritten[0])}</b><br>" + "<br>".join(
                f"<code>{_e(line)}</code>" for line in rewritten[1:]
            )
        rows.append(
            f'<tr><td><span class="badge">{_e(q["status"])}</span></td><td>{q["calls"]:,}</td>'
            f"<td>{_ms(q['mean_ms'])}</td><td><code>{_e(' '.join(q['query'].split())[:400])}</code></td>"
            f"<td>{what}</td></tr>"
        )
    return (
        "<section><b>Slow statements of the audit</b><table><tr><th>status</th><th>calls</th><th>mean</th>"
        f"<th>statement (normalised)</th><th>recommendation</th></tr>{''.join(rows)}</table></section>"
    )


def run_page(doc: dict[str, Any]) -> str:
    """One run's page (``GET /admin/database/runs/{id}`` with ``Accept: text/html``)."""
    k = doc.get("kpis") or {}
    title = f"pg-architect audit {doc.get('run_id')}"
    subtitle = (
        f"database {doc.get('database') or '?'}, {doc.get('status')}, started {str(doc.get('started_at', ''))[:19]}, "
        f"finished {str(doc.get('finished_at') or '-')[:19]}"
    )
    cards = [
        ("Slow statements", k.get("slow_queries", 0)),
        ("Recommended", k.get("recommended", 0)),
        ("Pull requests opened", k.get("prs_created", 0)),
        ("Manual review", k.get("manual_review", 0)),
        ("Average confidence", f"{k.get('avg_confidence', 0):.2f}"),
        ("Average gain", f"{k.get('avg_gain_percent', 0):.0f} %"),
    ]
    body = [
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(n)}</span></div>' for n, v in cards)
        + "</div>"
    ]
    if doc.get("error"):
        body.append(f"<section><b>Error</b><p>{_e(doc['error'])}</p></section>")
    gains = [
        (f"#{i}", float((q["recommendation"].get("measurement") or {}).get("gain_percent", 0)))
        for i, q in enumerate(doc.get("slow_queries") or [], 1)
        if q.get("status") == "recommended" and q.get("recommendation")
    ]
    body.append(
        '<div class="charts">'
        + bar_chart(
            "chart-gain",
            "Measured gain per recommendation (statement #)",
            gains,
            lambda v: f"{v:.0f} %",
            "Nothing recommended in this run.",
        )
        + "</div>"
    )
    notes = doc.get("delivery_notes") or []
    if notes:
        body.append("<section><b>Delivery</b><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>")
    body.append(_beyond_indexes(doc))
    if doc.get("slow_queries") is not None:
        body.append(_statements(doc))
    return _page(title, subtitle, "".join(body))
