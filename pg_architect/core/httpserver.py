"""The HTTP server both processes listen with: the stdlib's threading server, hardened against abuse.

Three limits the stdlib leaves open: its listen backlog is 5, so a burst of concurrent connections is
reset by the kernel; a connection has no timeout, so a client that sends nothing (or half a body) holds a
thread forever; and each connection gets a thread with no bound. Here the backlog is 128, every socket
read and write times out, and at most ``max_connections`` handlers run at once: the rest wait in the
kernel's accept queue (not reset) until one finishes.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BACKLOG", "HardenedHTTPServer", "TimeoutHandler"]

#: Connections the kernel queues before resetting new ones (Linux caps it at net.core.somaxconn).
BACKLOG = 128


class HardenedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a real backlog and a bound on concurrent handler threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG
    max_connections = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._stopping = threading.Event()
        super().__init__(address, handler)

    def shutdown(self) -> None:
        self._stopping.set()
        super().shutdown()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Wait for a free handler slot before accepting more: waiting connections stay queued in the
        # kernel, not reset. Shutdown does not wait for a slot.
        while not self._slots.acquire(timeout=0.2):
            if self._stopping.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class TimeoutHandler(BaseHTTPRequestHandler):
    """A request handler whose socket reads and writes give up after ``timeout`` seconds.

    The stdlib applies ``timeout`` to the connection in ``setup()``; a request line or headers that do
    not arrive in time end the connection (``handle_one_request`` closes it on ``TimeoutError``).
    """

    timeout = 10.0

    def read_body(self, length: int) -> bytes:
        """Exactly ``length`` bytes of body; raises TimeoutError when the client stalls."""
        chunks: list[bytes] = []
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                raise ConnectionError("the client closed the connection inside the body")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
