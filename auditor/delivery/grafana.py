"""Grafana annotations through its HTTP API (``POST /api/annotations``) with a service-account token.

One region annotation per audit (start to end, tags ``pg-architect`` and ``audit``, the counts and a link to
the run's page) and one point annotation per pull request opened (tags ``pg-architect``, ``pull-request``).
With ``grafana.dashboard_uid`` they belong to that dashboard; without, they are organisation-wide and a
dashboard shows them through an annotation query on the tags.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pg_architect.auditor.delivery.http import DeliveryError, post_json

TAGS = ("pg-architect", "audit")


class Grafana:
    def __init__(self, url: str, token: str, dashboard_uid: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.dashboard_uid = dashboard_uid

    def annotate(self, text: str, tags: list[str], start: datetime, end: datetime | None = None) -> int:
        """Add one annotation (a region when ``end`` is given); returns its id."""
        doc: dict[str, Any] = {"time": _ms(start), "tags": tags, "text": text}
        if end is not None:
            doc["timeEnd"] = _ms(end)
        if self.dashboard_uid:
            doc["dashboardUID"] = self.dashboard_uid
        resp = post_json(f"{self.url}/api/annotations", doc, {"Authorization": f"Bearer {self.token}"})
        if resp.status != 200:
            message = (resp.json() or {}).get("message") if resp.body.startswith(b"{") else resp.body[:200].decode()
            raise DeliveryError(f"Grafana refused the annotation: {resp.status} {message}")
        return int((resp.json() or {}).get("id", 0))


def audit_text(doc: dict[str, Any], run_url: str | None) -> str:
    k = doc.get("kpis") or {}
    text = (
        f"pg-architect audit of {doc.get('database') or '?'} ({doc.get('status')}): "
        f"{k.get('slow_queries', 0)} slow statement(s), {k.get('recommended', 0)} recommendation(s), "
        f"{k.get('prs_created', 0)} pull request(s) opened, {k.get('manual_review', 0)} for manual review"
    )
    return text + (f' <a href="{run_url}">run report</a>' if run_url else "")


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
