"""Local HTTP servers speaking the APIs of SaaS that cannot run here: a Slack incoming webhook and Grafana's
annotation API. Tests talk to them over the network, exactly as pg-architect talks to the real services.

- ``SlackWebhook``: ``POST /services/...`` with a JSON body; answers ``ok`` (200), or what ``answers`` queues
  (429 with ``Retry-After``, 500, 400 ``invalid_blocks`` ...); checks Slack's documented limits and refuses a
  payload that breaks them with 400 ``invalid_blocks`` as Slack does.
- ``GrafanaApi``: ``POST /api/annotations`` and ``GET /api/annotations`` with a bearer service-account token
  (401 otherwise), validating the fields Grafana requires.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer_next(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        for _ in range(times):
            self.answers.append((status, headers or {}, body))

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.requests.append(
                        {"method": method, "path": url.path, "headers": dict(self.headers), "body": body}
                    )
                    if outer.answers:
                        status, headers, payload = outer.answers.popleft()
                    else:
                        status, headers, payload = outer.handle(
                            method, url.path, parse_qs(url.query), self.headers, body
                        )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                self._serve("POST")

            def do_GET(self) -> None:
                self._serve("GET")

        return Handler


class SlackWebhook(_Server):
    PATH = "/services/T000/B000/XXXXXXXX"

    @property
    def webhook_url(self) -> str:
        return self.url + self.PATH

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST"]

    def handle(
        self, method: str, path: str, query: Any, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or path != self.PATH:
            return 404, {}, b"no_service"
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {}, b"invalid_payload"
        if not isinstance(doc, dict) or not (doc.get("text") or doc.get("blocks")):
            return 400, {}, b"no_text"
        if problem := _block_problem(doc):
            return 400, {}, f"invalid_blocks: {problem}".encode()
        return 200, {"Content-Type": "text/html"}, b"ok"


def _block_problem(doc: dict[str, Any]) -> str | None:
    """Slack's documented limits for messages and blocks."""
    blocks = doc.get("blocks") or []
    if len(doc.get("text") or "") > 40_000:
        return "text longer than 40000"
    if len(blocks) > 50:
        return f"{len(blocks)} blocks (max 50)"
    for i, b in enumerate(blocks):
        kind = b.get("type")
        if kind not in ("header", "section", "divider", "context"):
            return f"block {i}: unknown type {kind!r}"
        if kind == "header" and len(b["text"]["text"]) > 150:
            return f"block {i}: header longer than 150"
        if kind == "section":
            if "text" in b and len(b["text"]["text"]) > 3000:
                return f"block {i}: section text longer than 3000"
            fields = b.get("fields") or []
            if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):
                return f"block {i}: more than 10 fields or a field longer than 2000"
            if "text" not in b and not fields:
                return f"block {i}: section without text or fields"
    return None


class GrafanaApi(_Server):
    def __init__(self, token: str = "glsa_test") -> None:
        super().__init__()
        self.token = token
        self.annotations: list[dict[str, Any]] = []

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        json_headers = {"Content-Type": "application/json"}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, json_headers, json.dumps({"message": "invalid API key"}).encode()
        if path != "/api/annotations":
            return 404, json_headers, json.dumps({"message": "Not found"}).encode()
        if method == "GET":
            tags = query.get("tags", [])
            found = [a for a in self.annotations if all(t in a["tags"] for t in tags)]
            return 200, json_headers, json.dumps(found).encode()
        doc = json.loads(body or b"{}")
        if not isinstance(doc.get("text"), str) or not doc["text"]:
            return 400, json_headers, json.dumps({"message": "text is required"}).encode()
        if not isinstance(doc.get("time"), int) or ("timeEnd" in doc and doc["timeEnd"] < doc["time"]):
            return 400, json_headers, json.dumps({"message": "bad time range"}).encode()
        annotation = {"id": len(self.annotations) + 1, **doc}
        self.annotations.append(annotation)
        return 200, json_headers, json.dumps({"message": "Annotation added", "id": annotation["id"]}).encode()
