"""``pg-architect check``, the auditor's part: can audits measure on this server, and can the knowledge base
live where it is configured."""

from __future__ import annotations

import dataclasses

from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.preflight import Finding


@dataclasses.dataclass(frozen=True, slots=True)
class AuditorPreflightRow:
    hypopg_available: bool
    hypopg_version: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class KbPreflightRow:
    vector_available: bool
    vector_version: str | None
    can_create_schema: bool
    schema_exists: bool
    is_superuser: bool
    datname: str
    role_name: str


def check_server(conn: db.Connection) -> list[Finding]:
    """Findings for the audited server: how candidates can be measured."""
    row = db.fetch_one(conn, db.query(conn, QUERIES, "preflight_auditor"), None, AuditorPreflightRow)
    assert row is not None
    out: list[Finding] = []
    if row.hypopg_version:
        hypopg = f"installed {row.hypopg_version}"
    elif row.hypopg_available:
        hypopg = "available"
    else:
        hypopg = "not available: measurements build real indexes in a rolled-back transaction instead"
    out.append(
        Finding(
            "hypopg (hypothetical indexes)",
            row.hypopg_available,
            hypopg,
            None
            if row.hypopg_available
            else "install hypopg (Debian: postgresql-<major>-hypopg) for lock-free measurement",
            required=False,
        )
    )
    return out


def check_knowledge_base(conn: db.Connection) -> list[Finding]:
    """Findings for the knowledge base's server (pgvector, and the right to create its schema)."""
    row = db.fetch_one(conn, db.query(conn, QUERIES, "kb_preflight"), None, KbPreflightRow)
    assert row is not None
    out = [
        Finding(
            "pgvector for the knowledge base",
            row.vector_available,
            f"vector {row.vector_version or 'available'} in database {row.datname}"
            if row.vector_available
            else f"pgvector is not installed on the server of database {row.datname}",
            None
            if row.vector_available
            else "install pgvector on that server, or point database.kb_dsn at a "
            "server that has it (the embedded server and the docker-compose image do)",
        )
    ]
    can_create = row.schema_exists or row.can_create_schema
    database, role = db.Identifier(row.datname).as_string(conn), db.Identifier(row.role_name).as_string(conn)
    out.append(
        Finding(
            "knowledge base schema",
            can_create,
            "schema pgarch exists"
            if row.schema_exists
            else "schema pgarch will be created on the first audit"
            if can_create
            else "the role cannot create schema pgarch",
            None if can_create else f"GRANT CREATE ON DATABASE {database} TO {role};",
        )
    )
    if row.vector_version is None and row.vector_available and not row.is_superuser:
        out.append(
            Finding(
                "pgvector extension created",
                False,
                "extension vector is not created yet and the role is not a superuser",
                f"CREATE EXTENSION vector; -- in database {row.datname}, as a superuser or database owner",
            )
        )
    return out
