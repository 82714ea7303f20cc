"""The Grafana dashboard and its provisioning, checked without Grafana.

Static checks on the JSON, then every PromQL expression is sent to a real Prometheus (Debian package) that runs
on loopback with the shipped recording rules and scrapes a stand-in exporter serving every metric the contract
names: each expression must evaluate without error, and each panel query must return data. The live test
against the real exporter reuses tests/dashboard_exprs.py.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard_exprs import DashboardQuery, dashboard_queries, iter_panels, load_dashboard
from tests.stack import PROMETHEUS, RULE_FILES, Prometheus, start_prometheus, wait_for

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
TITLE = "AI Database Architect Metrics"

# Metrics that carry a `datname` label: panels must filter them by the $datname variable.
DATNAME_METRICS = (
    "pg_stat_activity_count",
    "pg_database_size_bytes",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_blks_hit_total",
    "pg_stat_database_blks_read_total",
    "pgarch_query_duration_seconds_bucket",
    "pgarch_query_duration_seconds_sum",
    "pgarch_query_duration_seconds_count",
    "pgarch_query_p95_seconds",
    "pgarch_cache_hit_ratio",
    "pgarch_statement_calls_total",
    "pgarch_statement_exec_seconds_total",
    "pgarch_statement_p95_seconds",
)


def _panels() -> list[dict[str, Any]]:
    return [p for p in iter_panels(load_dashboard()) if p.get("type") != "row"]


def _provisioned_datasources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml"):
        with path.open(encoding="utf-8") as fh:
            out += yaml.safe_load(fh).get("datasources", [])
    return out


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a JSON document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _panel_exprs(title_part: str) -> list[str]:
    panels = [p for p in _panels() if title_part.lower() in p["title"].lower()]
    assert panels, f"no panel titled like {title_part!r}; titles: {[p['title'] for p in _panels()]}"
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_is_titled_as_the_contract_says_with_a_fixed_uid() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"] == TITLE, dashboard["title"]
    assert dashboard.get("uid") == "pg-architect-main", dashboard.get("uid")
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard must not pin a database id"


def test_every_query_uses_the_datasource_variable() -> None:
    """One Prometheus chosen at the top (or at import) serves every panel, annotation and variable."""
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables.get("datasource")
    assert datasource and datasource["type"] == "datasource" and datasource["query"] == "prometheus", datasource
    expected = {"type": "prometheus", "uid": "${datasource}"}
    refs = [(f"panel {p['title']!r}", p.get("datasource")) for p in _panels()]
    refs += [
        (f"panel {p['title']!r} target {t['refId']}", t.get("datasource")) for p in _panels() for t in p["targets"]
    ]
    refs += [(f"annotation {a['name']!r}", a["datasource"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    refs += [(f"variable ${v['name']}", v["datasource"]) for v in variables.values() if v["type"] == "query"]
    wrong = [(where, ref) for where, ref in refs if ref != expected]
    assert not wrong, f"not using {expected}: {wrong}"


def test_provisioned_grafana_resolves_the_datasource_variable_to_the_provisioned_prometheus() -> None:
    """Provisioning skips __inputs, so the variable's "${DS_PROMETHEUS}" matches nothing and Grafana falls back to
    the default Prometheus datasource: the provisioned one must be that default."""
    prometheus = [ds for ds in _provisioned_datasources() if ds["type"] == "prometheus"]
    assert [ds.get("isDefault") for ds in prometheus] == [True], prometheus


def _grafana_import(dashboard: dict[str, Any], inputs: dict[str, str]) -> Any:
    """What Grafana's dashboard import does with an exported dashboard (pkg/services/dashboardimport,
    DashTemplateEvaluator): every input declared in __inputs must be given a value; "${NAME}" in any string is
    replaced where NAME is an input, other "${...}" (dashboard variables) are left alone; __inputs is dropped."""
    declared = {i["name"] for i in dashboard.get("__inputs", [])}
    missing = declared - set(inputs)
    assert not missing, f"the import would fail: no value for inputs {missing}"

    def evaluate(node: Any) -> Any:
        if isinstance(node, str):
            return re.sub(r"\$\{(.+?)\}", lambda m: inputs.get(m.group(1), m.group(0)), node)
        if isinstance(node, dict):
            return {k: evaluate(v) for k, v in node.items() if k != "__inputs"}
        if isinstance(node, list):
            return [evaluate(v) for v in node]
        return node

    return evaluate(dashboard)


def test_dashboard_imports_into_grafana_asking_for_its_prometheus() -> None:
    """Grafana's "Import dashboard" asks for the __inputs; the chosen datasource becomes the variable's default."""
    dashboard = load_dashboard()
    inputs = dashboard.get("__inputs", [])
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [("DS_PROMETHEUS", "datasource", "prometheus")]
    required = {(r["type"], r["id"]) for r in dashboard.get("__requires", [])}
    panel_types = {("panel", p["type"]) for p in _panels()}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} | panel_types <= required, required

    imported = _grafana_import(dashboard, {"DS_PROMETHEUS": "uid-of-their-prometheus"})
    variables = {v["name"]: v for v in imported["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "uid-of-their-prometheus", variables["datasource"]
    # Every "${...}" left is a dashboard variable or one of Grafana's own, resolved when the dashboard renders.
    known = set(variables) | {"__rate_interval", "__interval", "__range"}
    left = {m for text in _strings(imported) for m in re.findall(r"\$\{(\w+)", text)}
    assert left <= known, f"unresolved after import: {left - known}"
    assert imported["title"] == TITLE


def test_job_and_instance_variables_scope_every_query() -> None:
    """Several servers in one Prometheus: every selector of every panel, annotation and variable query is
    filtered by $job and $instance, so a panel never mixes servers the user did not pick."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    for name in ("job", "instance"):
        assert variables.get(name, {}).get("type") == "query", f"no ${name} query variable: {list(variables)}"
        assert variables[name]["includeAll"] and variables[name]["multi"], variables[name]
    assert 'job=~"$job"' in variables["instance"]["definition"], variables["instance"]
    unscoped = []
    for query in dashboard_queries():
        if query.where in ("variable $job", "variable $instance"):  # they offer the values (checked above)
            continue
        for match in re.finditer(r"\b([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", query.raw):
            name, matchers = match.group(1), match.group(2) or ""
            metric = name.startswith(("pg_", "pgarch_", "ALERTS")) or ":" in name
            if metric and not ('job=~"$job"' in matchers and 'instance=~"$instance"' in matchers):
                unscoped.append((query.where, name))
    assert not unscoped, f'selectors not filtered by job=~"$job", instance=~"$instance": {unscoped}'


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), f"duplicate panel titles: {sorted(titles)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, (panel["title"], pos)
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r} at x={x}, y={y}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    connections = " ".join(_panel_exprs("connections vs limit"))
    assert "pg_stat_activity_count" in connections and "pg_settings_max_connections" in connections, connections
    assert "pg_settings_superuser_reserved_connections" in connections, connections

    p95 = next(p for p in _panels() if p["title"] == "Query latency p95 (SLA 2 s)")
    assert "pgarch_query_duration_seconds_bucket" in p95["targets"][0]["expr"]
    defaults = p95["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "line+area", "dashed"}, defaults
    assert 2 in [step["value"] for step in defaults["thresholds"]["steps"]], "no 2 s SLA threshold line"
    assert defaults["unit"] == "s"

    cache = " ".join(_panel_exprs("cache hit ratio"))
    assert "pg_stat_database_blks_hit{" in cache and "pg_stat_database_blks_hit_total{" in cache, cache
    disk = " ".join(_panel_exprs("disk usage and 7-day forecast"))
    assert "pgarch_disk_used_bytes" in disk and "pgarch_disk_size_bytes" in disk, disk
    assert "instance:pgarch_disk_used_bytes:predict_linear_7d" in disk, disk
    assert any("pg_database_size_bytes" in e for e in _panel_exprs("database sizes"))
    top = _panel_exprs("top queries by total time")
    assert any(re.search(r"topk\b.*rate\(pgarch_statement_exec_seconds_total", e, re.DOTALL) for e in top), top

    everything = " ".join(q.raw for q in dashboard_queries())
    kpis = [
        "pgarch_audit_slow_queries",
        "pgarch_audit_recommendations",
        "pgarch_audit_prs_created_total",
        "pgarch_audit_confidence_avg_ratio",
        "pgarch_audit_gain_avg_ratio",
        "pgarch_knowledge_base_records",
        "time() - (pgarch_audit_last_success_timestamp_seconds",
        # What became of the recommendations (issue 16).
        "pgarch_agent_accuracy_ratio",
        "pgarch_time_saved_seconds_total",
        "pgarch_recommendations{",
        "pgarch_optimizations_verified_total",
    ]
    missing = [kpi for kpi in kpis if kpi not in everything]
    assert not missing, f"auditor KPIs missing from the dashboard: {missing}"


def test_auditor_annotations_tagged_pg_architect_are_shown() -> None:
    annotations = load_dashboard()["annotations"]["list"]
    tagged = [
        a
        for a in annotations
        if a.get("datasource", {}).get("type") == "grafana"
        and a.get("target", {}).get("type") == "tags"
        and "pg-architect" in a.get("target", {}).get("tags", [])
    ]
    assert tagged, f"no annotation query for Grafana annotations tagged pg-architect: {annotations}"
    assert all(a.get("enable") and not a.get("hide") for a in tagged), tagged


def test_datname_variable_offers_every_database_and_panels_filter_on_it() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    datname = variables.get("datname")
    assert datname, f"no $datname variable: {list(variables)}"
    assert datname["includeAll"] and datname["multi"] and datname["allValue"] == ".*", datname
    unfiltered = []
    for query in dashboard_queries():
        if query.kind != "panel":
            continue
        for metric in DATNAME_METRICS:
            for match in re.finditer(rf"\b{metric}\b(\{{[^}}]*\}})?", query.raw):
                if '$datname"' not in (match.group(1) or ""):
                    unfiltered.append((query.where, metric))
    assert not unfiltered, f'selectors not filtered by datname=~"$datname": {unfiltered}'


def test_recording_rules_used_by_the_dashboard_exist() -> None:
    recorded = set()
    for path in RULE_FILES:
        with path.open(encoding="utf-8") as fh:
            recorded |= {r["record"] for g in yaml.safe_load(fh)["groups"] for r in g["rules"] if "record" in r}
    used = {name for q in dashboard_queries() for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", q.raw)}
    assert used, "the dashboard uses no recording rule (the disk forecast should)"
    assert used <= recorded, f"recording rules not defined in prometheus/rules: {sorted(used - recorded)}"


def test_dashboard_provider_loads_json_from_a_directory() -> None:
    with (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").open(encoding="utf-8") as fh:
        providers = yaml.safe_load(fh)["providers"]
    assert [p["type"] for p in providers] == ["file"], providers
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards", providers
    assert sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json")) == ["pg-architect.json"]


# -- Every expression against a real Prometheus ---------------------------------------------------------------

# A stand-in exporter: every contract metric the dashboard reads, with counters that grow on each scrape.
# `n` counts scrapes.
_GAUGES = """\
pg_up 1
pg_stat_activity_count{datname="shop",state="active"} 3
pg_stat_activity_count{datname="shop",state="idle"} 5
pg_settings_max_connections 100
pg_settings_superuser_reserved_connections 3
pg_database_size_bytes{datname="shop"} 123456789
pg_database_size_bytes{datname="postgres"} 7654321
pgarch_connections_used_ratio 0.082
pgarch_query_p95_seconds{datname="shop"} 0.4
pgarch_cache_hit_ratio{datname="shop"} 0.95
pgarch_disk_size_bytes{source="statvfs"} 100000000000
pgarch_disk_used_ratio{source="statvfs"} 0.5
pgarch_scrape_duration_seconds 0.05
pgarch_scrape_collector_success{collector="activity"} 1
pgarch_scrape_collector_success{collector="statements"} 1
pgarch_audit_duration_seconds 42
pgarch_audit_slow_queries 7
pgarch_audit_recommendations{action="pr_merge"} 2
pgarch_audit_recommendations{action="pr_review"} 1
pgarch_audit_recommendations{action="log"} 3
pgarch_audit_recommendations{action="flag"} 1
pgarch_audit_confidence_avg_ratio 0.85
pgarch_audit_gain_avg_ratio 0.4
pgarch_audit_stuck 0
pgarch_audit_prs_created_total 3
pgarch_optimizations_applied_total 2
pgarch_knowledge_base_records 12
pgarch_agent_accuracy_ratio 0.75
pgarch_time_saved_seconds_total 5400
pgarch_recommendations{status="pending"} 3
pgarch_recommendations{status="applied"} 4
pgarch_optimizations_verified_total{outcome="improved"} 3
pgarch_optimizations_verified_total{outcome="no_change"} 1
pgarch_statement_p95_seconds{datname="shop",queryid="-4242"} 0.3
"""


def _exposition(n: int, now: float) -> str:
    buckets = [("0.1", 10), ("0.5", 11), ("1", 12), ("+Inf", 12)]
    lines = [
        # postgres_exporter's names and types (the real exporter's are checked by the live test).
        "# TYPE pg_stat_database_blks_hit counter",
        f'pg_stat_database_blks_hit{{datname="shop"}} {1000 + 95 * n}',
        "# TYPE pg_stat_database_blks_read counter",
        f'pg_stat_database_blks_read{{datname="shop"}} {100 + 5 * n}',
        "# TYPE pgarch_query_duration_seconds histogram",
        *(f'pgarch_query_duration_seconds_bucket{{datname="shop",le="{le}"}} {c * n}' for le, c in buckets),
        f'pgarch_query_duration_seconds_sum{{datname="shop"}} {3 * n}',
        f'pgarch_query_duration_seconds_count{{datname="shop"}} {12 * n}',
        "# TYPE pgarch_statement_calls_total counter",
        f'pgarch_statement_calls_total{{datname="shop",queryid="-4242"}} {10 * n}',
        "# TYPE pgarch_statement_exec_seconds_total counter",
        f'pgarch_statement_exec_seconds_total{{datname="shop",queryid="-4242"}} {2 * n}',
        f'pgarch_disk_used_bytes{{source="statvfs"}} {50_000_000_000 + 1_000_000 * n}',
        f"pgarch_audit_last_run_timestamp_seconds {now - 3600:.0f}",
        f"pgarch_audit_last_success_timestamp_seconds {now - 3600:.0f}",
    ]
    return _GAUGES + "\n".join(lines) + "\n"


class _StandInExporter(BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        body = _exposition(type(self).scrapes, time.time()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus on loopback with the shipped rules, scraping the stand-in exporter every second."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian: prometheus)")
    handler = type("Handler", (_StandInExporter,), {"scrapes": 0})
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "pg-architect-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_address[1]}"]}],
            }
        ],
    }
    with contextlib.ExitStack() as stack:
        server = start_prometheus(stack, config, tmp_path_factory.mktemp("prometheus"))
        # Ready once rate() and the recording rules have data: a few scrapes and rule evaluations.
        probes = [
            "rate(pgarch_statement_exec_seconds_total[1m])",
            "instance:pgarch_disk_used_bytes:predict_linear_7d",
            "datname:pgarch_query_duration_seconds:p95_5m",
        ]
        wait_for(
            lambda: all(server.vector(probe) for probe in probes),
            120,
            f"Prometheus to have data for {probes}",
            server.process.log,
        )
        yield server
        exporter.shutdown()


QUERIES = dashboard_queries()
# Panels that legitimately show nothing in a Prometheus minutes old, with the reason (they must still evaluate).
NO_DATA_EXPECTED = {
    "panel 'Disk usage and 7-day forecast' target C": "the forecast is shown after a day of history only",
}


def test_dashboard_has_queries_to_check() -> None:
    assert len([q for q in QUERIES if q.kind == "panel"]) >= 20, QUERIES


@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_dashboard_expression_evaluates_on_prometheus(prometheus: Prometheus, query: DashboardQuery) -> None:
    body = prometheus.query(query.expr)
    assert body.get("status") == "success", f"{query.where}\n{query.expr}\n-> {body}"
    # Firing alerts are legitimately absent here; every panel and the variable must show something.
    if query.kind != "annotation" and query.where not in NO_DATA_EXPECTED:
        assert body["data"]["result"], f"{query.where} returned no data\n{query.expr}"
