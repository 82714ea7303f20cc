"""A local stand-in for GitHub's REST API, pull requests only: ``GET /repos/{owner}/{repo}/pulls/{number}``.

A real HTTP server on 127.0.0.1 speaking the subset PyGithub reads for a pull request (state, merged,
merged_by, merged_at, closed_at), with bearer-token checks and GitHub's error bodies. Tests set a pull
request's state with ``open_pull`` / ``merge`` / ``close``; every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PULL = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls/(?P<number>\d+)$")


class GithubPulls(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str) -> None:
        self.token = token
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def html_url(self, repo: str, number: int) -> str:
        return f"https://github.com/{repo}/pull/{number}"

    def open_pull(self, repo: str, number: int, head: str = "pg-architect/index", base: str = "main") -> str:
        now = _now()
        with self.lock:
            self.pulls[(repo, number)] = {
                "url": f"{self.url}/repos/{repo}/pulls/{number}",
                "html_url": self.html_url(repo, number),
                "id": number * 1000,
                "number": number,
                "state": "open",
                "title": f"pg-architect: index #{number}",
                "created_at": now,
                "updated_at": now,
                "closed_at": None,
                "merged_at": None,
                "merged": False,
                "merged_by": None,
                "head": {"ref": head, "sha": "0" * 40},
                "base": {"ref": base, "sha": "1" * 40},
                "user": {"login": "pg-architect[bot]", "id": 1, "type": "Bot"},
            }
        return self.html_url(repo, number)

    def merge(self, repo: str, number: int, by: str) -> None:
        with self.lock:
            pull = self.pulls[(repo, number)]
            now = _now()
            pull.update(
                state="closed",
                merged=True,
                merged_at=now,
                closed_at=now,
                merged_by={"login": by, "id": 2, "type": "User"},
            )

    def close(self, repo: str, number: int) -> None:
        with self.lock:
            self.pulls[(repo, number)].update(state="closed", merged=False, closed_at=_now())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    server: GithubPulls

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        with self.server.lock:
            self.server.requests.append(("GET", self.path, auth))
        if auth not in (f"token {self.server.token}", f"Bearer {self.server.token}"):
            self._send(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
            return
        match = _PULL.match(self.path.split("?")[0])
        pull = None
        if match:
            key = (f"{match['owner']}/{match['repo']}", int(match["number"]))
            with self.server.lock:
                pull = dict(self.server.pulls[key]) if key in self.server.pulls else None
        if pull is None:
            self._send(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
            return
        self._send(200, pull)

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def github_pulls(token: str) -> Iterator[GithubPulls]:
    server = GithubPulls(token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
