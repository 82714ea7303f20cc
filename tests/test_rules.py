"""Prometheus configuration, recording rules and alerts: promtool checks plus the contract's promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DEFAULT_RUNBOOK_BASE = "https://github.com/pg-architect/pg-architect/blob/main/docs/runbooks"
# Static labels users give their scrape targets; every alert must keep them so Alertmanager can route on them.
TARGET_LABELS = ("env", "cluster", "team")
AUDITOR_ALERTS = ("DatabaseArchitectStuck", "DatabaseArchitectAuditMissed")

# CONTRACT.md, "Alerts": name -> severity.
CONTRACT_ALERTS = {
    "PostgresDown": "critical",
    "PostgresQueryLatencyP95High": "critical",
    "PostgresConnectionsNearLimit": "critical",
    "PostgresDiskUsageHigh": "critical",
    "DatabaseArchitectStuck": "critical",
    "DatabaseArchitectAuditMissed": "warning",
    "PostgresCacheHitRatioLow": "warning",
    "PostgresDiskFillPredicted": "warning",
}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, f"no rule files under {PROMETHEUS_DIR / 'rules'}"
    assert TEST_FILES, f"no promtool unit tests under {PROMETHEUS_DIR / 'tests'}"


@needs_promtool
def test_promtool_check_config_accepts_prometheus_yml_and_its_rules() -> None:
    _assert_ok(_promtool("check", "config", "prometheus/prometheus.yml"))


@needs_promtool
def test_promtool_check_rules_passes() -> None:
    _assert_ok(_promtool("check", "rules", *(str(p.relative_to(REPO)) for p in RULE_FILES)))


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    _assert_ok(_promtool("test", "rules", *(str(p.relative_to(REPO)) for p in TEST_FILES)))


def test_every_contract_alert_exists_with_its_severity() -> None:
    found = {name: rule.get("labels", {}).get("severity") for name, rule in _alerts().items()}
    wrong = {
        name: {"expected": severity, "found": found.get(name, "<missing>")}
        for name, severity in CONTRACT_ALERTS.items()
        if found.get(name) != severity
    }
    assert not wrong, f"alerts missing or with the wrong severity: {wrong}"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_carries_severity_summary_description_and_its_runbook(name: str) -> None:
    rule = _alerts()[name]
    annotations = rule.get("annotations", {})
    assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule.get("labels")
    missing = [key for key in ("summary", "description", "runbook_url") if not annotations.get(key)]
    assert not missing, f"{name} lacks annotations {missing}"
    # The base comes from Prometheus' `runbook_base_url` external label, with the project's runbooks by default.
    expected = (
        "{{ with $externalLabels.runbook_base_url }}{{ . }}{{ else }}"
        f"{DEFAULT_RUNBOOK_BASE}{{{{ end }}}}/{name}.md"
    )
    assert annotations["runbook_url"] == expected, annotations["runbook_url"]
    runbook = REPO / "docs" / "runbooks" / f"{name}.md"
    assert runbook.is_file(), f"{name}'s runbook {runbook.relative_to(REPO)} does not exist"
    assert rule.get("for"), f"{name} has no `for`: a single bad evaluation would page"


def test_recording_rules_are_named_level_metric_operation() -> None:
    names = [rule["record"] for rule in _rules() if "record" in rule]
    assert names, "no recording rules"
    bad = [name for name in names if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name)]
    assert not bad, f"recording rules not named level:metric:operation: {bad}"


def _alert_expectations() -> dict[str, list[tuple[str, list[tuple[int, bool]]]]]:
    """alertname -> [(test name, [(eval time in seconds, expected to fire), ...]), ...]."""
    out: dict[str, list[tuple[str, list[tuple[int, bool]]]]] = {}
    for path in TEST_FILES:
        for case in _load(path).get("tests", []):
            per_alert: dict[str, list[tuple[int, bool]]] = {}
            for check in case.get("alert_rule_test", []):
                firing = bool(check.get("exp_alerts"))
                per_alert.setdefault(check["alertname"], []).append((_seconds(check["eval_time"]), firing))
            for alertname, checks in per_alert.items():
                out.setdefault(alertname, []).append((case.get("name", path.name), sorted(checks)))
    return out


def _seconds(duration: str) -> int:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([dhms])", str(duration))
    assert "".join(n + u for n, u in parts) == str(duration), f"cannot parse duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_has_unit_tests_for_firing_silence_and_resolution(name: str) -> None:
    cases = _alert_expectations().get(name, [])
    assert cases, f"no promtool test case checks {name}"
    fires = any(firing for _, checks in cases for _, firing in checks)
    # A case that never expects the alert: the below-threshold / idle / fresh-start scenarios.
    silent_case = any(not any(firing for _, firing in checks) for _, checks in cases)
    # A case that expects it to fire and later expects it gone.
    resolves = any(
        any(firing and any(t2 > t1 and not f2 for t2, f2 in checks) for t1, firing in checks) for _, checks in cases
    )
    # Silent before firing in the same case: the `for` is honoured.
    waits = any(
        any(firing and any(t0 < t1 and not f0 for t0, f0 in checks) for t1, firing in checks) for _, checks in cases
    )
    missing = [
        what
        for what, ok in (
            ("fires", fires),
            ("stays silent in a whole scenario", silent_case),
            ("resolves", resolves),
            ("is silent before its `for` has passed", waits),
        )
        if not ok
    ]
    assert not missing, f"{name}: no unit test checks that it {', '.join(missing)}; cases: {cases}"


def test_prometheus_yml_scrapes_the_exporter_and_pushgateway_and_alerts_to_alertmanager() -> None:
    config = _load(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: [t for sc in job.get("static_configs", []) for t in sc["targets"]] for name, job in jobs.items()}
    assert targets.get("pg-architect-exporter") == ["exporter:9188"], targets
    assert targets.get("pushgateway") == ["pushgateway:9091"], targets
    assert jobs["pushgateway"].get("honor_labels") is True, "the auditor's job label would be overwritten"
    assert config["rule_files"] == ["rules/*.yml"], config["rule_files"]
    am_targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert am_targets == ["alertmanager:9093"], am_targets


def _cases() -> list[dict[str, Any]]:
    return [case for path in TEST_FILES for case in _load(path).get("tests", [])]


def _series_labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


def test_no_rule_aggregates_by_a_fixed_list_of_labels() -> None:
    """`by (job, instance, ...)` drops every label not in the list (env, cluster, team...): use `without`."""
    offenders = [
        rule.get("alert") or rule.get("record")
        for rule in _rules()
        if re.search(r"\bby\s*\(", rule["expr"]) or re.search(r"\bon\s*\(", rule["expr"])
    ]
    assert not offenders, f"rules that aggregate or match on a fixed label list: {offenders}"


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_unit_tests_prove_the_alert_keeps_the_targets_env_cluster_and_team(name: str) -> None:
    """Every expected firing alert in the promtool tests carries the static labels of its input series."""
    expected = [
        (case.get("name"), alert.get("exp_labels", {}))
        for case in _cases()
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == name
        for alert in check.get("exp_alerts") or []
    ]
    assert expected, f"no promtool test expects {name} to fire"
    missing = [(case, labels) for case, labels in expected if not all(labels.get(k) for k in TARGET_LABELS)]
    assert not missing, f"{name} expected without {TARGET_LABELS}: {missing}"
    inputs_labelled = all(
        all(_series_labels(series["series"]).get(k) for k in TARGET_LABELS)
        for case in _cases()
        if any(check["alertname"] == name and check.get("exp_alerts") for check in case.get("alert_rule_test", []))
        for series in case["input_series"]
    )
    assert inputs_labelled, f"a case expecting {name} has input series without {TARGET_LABELS}"


@pytest.mark.parametrize("name", AUDITOR_ALERTS)
def test_unit_tests_prove_the_auditor_alert_fires_per_server(name: str) -> None:
    """A case with two servers that differ only in `instance`, where the alert fires for one and not the other."""
    per_server = []
    for case in _cases():
        servers = {
            (labels.get("instance"), tuple(labels.get(k) for k in TARGET_LABELS))
            for labels in map(_series_labels, (s["series"] for s in case["input_series"]))
            if labels.get("job") == "pg-architect-exporter" and not labels.get("target")
        }
        same_place = {place for _, place in servers}
        fired = {
            alert["exp_labels"].get("instance")
            for check in case.get("alert_rule_test", [])
            if check["alertname"] == name
            for alert in check.get("exp_alerts") or []
            if not alert["exp_labels"].get("target")
        }
        if len(servers) >= 2 and len(same_place) == 1 and fired and fired < {i for i, _ in servers}:
            per_server.append(case["name"])
    assert per_server, f"no promtool case shows {name} firing for one of two servers in the same env/cluster/team"
