"""A local HTTP server speaking the OpenAI chat-completions and embeddings API, for tests over the network.

Each request is captured (path, headers, JSON body). What it answers is decided by ``respond``, a function
of the parsed request returning a :class:`Reply`: a JSON object as the message content (structured
output), raw text, an HTTP status with headers, or a hang until the test releases it (for timeouts).
Embeddings are deterministic: a hashed bag of words of the input, of the dimension asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class Reply:
    content: dict[str, Any] | str | None = None  # dict: JSON content; str: raw text
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    hang: bool = False  # wait until the server is released (the client times out first)
    prompt_tokens: int = 100
    completion_tokens: int = 50


@dataclasses.dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def task(self) -> str:
        """'explain', 'propose' or 'embeddings' (from the prompt the auditor sent)."""
        if self.path.endswith("/embeddings"):
            return "embeddings"
        text = json.dumps(self.body.get("messages", []))
        return "propose" if "Propose the one optimisation" in text else "explain"

    @property
    def user_content(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []) if m.get("role") == "user")

    def context(self) -> dict[str, Any]:
        """The JSON context the auditor put after the question in the user message."""
        text = self.user_content
        return json.loads(text[text.index("{") :])


def embedding_of(text: str, dim: int) -> list[float]:
    vector = [0.0] * dim
    for word in text.lower().split():
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dim] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class FakeOpenAI:
    def __init__(self, respond: Callable[[Captured], Reply] | None = None, embedding_dim: int = 64) -> None:
        self.respond = respond or (lambda request: Reply({"type": "none", "sql": "", "reasoning": "", "confidence": 0}))
        self.embedding_dim = embedding_dim
        self.requests: list[Captured] = []
        self.release = threading.Event()
        self.refuse_structured = False  # answer 400 to requests carrying response_format
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                captured = Captured(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(captured)
                if self.path.endswith("/embeddings"):
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    dim = fake.embedding_dim
                    self._send(
                        200,
                        {
                            "object": "list",
                            "model": body.get("model"),
                            "data": [
                                {"object": "embedding", "index": i, "embedding": embedding_of(t, dim)}
                                for i, t in enumerate(inputs)
                            ],
                            "usage": {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)},
                        },
                    )
                    return
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if fake.refuse_structured and "response_format" in body:
                    self._send(400, {"error": {"message": "response_format is not supported", "type": "invalid"}})
                    return
                reply = fake.respond(captured)
                if reply.hang:
                    fake.release.wait()
                    return
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": "fake failure"}}, reply.headers)
                    return
                content = json.dumps(reply.content) if isinstance(reply.content, dict) else reply.content
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def of(self, task: str) -> list[Captured]:
        with self._lock:
            return [r for r in self.requests if r.task == task]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def serving(respond: Callable[[Captured], Reply] | None = None, embedding_dim: int = 64) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(respond, embedding_dim)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
