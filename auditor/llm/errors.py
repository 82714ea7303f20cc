"""The model's errors, apart from the client so that an audit without a model never imports ``openai``."""

from __future__ import annotations

from pg_architect.core.errors import PgArchitectError


class ModelError(PgArchitectError):
    """The model gave no usable answer (after retries); the message says why, never a key or a prompt."""


class BudgetExhausted(ModelError):
    """This audit's request or token budget for the model is spent."""


class ModelUnavailable(BudgetExhausted):
    """The model's server failed several calls in a row: the rest of the audit goes on without it."""
