"""Alertmanager: the shipped configuration validates, routes by severity, inhibits symptoms, and its Slack
messages say what, where, since when, and link the runbook.

The last tests run the real Alertmanager (Debian package) on loopback with the shipped configuration; only the
webhook URL file and the template path are swapped for temporary ones.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.stack import ALERTMANAGER, SlackStandIn, fast_alertmanager_config, needs_alertmanager, start_alertmanager

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "alertmanager" / "alertmanager.yml"
TEMPLATES = REPO / "alertmanager" / "templates"
SLACK_URL_FILE = "/etc/alertmanager/secrets/slack_webhook_url"
RUNBOOK = "https://github.com/pg-architect/pg-architect/blob/main/docs/runbooks/"

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (Debian: prometheus-alertmanager)")

# Symptoms that PostgresDown must silence for the same server, and alerts it must not.
SYMPTOMS = ("PostgresQueryLatencyP95High", "PostgresConnectionsNearLimit", "PostgresCacheHitRatioLow")


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return subprocess.run([AMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def _config() -> dict[str, Any]:
    with CONFIG.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


@needs_amtool
def test_amtool_check_config_accepts_the_config_and_its_templates() -> None:
    result = _amtool("check-config", str(CONFIG.relative_to(REPO)))
    assert result.returncode == 0, _explain(result)
    # amtool reports what it loaded; no templates would mean the glob matched nothing.
    assert "1 templates" in result.stdout, _explain(result)


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PostgresDown", "severity=critical", "instance=exporter:9188"], "slack-critical"),
        (["alertname=DatabaseArchitectStuck", "severity=critical"], "slack-critical"),
        (["alertname=PostgresCacheHitRatioLow", "severity=warning", "datname=shop"], "slack-warnings"),
        (["alertname=DatabaseArchitectAuditMissed", "severity=warning"], "slack-warnings"),
    ],
)
def test_amtool_routes_alerts_by_severity(labels: list[str], receiver: str) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, _explain(result)


def test_critical_alerts_go_out_fast_and_warnings_are_batched() -> None:
    routes = {tuple(r["matchers"]): r for r in _config()["route"]["routes"]}
    critical = routes[('severity="critical"',)]
    warning = routes[('severity="warning"',)]
    assert _seconds(critical["group_wait"]) <= 30, critical
    assert _seconds(warning["group_wait"]) > _seconds(critical["group_wait"]), (critical, warning)
    assert _seconds(warning["group_interval"]) > _seconds(critical["group_interval"]), (critical, warning)
    assert warning["group_by"] == ["alertname", "env", "cluster"], warning


def test_alerts_are_grouped_by_environment_and_cluster() -> None:
    """Alerts keep their target's env/cluster labels; a notification never mixes two environments."""
    route = _config()["route"]
    groupings = [route["group_by"]] + [r["group_by"] for r in route["routes"] if "group_by" in r]
    for group_by in groupings:
        assert group_by[:3] == ["alertname", "env", "cluster"], group_by
    assert {"instance", "target"} <= set(route["group_by"]), "critical alerts: one notification per server"


def test_inhibition_stays_within_one_environment_and_cluster() -> None:
    """Two clusters can both have an `exporter:9188`: PostgresDown in one must not mute the other's symptoms."""
    for rule in _config()["inhibit_rules"]:
        assert {"env", "cluster", "instance", "target"} <= set(rule["equal"]), rule


def test_every_slack_receiver_reads_the_webhook_from_a_file_and_sends_resolved() -> None:
    configs = [(rcv["name"], sc) for rcv in _config()["receivers"] for sc in rcv.get("slack_configs", [])]
    assert configs, "no Slack receiver"
    for name, sc in configs:
        assert "api_url" not in sc, f"{name}: the webhook URL is a secret; use api_url_file"
        assert sc.get("api_url_file") == SLACK_URL_FILE, (name, sc.get("api_url_file"))
        assert sc.get("send_resolved") is True, name


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    return int(duration[:-1]) * units[duration[-1]]


# -- Rendering the Slack templates ------------------------------------------------------------------------


def _render(name: str, data: dict[str, Any], tmp_path: Path) -> str:
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data), encoding="utf-8")
    result = _amtool(
        "template",
        "render",
        f"--template.glob={TEMPLATES}/*.tmpl",
        f"--template.data={data_file}",
        f"--template.text={{{{ template {json.dumps(name)} . }}}}",
    )
    assert result.returncode == 0, _explain(result)
    return result.stdout


def _data(status: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    common = dict(alerts[0]["labels"])
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    return {
        "receiver": "slack-critical",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": common["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
    }


def _latency_alert(status: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "PostgresQueryLatencyP95High",
            "severity": "critical",
            "datname": "shop",
            "instance": "exporter:9188",
            "target": "orders",
        },
        "annotations": {
            "summary": "p95 query latency on shop is above the 2 s SLA",
            "description": "The 95th percentile statement latency on database shop at exporter:9188 "
            "has been 4.875s over the last 5 minutes (SLA: 2s).",
            "runbook_url": RUNBOOK + "PostgresQueryLatencyP95High.md",
        },
        "startsAt": "2026-03-01T06:00:00Z",
        "endsAt": "2026-03-01T06:45:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
    }


@needs_amtool
def test_slack_message_for_a_firing_alert_says_what_where_value_since_and_runbook(tmp_path: Path) -> None:
    data = _data("firing", [_latency_alert("firing")])
    title = _render("pgarch.slack.title", data, tmp_path)
    text = _render("pgarch.slack.text", data, tmp_path)
    assert title == "[FIRING:1] CRITICAL PostgresQueryLatencyP95High on shop", title
    expected = [
        "p95 query latency on shop is above the 2 s SLA",  # what
        "database `shop`",  # which database
        "target `orders`",
        "instance `exporter:9188`",
        "4.875s",  # the value, from the description
        "*Since:* 2026-03-01 06:00:00 UTC",
        f"<{RUNBOOK}PostgresQueryLatencyP95High.md|",
    ]
    missing = [part for part in expected if part not in text]
    assert not missing, f"missing {missing} in:\n{text}"
    assert _render("pgarch.slack.color", data, tmp_path) == "danger"


@needs_amtool
def test_slack_message_shows_env_cluster_and_team_when_the_alert_has_them(tmp_path: Path) -> None:
    alert = _latency_alert("firing")
    alert["labels"] |= {"env": "prod", "cluster": "eu-1", "team": "payments"}
    data = _data("firing", [alert])
    title = _render("pgarch.slack.title", data, tmp_path)
    assert title == "[FIRING:1] CRITICAL PostgresQueryLatencyP95High on shop (prod/eu-1)", title
    text = _render("pgarch.slack.text", data, tmp_path)
    expected = ["database `shop`", "instance `exporter:9188`", "env `prod`", "cluster `eu-1`", "team `payments`"]
    missing = [part for part in expected if part not in text]
    assert not missing, f"missing {missing} in:\n{text}"

    only_env = _latency_alert("firing")
    only_env["labels"] |= {"env": "staging"}
    data = _data("firing", [only_env])
    assert _render("pgarch.slack.title", data, tmp_path).endswith("on shop (staging)")
    text = _render("pgarch.slack.text", data, tmp_path)
    assert "env `staging`" in text and "cluster `" not in text and "team `" not in text, text


@needs_amtool
def test_slack_message_for_a_resolved_alert_says_resolved_and_when(tmp_path: Path) -> None:
    data = _data("resolved", [_latency_alert("resolved")])
    title = _render("pgarch.slack.title", data, tmp_path)
    text = _render("pgarch.slack.text", data, tmp_path)
    assert title.startswith("[RESOLVED]"), title
    assert "*resolved:* 2026-03-01 06:45:00 UTC" in text, text
    assert _render("pgarch.slack.color", data, tmp_path) == "good"


@needs_amtool
def test_slack_message_for_a_server_wide_warning_says_server_wide(tmp_path: Path) -> None:
    alert = _latency_alert("firing")
    alert["labels"] = {"alertname": "DatabaseArchitectAuditMissed", "severity": "warning"}
    data = _data("firing", [alert])
    assert _render("pgarch.slack.title", data, tmp_path) == "[FIRING:1] WARNING DatabaseArchitectAuditMissed"
    assert "*Where:* server-wide" in _render("pgarch.slack.text", data, tmp_path)
    assert _render("pgarch.slack.color", data, tmp_path) == "warning"


# -- The real Alertmanager with the shipped configuration ---------------------------------------------------


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackStandIn]:
    """A local HTTP server speaking Slack's incoming-webhook API (tests/stack.py)."""
    with SlackStandIn().running() as server:
        yield server


@pytest.fixture(scope="module")
def alertmanager(slack: SlackStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shipped configuration on a real Alertmanager, listening on loopback; yields its base URL."""
    if ALERTMANAGER is None:
        pytest.skip("Alertmanager is not installed (Debian: prometheus-alertmanager)")
    tmp = tmp_path_factory.mktemp("alertmanager")
    url_file = tmp / "slack_webhook_url"
    url_file.write_text(slack.url + "\n", encoding="utf-8")
    with contextlib.ExitStack() as stack:
        # Factor 1: the shipped timings (critical after group_wait 10 s, warnings batched for minutes).
        yield start_alertmanager(stack, fast_alertmanager_config(url_file, 1), tmp).base


def _post_alerts(base: str, alerts: list[dict[str, str]]) -> None:
    # Starting now, as Prometheus sends them (startsAt = when the alert began firing). An alert older than
    # group_wait would be flushed at once, before the inhibitor has seen its source alert.
    starts = datetime.now(UTC).isoformat()
    payload = [
        {
            "labels": labels,
            "annotations": {
                "summary": f"{labels['alertname']} at {labels['instance']}",
                "description": f"test alert {labels['alertname']} at {labels['instance']}",
                "runbook_url": f"{RUNBOOK}{labels['alertname']}.md",
            },
            "startsAt": starts,
        }
        for labels in alerts
    ]
    response = requests.post(f"{base}/api/v2/alerts", json=payload, timeout=5)
    assert response.status_code == 200, response.text


def _states(base: str) -> dict[tuple[str, str], str]:
    """(alertname, instance) -> "active" or "suppressed", as Alertmanager sees them now."""
    alerts = requests.get(f"{base}/api/v2/alerts", timeout=5).json()
    return {(a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["state"] for a in alerts}


@needs_alertmanager
def test_postgres_down_inhibits_symptoms_on_the_same_server_only_and_critical_alerts_reach_slack(
    alertmanager: str, slack: SlackStandIn
) -> None:
    down, healthy = "db1:9188", "db2:9188"
    alerts = [{"alertname": "PostgresDown", "severity": "critical", "instance": down}]
    for name in SYMPTOMS:
        severity = "warning" if name == "PostgresCacheHitRatioLow" else "critical"
        alerts += [
            {"alertname": name, "severity": severity, "instance": down, "datname": "shop"},
            {"alertname": name, "severity": severity, "instance": healthy, "datname": "shop"},
        ]
    # A full disk may be the cause of the outage: never hidden.
    alerts.append({"alertname": "PostgresDiskUsageHigh", "severity": "critical", "instance": down})
    # The forecast is hidden while the disk is already over the threshold, on the same disk only.
    alerts += [
        {"alertname": "PostgresDiskFillPredicted", "severity": "warning", "instance": down},
        {"alertname": "PostgresDiskFillPredicted", "severity": "warning", "instance": healthy},
    ]
    _post_alerts(alertmanager, alerts)

    expected = {("PostgresDown", down): "active", ("PostgresDiskUsageHigh", down): "active"}
    for name in SYMPTOMS:
        expected[(name, down)] = "suppressed"
        expected[(name, healthy)] = "active"
    expected[("PostgresDiskFillPredicted", down)] = "suppressed"
    expected[("PostgresDiskFillPredicted", healthy)] = "active"
    deadline = time.monotonic() + 60
    while (states := _states(alertmanager)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    differ = {key: (want, states.get(key)) for key, want in expected.items() if states.get(key) != want}
    assert not differ, f"(alertname, instance): (expected, got): {differ}"

    # Critical groups flush after group_wait (10 s); warnings wait 5 minutes and must not be here yet.
    wanted = {
        (a["alertname"], a["instance"])
        for a in alerts
        if a["severity"] == "critical" and expected[(a["alertname"], a["instance"])] == "active"
    }
    assert ("PostgresDown", down) in wanted and ("PostgresQueryLatencyP95High", healthy) in wanted, wanted
    deadline = time.monotonic() + 60

    def seen() -> set[tuple[str, str]]:
        return {
            (name, instance)
            for payload in slack.received
            for attachment in payload.get("attachments", [])
            for name in [n for n, _ in expected if n in attachment.get("title", "")]
            for instance in (down, healthy)
            if f"instance `{instance}`" in attachment.get("text", "")
        }

    while not wanted <= seen() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # anything that should not be sent would be flushed together with the rest
    got = seen()
    assert wanted <= got, f"Slack did not receive {wanted - got}; {slack.dump()}"
    unexpected = {(n, i) for n, i in got if (n, i) not in wanted}
    assert not unexpected, f"Slack received inhibited or not-yet-due alerts {unexpected}; {slack.dump()}"
    down_msg = next(a for a in slack.attachments() if a["title"].endswith("CRITICAL PostgresDown"))
    assert down_msg["title"] == "[FIRING:1] CRITICAL PostgresDown", down_msg
    assert f"<{RUNBOOK}PostgresDown.md|PostgresDown runbook>" in down_msg["text"], down_msg
    assert down_msg["color"] == "danger", down_msg


def _groups(base: str, instances: set[str]) -> list[tuple[dict[str, str], set[str]]]:
    """Alertmanager's aggregation groups holding alerts of ``instances``: (group labels, instances in it)."""
    groups = requests.get(f"{base}/api/v2/alerts/groups", timeout=5).json()
    return sorted(
        (
            (g["labels"], {a["labels"]["instance"] for a in g["alerts"]})
            for g in groups
            if any(a["labels"]["instance"] in instances for a in g["alerts"])
        ),
        key=lambda group: json.dumps(group[0], sort_keys=True),
    )


@needs_alertmanager
def test_alertmanager_groups_alerts_per_env_and_cluster_and_inhibits_within_one(alertmanager: str) -> None:
    """The shipped routing on the real Alertmanager: warnings of one alert name share a group per environment
    and cluster; PostgresDown mutes symptoms of the same instance name in its own cluster only."""
    prod = {"env": "prod", "cluster": "eu-1", "team": "payments"}
    staging = {"env": "staging", "cluster": "eu-1", "team": "payments"}
    warning = {"alertname": "PostgresDiskFillPredicted", "severity": "warning"}
    _post_alerts(
        alertmanager,
        [
            warning | prod | {"instance": "orders-db:9188"},
            warning | prod | {"instance": "billing-db:9188"},
            warning | staging | {"instance": "orders-db:9188"},
        ],
    )
    expected = [
        ({"alertname": "PostgresDiskFillPredicted", "cluster": "eu-1", "env": "prod"}, {"orders-db", "billing-db"}),
        ({"alertname": "PostgresDiskFillPredicted", "cluster": "eu-1", "env": "staging"}, {"orders-db"}),
    ]

    def grouped() -> list[tuple[dict[str, str], set[str]]]:
        groups = _groups(alertmanager, {"orders-db:9188", "billing-db:9188"})
        return [(labels, {i.split(":")[0] for i in instances}) for labels, instances in groups]

    deadline = time.monotonic() + 60
    while grouped() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert grouped() == expected, f"groups (labels, instances): {grouped()}"

    # The same exporter address in two clusters (compose service names repeat): only prod's symptom is muted.
    same = "exporter-env-test:9188"
    latency = {"alertname": "PostgresQueryLatencyP95High", "severity": "critical", "instance": same, "datname": "shop"}
    _post_alerts(
        alertmanager,
        [
            {"alertname": "PostgresDown", "severity": "critical", "instance": same} | prod,
            latency | prod,
            latency | staging,
        ],
    )

    def states() -> dict[str, str]:
        alerts = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        return {
            a["labels"]["env"]: a["status"]["state"]
            for a in alerts
            if a["labels"]["alertname"] == latency["alertname"] and a["labels"]["instance"] == same
        }

    deadline = time.monotonic() + 60
    while states() != {"prod": "suppressed", "staging": "active"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert states() == {"prod": "suppressed", "staging": "active"}, states()
