"""The weekly report as Slack Block Kit, through an incoming webhook.

Slack's limits are respected, not hoped for: at most 50 blocks, a header's text at most 150 characters, a
section's text at most 3000, a fields item at most 2000 and 10 fields per section, the fallback ``text`` at
most 40,000. Longer content is cut with a pointer to the full report. 429 (with ``Retry-After``) and 5xx are
retried a bounded number of times (``http.request``); any other refusal (``invalid_blocks``, ``no_service``)
is an error with Slack's own word for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pg_architect.auditor.delivery.http import DeliveryError, host_of, post_json
from pg_architect.auditor.delivery.weekly import WeeklyReport, beyond_indexes, headline, top_line, where
from pg_architect.core.errors import redact

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_TEXT = 40_000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, MAX_SECTION)}}


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(w: WeeklyReport) -> dict[str, Any]:
    """The webhook payload: Block Kit blocks and the fallback text."""
    if w.run is None:
        text = "pg-architect weekly report: no successful audit yet."
        return {"text": text, "blocks": [_section(text)]}
    title = _cut(f"pg-architect weekly report: {w.run.get('database') or '?'}", MAX_HEADER)
    out: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    fields = [{"type": "mrkdwn", "text": _cut(f"*{label}*\n{value}", MAX_FIELD)} for label, value in headline(w)][
        :MAX_FIELDS
    ]
    out.append({"type": "section", "fields": fields})
    top = top_line(w)
    if top:
        out.append(_section(f"*Top optimisation*\n{_escape(top)}"))
    if w.pending:
        out.append({"type": "divider"})
        out.append(_section("*Pending review*"))
    items = [_section(f"`{_escape(d.sql)}`\n{_escape(where(d))}") for d in w.pending]
    room = MAX_BLOCKS - len(out) - 3
    if len(items) > room:
        items = [*items[: room - 1], _section(f"… and {len(items) - room + 1} more in the full report")]
    out += items
    notes = (w.run or {}).get("delivery_notes") or []
    if notes:
        out.append(_section("*Delivery*\n" + "\n".join(f"• {_escape(n)}" for n in notes)))
    advisory = beyond_indexes(w.run)
    if advisory:
        out.append(_section("*Beyond indexes (advisory)*\n" + "\n".join(f"• {_escape(a)}" for a in advisory)))
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{w.report_url}|Full report>"}]})
    fallback = _cut(f"{title}: " + ", ".join(f"{label.lower()} {value}" for label, value in headline(w)[:5]), MAX_TEXT)
    return {"text": fallback, "blocks": out[:MAX_BLOCKS]}


def send(webhook_url: str, payload: dict[str, Any]) -> None:
    """Post to the incoming webhook; raise DeliveryError with Slack's answer when it refuses."""
    resp = post_json(webhook_url, payload)
    if resp.status != 200:
        raise DeliveryError(f"Slack refused the message: {resp.status} {resp.body[:200].decode(errors='replace')}")


def send_weekly(webhook_url: str | None, w: WeeklyReport, record_failure: Callable[[str], None]) -> str:
    """Send the weekly report when a webhook is configured; returns what happened, in words. A failure is
    recorded through ``record_failure`` and said, never raised."""
    if not webhook_url:
        return "weekly report not sent: Slack is not configured (slack.webhook_url_file or SLACK_WEBHOOK_URL)"
    try:
        send(webhook_url, blocks(w))
    except Exception as exc:
        message = redact(str(exc))
        record_failure(message)
        return f"slack failed: {message} (counted in pgarch_integration_failures_total)"
    return f"weekly report sent to Slack ({host_of(webhook_url)})"
