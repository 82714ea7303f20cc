"""The exporter's HTTP endpoints: ``/metrics``, ``/healthz`` and an index page."""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from pg_architect.core.httpserver import HardenedHTTPServer, TimeoutHandler
from pg_architect.exporter.target import Target

log = logging.getLogger(__name__)

# Prometheus sends its scrape timeout; answer a little before it so the answer is not thrown away.
_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
_TIMEOUT_MARGIN_S = 0.5

INDEX = b"""<html><head><title>pg-architect exporter</title></head><body>
<h1>pg-architect exporter</h1><p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>
</body></html>"""


class _Families:
    """Adapts one scrape's metric families to what prometheus_client's encoders expect."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def scrape_budget(header: str | None, configured: float) -> float:
    """The budget for one scrape: the configured one, shortened to fit Prometheus' own timeout."""
    try:
        offered = float(header) - _TIMEOUT_MARGIN_S if header else configured
    except ValueError:
        offered = configured
    return max(min(configured, offered), 0.1)


class ExporterServer(HardenedHTTPServer):
    """Backlog, socket timeouts and a bound on concurrent scrapes from core.httpserver."""

    def __init__(self, address: tuple[str, int], target: Target) -> None:
        self.target = target
        super().__init__(address, _Handler)


class _Handler(TimeoutHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    timeout = 30.0  # per socket read or write; a scrape itself is bounded by its budget, not by this

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        target = self.server.target
        budget = scrape_budget(self.headers.get(_TIMEOUT_HEADER), target.config.exporter.scrape_budget_s)
        families = target.scrape(budget)
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(_Families(families))  # type: ignore[arg-type,unused-ignore]
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
        log.debug("%s - %s", self.address_string(), format % args)


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
        server.target.close()
