"""The exporter's HTTP endpoints: ``/metrics``, ``/probe?target=NAME``, ``/healthz`` and an index page.

``/metrics`` serves the database of ``database.dsn`` (when there is one) and the exporter's own ``process_*``
series; ``/probe?target=NAME`` serves one database of ``targets`` (Prometheus' multi-target pattern). A probe
names a configured target, never a DSN: credentials stay in the configuration.
"""

from __future__ import annotations

import gzip
import logging
import threading
from urllib.parse import parse_qs, urlsplit

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.process_collector import ProcessCollector

from pg_architect.core.config import Config
from pg_architect.core.httpserver import HardenedHTTPServer, TimeoutHandler
from pg_architect.exporter import exposition
from pg_architect.exporter.fleet import Fleet
from pg_architect.exporter.target import Target

log = logging.getLogger(__name__)

# Prometheus sends its scrape timeout; answer a little before it so the answer is not thrown away.
_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
_TIMEOUT_MARGIN_S = 0.5

INDEX = b"""<html><head><title>pg-architect exporter</title></head><body>
<h1>pg-architect exporter</h1><p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a>
&middot; /probe?target=NAME for a database of <code>targets</code></p>
</body></html>"""


def scrape_budget(header: str | None, configured: float) -> float:
    """The budget for one scrape: the configured one, shortened to fit Prometheus' own timeout."""
    try:
        offered = float(header) - _TIMEOUT_MARGIN_S if header else configured
    except ValueError:
        offered = configured
    return max(min(configured, offered), 0.1)


class _Families:
    """Adapts one scrape's metric families to what prometheus_client's encoders expect."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class ExporterServer(HardenedHTTPServer):
    """Backlog, socket timeouts and a bound on concurrent scrapes from core.httpserver."""

    def __init__(
        self,
        address: tuple[str, int],
        target: Target | None,
        *,
        fleet: Fleet | None = None,
        config: Config | None = None,
    ) -> None:
        if target is None and config is None:
            raise ValueError("ExporterServer needs a target or a config")
        self.target = target
        self.fleet = fleet
        self.config: Config = config if config is not None else target.config  # type: ignore[union-attr]
        self.process = ProcessCollector(registry=None)
        super().__init__(address, _Handler)


class _Handler(TimeoutHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    timeout = 30.0  # per socket read or write; a scrape itself is bounded by its budget, not by this

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._metrics()
        elif url.path == "/probe":
            self._probe(parse_qs(url.query).get("target", []))
        elif url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif url.path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _budget(self) -> float:
        return scrape_budget(self.headers.get(_TIMEOUT_HEADER), self.server.config.exporter.scrape_budget_s)

    def _metrics(self) -> None:
        target = self.server.target
        families = target.scrape(self._budget()) if target is not None else []
        self._families([*families, *self.server.process.collect()])

    def _probe(self, names: list[str]) -> None:
        fleet = self.server.fleet
        if len(names) != 1 or not names[0]:
            self._send(400, b"give exactly one target: /probe?target=NAME (a name from targets)\n", "text/plain")
            return
        if fleet is None or names[0] not in fleet.probes:
            # The name is not echoed: a DSN pasted into the URL must not come back in a response or a log.
            self._send(404, b"unknown target (see targets in the configuration)\n", "text/plain; charset=utf-8")
            return
        self._families(fleet.probe(names[0], self._budget()))

    def _families(self, families: list[Metric]) -> None:
        accept = self.headers.get("Accept", "")
        if "application/openmetrics-text" in accept and "text/plain" not in accept and "*/*" not in accept:
            # OpenMetrics only for a client that accepts nothing else. Prometheus accepts the text format too,
            # and gets it, as from postgres_exporter: ours is written ten times faster than prometheus_client's
            # OpenMetrics (whose writer keeps each counter's sample names, so the names survive either way).
            body = openmetrics.generate_latest(_Families(families))  # type: ignore[arg-type,no-untyped-call,unused-ignore]
            content_type = openmetrics.CONTENT_TYPE_LATEST
        else:
            body, content_type = exposition.encode(families), exposition.CONTENT_TYPE
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        self._send(
            200,
            gzip.compress(body, compresslevel=1) if gzipped else body,
            content_type,
            {"Content-Encoding": "gzip"} if gzipped else None,
        )

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # The request line may carry a query string; only the path is logged.
        log.debug("%s - %s", self.address_string(), urlsplit(self.path).path)


def serve(server: ExporterServer, stop: threading.Event) -> None:
    """Serve until ``stop`` is set (signal handlers only set it)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        if server.target is not None:
            server.target.close()
        if server.fleet is not None:
            server.fleet.close()
