"""The databases the auditor works on: one (``database.dsn``, or ``--dsn``), or the configured ``targets``.

Several targets share one knowledge base; every knowledge-base row carries its server's and database's identity
(``pgarch.targets``). One audit runs at a time per target (an advisory lock in the knowledge base), so several
auditor replicas can share the work: each scheduled job of a target is claimed for its slot in the knowledge
base first (``pgarch.job_claims``), and only the replica whose claim wins runs it.
"""

from __future__ import annotations

import dataclasses
import os
import socket

from pg_architect.core.config import Config
from pg_architect.core.errors import UsageError

DEFAULT = "default"


@dataclasses.dataclass(frozen=True, slots=True)
class AuditTarget:
    name: str
    dsn: str


def audit_targets(cfg: Config, dsn: str | None, only: str | None = None) -> list[AuditTarget]:
    """The databases to audit: ``dsn`` when given (the command line's ``--dsn`` or ``database.dsn``), else every
    configured target, or the one named ``only``."""
    if only is not None:
        found = [t for t in cfg.targets if t.name == only]
        if not found:
            names = ", ".join(t.name for t in cfg.targets) or "none configured"
            raise UsageError(f"no target named {only!r} (targets: {names})")
        return [AuditTarget(found[0].name, found[0].resolved_dsn())]
    if dsn is not None or not cfg.targets:
        if dsn is None:
            raise UsageError("nothing to audit: set database.dsn, --dsn, or targets")
        return [AuditTarget(DEFAULT, dsn)]
    return [AuditTarget(t.name, t.resolved_dsn()) for t in cfg.targets]


def replica_name() -> str:
    """Who claims a job: this host and process, as it appears in pgarch.job_claims."""
    return f"{socket.gethostname()}:{os.getpid()}"
