"""End to end: PostgreSQL in trouble -> exporter -> Prometheus rules -> Alertmanager -> Slack.

Everything is real and on loopback: an embedded PostgreSQL with a small ``max_connections``, the exporter as a
subprocess, Prometheus with the shipped rules, Alertmanager with the shipped routing and Slack templates, and a
local HTTP server speaking Slack's incoming-webhook API. The scrape target carries static env/cluster/team labels
and Prometheus a `runbook_base_url` external label, as users set them. Only the timings differ from production,
and all by the same factor: a minute of the shipped configuration (``for``, ``group_wait``, ``group_interval``,
``repeat_interval``) is a second here, and Prometheus scrapes and evaluates every second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_architect.core.embedded import EmbeddedPostgres
from tests.stack import (
    Alertmanager,
    Exporter,
    Prometheus,
    SlackStandIn,
    fast_alertmanager_config,
    fast_rules,
    needs_alertmanager,
    needs_prometheus,
    prometheus_config,
    start_alertmanager,
    start_exporter,
    start_prometheus,
    wait_for,
)

pytestmark = [needs_prometheus, needs_alertmanager, pytest.mark.slow]

SPEED_UP = 60  # one minute of the shipped timings is one second here
MAX_CONNECTIONS = 20
SUPERUSER_RESERVED = 3
USABLE = MAX_CONNECTIONS - SUPERUSER_RESERVED  # PostgreSQL 16+ reserved_connections is 0 by default
# With the exporter's own connection, 16 of the 17 usable slots (94 %) are taken: over the 90 % threshold,
# and still below the limit, so the exporter and this test can always connect.
HELD = USABLE - 2
# As a user would set them: static labels on the scrape target, and the runbooks' base URL as an external label.
TARGET_LABELS = {"env": "prod", "cluster": "eu-1", "team": "payments"}
RUNBOOK = "https://runbooks.example.com/postgres/"
WHERE = "· env `prod` · cluster `eu-1` · team `payments`"
PLACE = " (prod/eu-1)"  # the Slack title's env/cluster


@dataclasses.dataclass
class Stack:
    postgres: EmbeddedPostgres
    exporter: Exporter
    prometheus: Prometheus
    alertmanager: Alertmanager
    slack: SlackStandIn

    def explain(self) -> str:
        """What every part saw, for a failure message."""
        return "\n".join(
            [
                f"Prometheus alerts: {self.prometheus.alerts()}",
                f"Alertmanager alerts: {self.alertmanager.alerts()}",
                self.slack.dump(),
                self.exporter.process.log(),
                self.prometheus.process.log(),
                self.alertmanager.process.log(),
            ]
        )


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A fresh stack per test; every process is stopped and every file removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="pgarch-e2e-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        postgres = EmbeddedPostgres(
            tmp / "pgdata",
            settings={
                "max_connections": str(MAX_CONNECTIONS),
                "superuser_reserved_connections": str(SUPERUSER_RESERVED),
                "shared_buffers": "16MB",
            },
        )
        cleanup.callback(postgres.destroy)
        postgres.start()
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("CREATE DATABASE shop")
        slack = cleanup.enter_context(SlackStandIn().running())
        url_file = tmp / "slack_webhook_url"
        url_file.write_text(slack.url + "\n", encoding="utf-8")
        alertmanager = start_alertmanager(cleanup, fast_alertmanager_config(url_file, SPEED_UP), tmp)
        exporter = start_exporter(cleanup, postgres.dsn(), tmp)
        config = prometheus_config(
            exporter.address,
            fast_rules(tmp, SPEED_UP),
            alertmanager.address,
            target_labels=[TARGET_LABELS],
            external_labels={"runbook_base_url": RUNBOOK.rstrip("/")},
        )
        prometheus = start_prometheus(cleanup, config, tmp)
        result = Stack(postgres, exporter, prometheus, alertmanager, slack)
        wait_for(
            lambda: prometheus.vector("instance:pgarch_connections_used:ratio"),
            20,
            "Prometheus scraping the exporter and recording the connection ratio",
            result.explain,
        )
        yield result


def _attachments(slack: SlackStandIn, alertname: str, status: str) -> list[dict[str, Any]]:
    """Slack attachments about ``alertname`` whose title says ``status`` ("firing" or "resolved")."""
    prefix = "[FIRING:" if status == "firing" else "[RESOLVED]"
    return [
        a
        for a in slack.attachments()
        if a.get("title", "").startswith(prefix) and alertname in a.get("title", "").split()
    ]


def _missing(text: str, expected: list[str]) -> list[str]:
    return [part for part in expected if part not in text]


def _humanize_percentage(value: float) -> str:
    """Prometheus' humanizePercentage: Go's %.4g of the value times 100."""
    return f"{value * 100:.4g}%"


def test_connections_over_90_percent_fire_a_critical_alert_that_reaches_slack_and_resolves(stack: Stack) -> None:
    started = time.monotonic()
    alertname = "PostgresConnectionsNearLimit"
    instance = stack.exporter.address
    assert not [a for a in stack.prometheus.alerts() if a["labels"]["alertname"] == alertname], stack.explain()

    with contextlib.ExitStack() as held:
        for _ in range(HELD):
            held.enter_context(psycopg.connect(stack.postgres.dsn(), autocommit=True))

        firing = wait_for(
            lambda: stack.prometheus.firing(alertname), 30, f"{alertname} firing in Prometheus", stack.explain
        )
        alert = firing[0]
        assert alert["labels"]["severity"] == "critical", alert
        assert alert["labels"]["instance"] == instance, alert
        assert {k: alert["labels"].get(k) for k in TARGET_LABELS} == TARGET_LABELS, alert
        value = float(alert["value"])
        assert value == pytest.approx((HELD + 1) / USABLE), (value, stack.prometheus.vector("pg_stat_activity_count"))

        messages = wait_for(
            lambda: _attachments(stack.slack, alertname, "firing"), 20, f"{alertname} in Slack", stack.explain
        )
        message = messages[0]
        assert message["title"] == f"[FIRING:1] CRITICAL {alertname}{PLACE}", stack.slack.dump()
        assert message["color"] == "danger", stack.slack.dump()
        expected = [
            f"PostgreSQL at {instance} is running out of connections",  # what
            "*Where:* server-wide",  # a server-wide alert: no database label
            f"instance `{instance}`",  # which server
            WHERE,  # the target's static labels, kept by the rules
            f"{_humanize_percentage(value)} of the usable connection slots",  # the value
            "(threshold: 90%)",
            "*Since:* ",
            f"<{RUNBOOK}{alertname}.md|{alertname} runbook>",
        ]
        missing = _missing(message["text"], expected)
        assert not missing, f"missing {missing} in the Slack message\n{stack.slack.dump()}"
        assert alertname in message["fallback"], stack.slack.dump()
    # The load stops: the connections are closed.

    wait_for(
        lambda: not [a for a in stack.prometheus.alerts() if a["labels"]["alertname"] == alertname],
        20,
        f"{alertname} resolved in Prometheus",
        stack.explain,
    )
    resolved = wait_for(
        lambda: _attachments(stack.slack, alertname, "resolved"), 20, f"{alertname} resolved in Slack", stack.explain
    )
    notice = resolved[0]
    assert notice["title"] == f"[RESOLVED] CRITICAL {alertname}{PLACE}", stack.slack.dump()
    assert notice["color"] == "good", stack.slack.dump()
    missing = _missing(
        notice["text"], [":white_check_mark:", f"instance `{instance}`", "*resolved:* ", f"<{RUNBOOK}{alertname}.md|"]
    )
    assert not missing, f"missing {missing} in the resolved notice\n{stack.slack.dump()}"
    assert len(_attachments(stack.slack, alertname, "firing")) == 1, f"repeated notices\n{stack.slack.dump()}"
    assert not stack.slack.rejected, stack.slack.dump()
    assert time.monotonic() - started < 90


def _slow_statements(dsn: str, stop: threading.Event, seconds: float) -> None:
    """Run ``pg_sleep(seconds)`` until told to stop or the server goes away."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(%s)", (seconds,))
    except psycopg.Error:
        pass  # the server was stopped under us: that is the point


def test_postgres_down_fires_reaches_slack_and_inhibits_the_latency_alert_it_causes(stack: Stack) -> None:
    """While PostgreSQL is down the exporter publishes only ``pg_up 0``. Alerts on instant gauges (connections)
    simply resolve; alerts computed over 5-minute windows (p95 latency, cache hit ratio) keep firing on the
    samples from before the outage: those are the symptoms Alertmanager must hold back."""
    started = time.monotonic()
    latency, down = "PostgresQueryLatencyP95High", "PostgresDown"
    instance = stack.exporter.address
    stop = threading.Event()
    # 10 sessions of 2.5 s statements: a p95 of 2.5 s, over the 2 s SLA, and 4 statements/s. The alert also
    # wants more than 0.1 statements/s over 5 minutes, i.e. 30 statements in the window: about 8 s of this.
    workers = [
        threading.Thread(target=_slow_statements, args=(stack.postgres.dsn("shop"), stop, 2.5), daemon=True)
        for _ in range(10)
    ]
    for worker in workers:
        worker.start()
    try:
        wait_for(
            lambda: [a for a in stack.prometheus.firing(latency) if a["labels"].get("datname") == "shop"],
            45,
            f"{latency} firing for database shop",
            lambda: (
                f"p95: {stack.prometheus.vector('datname:pgarch_query_duration_seconds:p95_5m')}\n" + stack.explain()
            ),
        )
        message = wait_for(
            lambda: _attachments(stack.slack, latency, "firing"), 20, f"{latency} in Slack", stack.explain
        )[0]
        assert message["title"] == f"[FIRING:1] CRITICAL {latency} on shop{PLACE}", stack.slack.dump()
        expected = ["database `shop`", f"instance `{instance}`", WHERE, f"{RUNBOOK}{latency}.md"]
        missing = _missing(message["text"], expected)
        assert not missing, f"missing {missing} in the Slack message\n{stack.slack.dump()}"

        stack.postgres.stop("fast")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)

    alert = wait_for(lambda: stack.prometheus.firing(down), 20, f"{down} firing in Prometheus", stack.explain)[0]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["instance"] == instance, alert
    assert {k: alert["labels"].get(k) for k in TARGET_LABELS} == TARGET_LABELS, alert
    assert stack.prometheus.firing(latency), f"the latency alert should outlive the outage\n{stack.explain()}"

    def inhibited() -> list[dict[str, Any]]:
        alerts = stack.alertmanager.alerts()
        sources = {a["fingerprint"] for a in alerts if a["labels"]["alertname"] == down}
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == latency
            and a["status"]["state"] == "suppressed"
            and sources & set(a["status"]["inhibitedBy"])
        ]

    wait_for(inhibited, 15, f"Alertmanager inhibiting {latency} by {down}", stack.explain)

    notice = wait_for(lambda: _attachments(stack.slack, down, "firing"), 20, f"{down} in Slack", stack.explain)[0]
    assert notice["title"] == f"[FIRING:1] CRITICAL {down}{PLACE}", stack.slack.dump()
    assert notice["color"] == "danger", stack.slack.dump()
    expected = [
        f"PostgreSQL at {instance} is down",
        "(pg_up == 0)",
        f"instance `{instance}`",
        WHERE,
        "*Since:* ",
        f"<{RUNBOOK}{down}.md|{down} runbook>",
    ]
    missing = _missing(notice["text"], expected)
    assert not missing, f"missing {missing} in the Slack message\n{stack.slack.dump()}"
    # The symptom was announced once, before the outage; nothing more about it while PostgreSQL is down.
    time.sleep(2)
    latency_messages = [a["title"] for a in stack.slack.attachments() if latency in a.get("title", "")]
    assert latency_messages == [f"[FIRING:1] CRITICAL {latency} on shop{PLACE}"], stack.slack.dump()
    assert time.monotonic() - started < 90
