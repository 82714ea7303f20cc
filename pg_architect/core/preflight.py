"""What ``pg-architect check`` is made of: findings, each with its fix, and running checks on one server.

The exporter checks what monitoring needs (pg_architect.exporter.preflight), the auditor what audits need
(pg_architect.auditor.preflight); the CLI runs both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pg_architect.core import db
from pg_architect.core.errors import PgArchitectError

Check = Callable[[db.Connection], list["Finding"]]


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


def on_server(dsn: str, label: str, checks: Sequence[Check], timeouts: db.Timeouts) -> list[Finding]:
    """Connect to ``dsn`` and run ``checks``; a server that cannot be reached is itself a finding."""
    try:
        with db.connect(dsn, db.Role.CHECK, timeouts) as conn:
            findings = [Finding(f"connect to {label}", True, "connected")]
            for check in checks:
                findings += check(conn)
            return findings
    except PgArchitectError as exc:
        return [Finding(f"connect to {label}", False, str(exc), "check the DSN, that the server runs, and pg_hba.conf")]
