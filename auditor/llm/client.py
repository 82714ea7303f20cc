"""The one connection to an OpenAI-compatible model: chat completions and embeddings, bounded.

Everything the model is asked goes through :class:`ModelClient`: a per-request timeout, bounded retries with
exponential backoff on 429 and 5xx (``Retry-After`` honoured up to a cap), and a per-audit budget of requests
and tokens; once the budget is spent every further call raises :class:`BudgetExhausted` and the audit goes on
without the model. Answers are asked for as JSON with a JSON schema (``response_format: json_schema``); a
server that refuses structured output is asked again once for JSON in text, and a JSON object is taken from
the text. Usage (requests by outcome, tokens by kind, latency) is counted in :class:`Usage`, which the audit
stores in the knowledge base, where the exporter reads it (``pgarch_llm_*``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai

from pg_architect.auditor.llm.errors import BudgetExhausted, ModelError, ModelUnavailable
from pg_architect.core.config import Config

__all__ = ["Budget", "BudgetExhausted", "ModelClient", "ModelError", "ModelUnavailable", "Usage", "parse_json_object"]

log = logging.getLogger(__name__)

#: Outcomes counted in pgarch_llm_requests_total{outcome}.
OUTCOMES = ("ok", "malformed", "timeout", "rate_limited", "server_error", "error", "budget_exhausted")
TOKEN_KINDS = ("prompt", "completion", "embedding")
MAX_BACKOFF_S = 30.0


#: Calls (each after its retries) failing in a row before the client stops asking for this audit.
MAX_CONSECUTIVE_FAILURES = 3


@dataclasses.dataclass
class Usage:
    """What one audit spent on the model (thread-safe counters)."""

    requests: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    tokens: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    latency_s: float = 0.0  # summed over every HTTP request, failed ones too
    latency_count: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, outcome: str, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1
            if seconds is not None:
                self.latency_s += seconds
                self.latency_count += 1

    def spend(self, kind: str, tokens: int) -> None:
        with self._lock:
            self.tokens[kind] = self.tokens.get(kind, 0) + max(tokens, 0)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    @property
    def total_requests(self) -> int:
        return sum(v for k, v in self.requests.items() if k != "budget_exhausted")

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "tokens": dict(self.tokens),
            "latency_seconds_sum": round(self.latency_s, 6),
            "latency_seconds_count": self.latency_count,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    max_requests: int
    max_tokens: int


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's text: the whole text, a fenced block, or the outermost ``{...}``."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    outer = _JSON_OBJECT.search(text)
    if outer:
        candidates.append(outer.group(0))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ModelError("the model's answer is not a JSON object")


class ModelClient:
    """Chat completions and embeddings against ``llm.base_url`` with ``llm.model``, within a budget."""

    def __init__(
        self,
        *,
        base_url: str | None,
        model: str,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        budget: Budget,
        embedding_model: str | None = None,
        usage: Usage | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_s: float = 1.0,
    ) -> None:
        self.model = model
        self.embedding_model = embedding_model
        self.max_retries = max_retries
        self.budget = budget
        self.usage = usage or Usage()
        self._sleep = sleep
        self._backoff_s = backoff_s
        self._structured = True  # until the server refuses response_format
        self._failures_in_a_row = 0
        # The package's own retries are off: ours count each attempt and respect the audit's budget.
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",  # local servers (vLLM, Ollama) take any key
            timeout=timeout_s,
            max_retries=0,
        )

    @classmethod
    def from_config(cls, cfg: Config, **kw: Any) -> ModelClient:
        llm = cfg.llm
        if not llm.model:
            raise ModelError("llm.model is not set")
        return cls(
            base_url=llm.base_url,
            model=llm.model,
            api_key=cfg.secret("openai_api_key"),
            timeout_s=llm.timeout_s,
            max_retries=llm.max_retries,
            budget=Budget(llm.max_requests, llm.max_tokens),
            embedding_model=llm.embedding_model,
            **kw,
        )

    def close(self) -> None:
        self._client.close()

    # -- budget ------------------------------------------------------------------------------------
    def _reserve(self) -> None:
        if self._failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
            raise ModelUnavailable(
                f"the model's server failed {self._failures_in_a_row} calls in a row: not asked again in this audit"
            )
        if self.usage.total_requests >= self.budget.max_requests:
            self.usage.count("budget_exhausted")
            raise BudgetExhausted(f"the audit's budget of {self.budget.max_requests} model request(s) is spent")
        if self.usage.total_tokens >= self.budget.max_tokens:
            self.usage.count("budget_exhausted")
            raise BudgetExhausted(f"the audit's budget of {self.budget.max_tokens} model token(s) is spent")

    def _remaining_tokens(self) -> int:
        return max(self.budget.max_tokens - self.usage.total_tokens, 0)

    # -- one call with retries ---------------------------------------------------------------------
    def _call(self, what: str, request: Callable[[], Any]) -> tuple[Any, float]:
        attempt = 0
        while True:
            self._reserve()
            started = time.monotonic()
            try:
                response = request()
            except openai.APITimeoutError as exc:
                self.usage.count("timeout", time.monotonic() - started)
                error: ModelError = ModelError(f"{what}: the model did not answer in time")
                retry_after = None
                cause: Exception = exc
            except openai.RateLimitError as exc:
                self.usage.count("rate_limited", time.monotonic() - started)
                error = ModelError(f"{what}: rate limited by the model's server (HTTP 429)")
                retry_after = _retry_after(exc.response.headers if exc.response is not None else {})
                cause = exc
            except openai.InternalServerError as exc:
                self.usage.count("server_error", time.monotonic() - started)
                error = ModelError(f"{what}: the model's server failed (HTTP {exc.status_code})")
                retry_after = _retry_after(exc.response.headers if exc.response is not None else {})
                cause = exc
            except openai.APIConnectionError as exc:
                self.usage.count("error", time.monotonic() - started)
                error = ModelError(f"{what}: cannot reach the model's server ({type(exc).__name__})")
                retry_after = None
                cause = exc
            except openai.APIStatusError as exc:
                # 4xx other than 429: retrying will not help; the caller may fall back (response_format).
                self.usage.count("error", time.monotonic() - started)
                raise _StatusError(
                    f"{what}: the model's server answered HTTP {exc.status_code}", exc.status_code
                ) from exc
            else:
                # Counted by the caller once it knows whether the answer was usable (ok or malformed).
                self._failures_in_a_row = 0
                return response, time.monotonic() - started
            if attempt >= self.max_retries:
                self._failures_in_a_row += 1
                raise error from cause
            delay = min(retry_after if retry_after is not None else self._backoff_s * 2**attempt, MAX_BACKOFF_S)
            log.info("%s; retrying in %.1fs (attempt %d of %d)", error, delay, attempt + 2, self.max_retries + 1)
            self._sleep(delay)
            attempt += 1

    # -- chat ------------------------------------------------------------------------------------
    def complete_json(
        self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], *, name: str, max_tokens: int = 1200
    ) -> dict[str, Any]:
        """The model's answer to ``messages`` as a JSON object (structured output, else JSON in text)."""
        limit = min(max_tokens, self._remaining_tokens()) or 1
        if self._structured:
            try:
                return self._chat(
                    messages,
                    limit,
                    name,
                    {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": True}},
                )
            except _StatusError as exc:
                if exc.status not in (400, 404, 415, 422):
                    raise ModelError(str(exc)) from None
                # Older or smaller servers do not take response_format: ask for JSON in the text instead.
                log.info("the model's server refused structured output (HTTP %d): asking for JSON in text", exc.status)
                self._structured = False
        hint = {
            "role": "system",
            "content": "Answer with one JSON object and nothing else, matching this JSON schema: "
            + json.dumps(schema, separators=(",", ":")),
        }
        try:
            return self._chat([*messages, hint], limit, name, None)
        except _StatusError as exc:
            raise ModelError(str(exc)) from None

    def _chat(
        self, messages: Sequence[Mapping[str, str]], limit: int, name: str, response_format: dict[str, Any] | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": limit,
            "temperature": 0,
        }
        if response_format is not None:
            kwargs["response_format"] = response_format
        response, seconds = self._call(name, lambda: self._client.chat.completions.create(**kwargs))
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage.spend("prompt", int(getattr(usage, "prompt_tokens", 0) or 0))
            self.usage.spend("completion", int(getattr(usage, "completion_tokens", 0) or 0))
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message is not None else None
        if not content:
            self.usage.count("malformed", seconds)
            raise ModelError(f"{name}: the model's answer is empty")
        try:
            answer = parse_json_object(content)
        except ModelError:
            self.usage.count("malformed", seconds)
            raise ModelError(f"{name}: the model's answer is not a JSON object") from None
        self.usage.count("ok", seconds)
        return answer

    # -- embeddings --------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of ``texts`` with ``llm.embedding_model``, in order."""
        if not self.embedding_model:
            raise ModelError("llm.embedding_model is not set")
        model = self.embedding_model
        try:
            response, seconds = self._call(
                "embedding", lambda: self._client.embeddings.create(model=model, input=list(texts))
            )
        except _StatusError as exc:
            raise ModelError(str(exc)) from None
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage.spend("embedding", int(getattr(usage, "prompt_tokens", 0) or 0))
        data = sorted(response.data, key=lambda d: d.index)
        vectors = [[float(x) for x in d.embedding] for d in data]
        if len(vectors) != len(texts) or not vectors or any(len(v) != len(vectors[0]) or not v for v in vectors):
            self.usage.count("malformed", seconds)
            raise ModelError("embedding: the answer does not hold one vector of one dimension per text")
        self.usage.count("ok", seconds)
        return vectors


class _StatusError(ModelError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(headers: Mapping[str, str] | Any) -> float | None:
    try:
        value = headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
