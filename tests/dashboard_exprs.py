"""The PromQL behind the Grafana dashboard, with Grafana's variables substituted, ready to send to Prometheus.

Shared by the static dashboard test (a throwaway Prometheus) and the live test (Prometheus scraping the real
exporter)::

    for query in dashboard_queries():
        requests.get(f"{prometheus}/api/v1/query", params={"query": query.expr})
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "pg-architect.json"

# What Grafana would put in place of its variables: every job, instance and database ("All"), and windows that
# hold enough scrapes for rate() at the test's scrape interval. Override per call (one instance, a slower scrape).
DEFAULT_VARIABLES: Mapping[str, str] = {
    "job": ".*",
    "instance": ".*",
    "datname": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of the dashboard."""

    kind: Literal["panel", "annotation", "variable"]
    where: str  # human-readable origin, e.g. "panel 'Cache hit ratio' target A"
    raw: str  # as written in the dashboard
    expr: str  # with the variables substituted

    @property
    def id(self) -> str:
        """A short identifier for pytest parametrisation."""
        return self.where


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON."""
    with path.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows, and the row panels themselves."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def regex_value(value: str) -> str:
    """A value picked in a multi-value variable, as Grafana's Prometheus datasource writes it into a regex
    matcher: regex metacharacters escaped, and the backslashes doubled for the PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


def substitute(expr: str, variables: Mapping[str, str] = DEFAULT_VARIABLES) -> str:
    """Replace Grafana's template variables; raise KeyError naming a variable that has no value."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_queries(
    dashboard: Mapping[str, Any] | None = None, variables: Mapping[str, str] | None = None
) -> list[DashboardQuery]:
    """Every Prometheus expression in the dashboard: panel targets, annotations and query variables.

    A ``label_values(metric, label)`` variable becomes ``count by (label) (metric)``, which returns one series
    per value the variable would offer.
    """
    dashboard = load_dashboard() if dashboard is None else dashboard
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    out: list[DashboardQuery] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            raw = target.get("expr")
            if raw:
                where = f"panel {panel.get('title')!r} target {target.get('refId', '?')}"
                out.append(DashboardQuery("panel", where, raw, substitute(raw, values)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        raw = annotation.get("expr")
        if raw:
            where = f"annotation {annotation.get('name')!r}"
            out.append(DashboardQuery("annotation", where, raw, substitute(raw, values)))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        raw = query.get("query", "") if isinstance(query, Mapping) else str(query or "")
        match = _LABEL_VALUES.match(raw)
        if match is None:
            raise ValueError(f"variable ${variable.get('name')}: unsupported query {raw!r}")
        selector, label = match.group(1) or "up", match.group(2)
        expr = f"count by ({label}) ({substitute(selector, values)})"
        out.append(DashboardQuery("variable", f"variable ${variable.get('name')}", raw, expr))
    return out
