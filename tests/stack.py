"""The monitoring stack as real processes on loopback, for the live tests.

The exporter (``python -m pg_architect exporter``), Prometheus and Alertmanager (Debian packages) run as
subprocesses with their logs in a temporary directory; a Slack stand-in runs in a thread. Every helper is
bounded in time and every process is stopped by the ``ExitStack`` it was registered with::

    with contextlib.ExitStack() as stack:
        exporter = start_exporter(stack, dsn, tmp)
        prometheus = start_prometheus(stack, prometheus_config([exporter.address]), tmp)
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

from pg_architect.core.embedded import free_port

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_TEMPLATES = REPO / "alertmanager" / "templates"

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus is not installed (Debian: prometheus)")
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None, reason="Alertmanager is not installed (Debian: prometheus-alertmanager)"
)

T = TypeVar("T")


# -- waiting ----------------------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    details: Callable[[], object] = lambda: "",
    interval: float = 0.25,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and ``details()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s\n{details()}", pytrace=False)
        time.sleep(interval)


# -- processes --------------------------------------------------------------------------------------------


class Process:
    """A subprocess whose output goes to a log file; ``stop()`` terminates it, then kills it."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self, tail: int = 4000) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f"--- {self.name} log ({self.log_path}) ---\n{text[-tail:]}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}\n{self.log()}", pytrace=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start_listening(
    stack: contextlib.ExitStack,
    name: str,
    command: Callable[[int], list[str]],
    ready_path: str,
    log_path: Path,
    timeout: float = 30,
) -> tuple[Process, str]:
    """Start a server on a free loopback port, retrying on another port if someone took it meanwhile."""
    for attempt in range(3):
        port = free_port()
        process = Process(name, command(port), log_path)
        stack.callback(process.stop)
        base = f"http://127.0.0.1:{port}"

        def ready(process: Process = process, base: str = base) -> bool:
            return process.proc.poll() is not None or _get_ok(base + ready_path)

        wait_for(ready, timeout, f"{name} ready at {base}{ready_path}", process.log)
        if process.proc.poll() is None:
            return process, base
        if "address already in use" not in process.log().lower() or attempt == 2:
            process.check_alive()
    raise AssertionError("unreachable")


# -- the exporter ------------------------------------------------------------------------------------------


class Exporter:
    def __init__(self, process: Process, base: str) -> None:
        self.process = process
        self.base = base
        self.address = base.removeprefix("http://")

    def metrics(self) -> str:
        return requests.get(f"{self.base}/metrics", timeout=10).text


def start_exporter(stack: contextlib.ExitStack, dsn: str, tmp: Path, *extra: str) -> Exporter:
    """The real exporter (``python -m pg_architect exporter``) as a subprocess on a free loopback port."""

    def command(port: int) -> list[str]:
        args = [sys.executable, "-m", "pg_architect", "exporter", "--dsn", dsn, "--config", "/dev/null"]
        return [*args, "--listen", f"127.0.0.1:{port}", *extra]

    process, base = _start_listening(stack, "exporter", command, "/healthz", tmp / "exporter.log")
    return Exporter(process, base)


# -- Prometheus --------------------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, process: Process, base: str) -> None:
        self.process = process
        self.base = base

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """The whole /api/v1/query answer (status, data or error), evaluated now or at Unix time ``at``."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = requests.get(f"{self.base}/api/v1/query", params=params, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def vector(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        body = self.query(expr, at)
        assert body.get("status") == "success", f"{expr}\n-> {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus' active alerts (pending and firing) from /api/v1/alerts."""
        body = requests.get(f"{self.base}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "5m", "10s") in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def speed_up(duration: str, factor: float, minimum: float = 1) -> str:
    """``duration`` divided by ``factor``, in whole seconds, at least ``minimum``."""
    return f"{max(round(seconds(duration) / factor), minimum):.0f}s"


def fast_rules(tmp: Path, factor: float, rule_files: Iterable[Path] = RULE_FILES) -> list[Path]:
    """Copies of the shipped rule files with every alert's ``for`` divided by ``factor``.

    Expressions, labels and annotations are unchanged, so the alerts are the shipped ones, only sooner.
    """
    out = []
    for path in rule_files:
        with path.open(encoding="utf-8") as fh:
            rules = yaml.safe_load(fh)
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = speed_up(rule["for"], factor)
        copy = tmp / f"fast-{path.name}"
        copy.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
        out.append(copy)
    return out


def prometheus_config(
    exporter: str | Sequence[str],
    rule_files: Iterable[Path] = RULE_FILES,
    alertmanager: str | None = None,
    interval: str = "1s",
    target_labels: Sequence[Mapping[str, str]] = (),
    external_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Prometheus configuration scraping one exporter (or several) under the shipped job name.

    ``target_labels[i]`` are static labels of exporter ``i`` (as users set env, cluster, team on their targets);
    ``external_labels`` go to ``global.external_labels`` (e.g. ``runbook_base_url``).
    """
    exporters = [exporter] if isinstance(exporter, str) else list(exporter)
    static_configs: list[dict[str, Any]] = []
    for i, address in enumerate(exporters):
        static: dict[str, Any] = {"targets": [address]}
        if i < len(target_labels):
            static["labels"] = dict(target_labels[i])
        static_configs.append(static)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                # PgArchitectExporterDown matches this job name.
                "job_name": "pg-architect-exporter",
                "scrape_timeout": interval,
                "static_configs": static_configs,
            }
        ],
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def start_prometheus(stack: contextlib.ExitStack, config: dict[str, Any], tmp: Path) -> Prometheus:
    assert PROMETHEUS is not None
    config_file = tmp / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def command(port: int) -> list[str]:
        return [
            str(PROMETHEUS),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]

    process, base = _start_listening(stack, "prometheus", command, "/-/ready", tmp / "prometheus.log")
    return Prometheus(process, base)


# -- Alertmanager ------------------------------------------------------------------------------------------


class Alertmanager:
    def __init__(self, process: Process, base: str) -> None:
        self.process = process
        self.base = base
        self.address = base.removeprefix("http://")

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's current alerts with their state (active, suppressed) from /api/v2/alerts."""
        alerts: list[dict[str, Any]] = requests.get(f"{self.base}/api/v2/alerts", timeout=10).json()
        return alerts


def fast_alertmanager_config(slack_url_file: Path, factor: float) -> dict[str, Any]:
    """The shipped configuration with the webhook URL file and template path swapped for the test's, and every
    route's group_wait, group_interval and repeat_interval divided by ``factor``."""
    with ALERTMANAGER_CONFIG.open(encoding="utf-8") as fh:
        config: dict[str, Any] = yaml.safe_load(fh)
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(slack_url_file)
    config["templates"] = [str(ALERTMANAGER_TEMPLATES / "*.tmpl")]

    def walk(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = speed_up(route[key], factor)
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    return config


def start_alertmanager(stack: contextlib.ExitStack, config: dict[str, Any], tmp: Path) -> Alertmanager:
    assert ALERTMANAGER is not None
    config_file = tmp / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def command(port: int) -> list[str]:
        return [
            str(ALERTMANAGER),
            f"--config.file={config_file}",
            f"--storage.path={tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port on 0.0.0.0
        ]

    process, base = _start_listening(stack, "alertmanager", command, "/-/ready", tmp / "alertmanager.log")
    return Alertmanager(process, base)


# -- Slack ---------------------------------------------------------------------------------------------------


class SlackStandIn:
    """A local HTTP server speaking Slack's incoming-webhook API; keeps every message it accepted.

    Like Slack, it answers 200 ``ok`` to a JSON message with ``text`` or ``attachments``, and 400
    ``invalid_payload`` / ``no_text`` otherwise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        received, rejected, lock = self._received, self.rejected, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    message = json.loads(body)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    status, answer = 400, b"invalid_payload"
                elif not (message.get("text") or message.get("attachments")):
                    status, answer = 400, b"no_text"
                else:
                    status, answer = 200, b"ok"
                with lock:
                    (received.append(message) if status == 200 else rejected.append(body.decode(errors="replace")))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/XXXXXXXX"

    @property
    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def attachments(self) -> list[dict[str, Any]]:
        return [a for message in self.received for a in message.get("attachments", [])]

    def dump(self) -> str:
        return "Slack received:\n" + json.dumps(self.received, indent=1) + f"\nSlack rejected: {self.rejected}"

    @contextlib.contextmanager
    def running(self) -> Iterator[SlackStandIn]:
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
