"""A small TCP proxy of our own, on 127.0.0.1, to play a bad network between pg-architect and PostgreSQL.

Modes, switchable while connections are open: ``pass`` forwards; ``latency`` delays every chunk in both
directions by ``delay_s``; ``blackhole`` keeps every connection open but forwards nothing (a silent peer);
``drop`` closes every connection and refuses new ones (a peer that went away). Every loop is bounded by
the proxy's own stop flag; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

Mode = Literal["pass", "latency", "blackhole", "drop"]
_TICK_S = 0.05


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        assert upstream_host == "127.0.0.1", "test traffic stays on 127.0.0.1"
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(_TICK_S)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0

    # -- control ---------------------------------------------------------------------------------------
    def set(self, mode: Mode, delay_s: float = 0.0) -> None:
        self.mode, self.delay_s = mode, delay_s
        if mode == "drop":
            self._close_all()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets) // 2

    def __enter__(self) -> Proxy:
        thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._close_all()
        self._listener.close()
        for thread in list(self._threads):
            thread.join(5)

    # -- plumbing --------------------------------------------------------------------------------------
    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "drop":
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._sockets.update((client, server))
            thread = threading.Thread(target=self._pump, args=(client, server), name="proxy-pump", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while not self._stop.is_set():
                with self._lock:
                    if client not in self._sockets:
                        return
                if self.mode == "blackhole":
                    time.sleep(_TICK_S)  # hold everything: read nothing, send nothing
                    continue
                readable, _, _ = select.select(list(peers), [], [], _TICK_S)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "latency" and self.delay_s > 0:
                        time.sleep(self.delay_s)
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.discard(client)
                self._sockets.discard(server)
            client.close()
            server.close()


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    with Proxy(port) as proxy:
        yield proxy
