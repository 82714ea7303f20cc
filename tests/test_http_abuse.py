"""The admin API and the exporter's HTTP server under abuse (issue 14, item 6).

Real servers on 127.0.0.1, real sockets: stalled clients, bodies that never come, bursts of connections,
deeply nested JSON, and a readiness probe that must not describe the knowledge base's internals.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pg_architect.auditor.api import MAX_JSON_DEPTH, AdminServer, json_depth
from pg_architect.auditor.daemon import AuditRunner
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core.config import load_config
from pg_architect.core.httpserver import BACKLOG, HardenedHTTPServer
from pg_architect.exporter.server import ExporterServer
from pg_architect.exporter.target import Target

TOKEN = "abuse-test-token"
HOST = "127.0.0.1"


def _serve(server: HardenedHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def admin(pg_dsn: str, tmp_path: Path) -> Iterator[int]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cfg = load_config(None, env={"PG_ARCHITECT_AUDITOR_API_TOKEN_FILE": str(token)})
    KnowledgeBase.open(pg_dsn, cfg).close()  # migrated, as the daemon does on start
    yield from _serve(AdminServer((HOST, 0), cfg, pg_dsn, AuditRunner(cfg, pg_dsn, pg_dsn)))


def _request(port: int, raw: bytes, *, read_timeout: float = 30) -> bytes:
    """Send ``raw`` on a fresh connection and read until the server closes it or answers fully."""
    with socket.create_connection((HOST, port), timeout=read_timeout) as sock:
        sock.sendall(raw)
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def _get(port: int, path: str, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return _request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())


def _post(port: int, path: str, body: bytes, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return _request(port, head.encode() + body)


# -- JSON -------------------------------------------------------------------------------------------------


def test_json_depth_is_measured_without_recursion_and_ignores_brackets_in_strings() -> None:
    assert json_depth(b"[" * 60000) == 60000
    assert json_depth(b'{"a": "[[[[[[", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert json_depth(b"") == 0


@pytest.mark.parametrize(
    "body",
    [b"[" * 60000, b'{"a":' * 10000, b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)],
    ids=["60000 brackets", "10000 objects", "one level too deep"],
)
def test_deeply_nested_json_is_a_400_not_a_500(admin: int, body: bytes) -> None:
    response = _post(admin, "/admin/database/run-audit", body)
    assert _status(response) == 400, response[:300]
    assert b"nests deeper" in response


# -- authentication before the body, socket timeouts -------------------------------------------------------


def test_an_anonymous_request_is_refused_before_its_body_is_read(admin: int) -> None:
    with socket.create_connection((HOST, admin), timeout=30) as sock:
        # Announce 60 KB, send none of it: the answer must not wait for the body.
        sock.sendall(b"POST /admin/database/run-audit HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
        started = time.monotonic()
        response = _read_response(sock)
        waited = time.monotonic() - started
        assert _status(response) == 401, response
        # The server closes the connection too (the unread body must not be taken for a request).
        assert sock.recv(1) == b""
    # Far below the 10 s socket timeout: it answered without waiting for the body.
    assert waited < 5, f"the 401 took {waited:.1f} s"


def test_a_stalled_client_is_disconnected_by_the_socket_timeout(admin: int) -> None:
    stalled = []
    for _ in range(20):
        sock = socket.create_connection((HOST, admin), timeout=60)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        stalled.append(sock)
    half_body = socket.create_connection((HOST, admin), timeout=60)
    half_body.sendall(
        f"POST /admin/database/run-audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 100\r\n\r\n{".encode()
    )
    try:
        # Meanwhile others are served.
        assert _status(_get(admin, "/healthz")) == 200
        for sock in stalled:
            assert sock.recv(1) == b"", "the server must close a connection that stalls"
        response = _read_response(half_body)
        assert _status(response) == 408, response
    finally:
        for sock in [*stalled, half_body]:
            sock.close()


# -- bursts ----------------------------------------------------------------------------------------------


def _burst(port: int, path: str, clients: int) -> list[int | str]:
    barrier = threading.Barrier(clients, timeout=60)

    def one(_: int) -> int | str:
        try:
            sock = socket.create_connection((HOST, port), timeout=60)
        except OSError as exc:
            return f"connect: {exc}"
        with sock:
            barrier.wait()
            try:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                return _status(_read_response(sock))
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(clients)))


def test_a_burst_of_concurrent_requests_is_served_not_reset(admin: int) -> None:
    results = _burst(admin, "/healthz", 100)
    assert results == [200] * 100, [r for r in results if r != 200]
    assert BACKLOG >= 128


def test_the_exporter_serves_a_burst_of_concurrent_scrapes(pg_dsn: str) -> None:
    cfg = load_config(None, env={})
    target = Target("default", pg_dsn, cfg)
    server = ExporterServer((HOST, 0), target)
    try:
        for port in _serve(server):
            assert _burst(port, "/healthz", 100) == [200] * 100
            scrapes = _burst(port, "/metrics", 30)
            assert scrapes == [200] * 30, scrapes
    finally:
        target.close()


# -- readiness -------------------------------------------------------------------------------------------


def test_readyz_says_unavailable_without_the_socket_path_or_role(tmp_path: Path) -> None:
    socket_dir = tmp_path / "no-such-socket-dir"
    kb_dsn = f"host={socket_dir} port=5999 user=kb_secret_role dbname=kb_secret_db connect_timeout=2"
    cfg = load_config(None, env={})
    server = AdminServer((HOST, 0), cfg, kb_dsn, AuditRunner(cfg, kb_dsn, kb_dsn))
    for port in _serve(server):
        response = _get(port, "/readyz")
        assert _status(response) == 503, response
        body = json.loads(response.partition(b"\r\n\r\n")[2])
        assert body["status"] == "unavailable", body
        text = response.decode()
        for internal in (str(socket_dir), "kb_secret_role", "kb_secret_db", "5999", ".s.PGSQL"):
            assert internal not in text, f"/readyz shows {internal!r}: {text}"
