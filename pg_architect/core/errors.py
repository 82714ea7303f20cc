"""The one exception root of pg-architect; only the command line turns these into exit codes."""

from __future__ import annotations

import re


class PgArchitectError(Exception):
    """Root of every error pg-architect raises on purpose."""

    exit_code = 1


class ConfigError(PgArchitectError):
    """The configuration (file, environment or flags) is invalid; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class UsageError(PgArchitectError):
    """The command line was used wrongly."""

    exit_code = 2


class DatabaseError(PgArchitectError):
    """A database operation failed."""


class DatabaseUnavailable(DatabaseError):
    """The server cannot be reached, refused the connection, or went away."""


class QueryTimeout(DatabaseError):
    """A statement ran past its statement or lock timeout, or was cancelled at the deadline."""


class PrivilegeError(DatabaseError):
    """The role lacks a privilege the feature needs."""


class UnsafeSQLError(PgArchitectError):
    """SQL that did not come from our own code failed the allow-list and was not run."""


class AuditError(PgArchitectError):
    """An audit could not run or complete."""


class AuditAlreadyRunning(AuditError):
    """Another audit holds the knowledge base's audit lock."""


_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>[^@/?#\s]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide passwords in connection strings (URI or key=value form) inside ``text``."""
    text = _URI_PASSWORD.sub(lambda m: f"{m.group('head')}***@" if m.group("secret") else m.group(0), text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)
