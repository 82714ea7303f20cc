"""One small HTTP client for the webhooks and APIs pg-architect posts to (Slack, Grafana).

Bounded retries: 429 (honouring ``Retry-After`` up to a cap) and 5xx or a connection error are retried
``retries`` times with backoff; any other answer is returned to the caller, which decides what it means.
Never logs a URL's secret part: a Slack webhook URL *is* the secret, so errors name the host only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pg_architect.core.errors import PgArchitectError

log = logging.getLogger(__name__)

RETRIES = 3
TIMEOUT_S = 10.0
MAX_RETRY_AFTER_S = 30.0


class DeliveryError(PgArchitectError):
    """An integration could not deliver (after the bounded retries)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def request(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    *,
    retries: int = RETRIES,
    timeout: float = TIMEOUT_S,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Send once, retrying 429/5xx/connection errors up to ``retries`` times; raise DeliveryError when all
    attempts failed that way."""
    last = ""
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        wait = backoff_s * (2**attempt)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            answer = Response(exc.code, exc.read(), dict(exc.headers.items()) if exc.headers else {})
            if exc.code != 429 and exc.code < 500:
                return answer
            last = f"{exc.code} {answer.body[:200].decode(errors='replace')}".strip()
            retry_after = answer.headers.get("Retry-After")
            if exc.code == 429 and retry_after and retry_after.strip().isdigit():
                wait = min(float(retry_after), MAX_RETRY_AFTER_S)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"cannot connect: {reason}"
        if attempt < retries:
            log.info("%s %s: %s; retry %d of %d in %.1f s", method, host_of(url), last, attempt + 1, retries, wait)
            sleep(wait)
    raise DeliveryError(f"{method} {host_of(url)} failed after {retries + 1} attempt(s): {last}")


def post_json(url: str, doc: Any, headers: Mapping[str, str] | None = None, **kw: Any) -> Response:
    body = json.dumps(doc).encode()
    return request("POST", url, body, {"Content-Type": "application/json", **(headers or {})}, **kw)
