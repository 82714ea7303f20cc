"""``pg-architect check``, the auditor's part: can audits measure on this server, and can the knowledge base
live where it is configured."""

from __future__ import annotations

import dataclasses

from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.config import MeasurementConfig
from pg_architect.core.preflight import Check, Finding


@dataclasses.dataclass(frozen=True, slots=True)
class AuditorPreflightRow:
    hypopg_available: bool
    hypopg_version: str | None
    reads_all_data: bool
    tables: int
    unreadable: list[str] | None
    read_only: bool
    role_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class KbPreflightRow:
    vector_available: bool
    vector_version: str | None
    can_create_schema: bool
    schema_exists: bool
    is_superuser: bool
    datname: str
    role_name: str


def server_checks(cfg: MeasurementConfig) -> Check:
    """The audited server's findings for this measurement configuration."""

    def check(conn: db.Connection) -> list[Finding]:
        return check_server(conn, cfg)

    return check


def check_server(conn: db.Connection, cfg: MeasurementConfig) -> list[Finding]:
    """Findings for the audited server: read access, and how candidates will be measured (and whether safely)."""
    row = db.fetch_one(conn, db.query(conn, QUERIES, "preflight_auditor"), None, AuditorPreflightRow)
    assert row is not None
    role = db.Identifier(row.role_name).as_string(conn)
    major = db.server_facts(conn).version_num // 10000
    unreadable = row.unreadable or []
    out = [
        Finding(
            "read access to the audited tables",
            not unreadable,
            "pg_read_all_data"
            if row.reads_all_data
            else f"SELECT on all {row.tables} table(s)"
            if not unreadable
            else f"{len(unreadable)} of {row.tables} table(s) not readable: {', '.join(unreadable[:5])}"
            + (" ..." if len(unreadable) > 5 else ""),
            None if not unreadable else f"GRANT pg_read_all_data TO {role};  -- or GRANT SELECT on those tables",
        )
    ]
    hypopg = bool(row.hypopg_version) or (row.hypopg_available and not row.read_only)
    staging = cfg.staging_dsn is not None
    if cfg.mode == "staging" or (cfg.mode == "auto" and staging):
        mode, ok, detail = "staging", staging, "real builds and timings on the staging server; production untouched"
    elif cfg.mode == "hypothetical" or (cfg.mode == "auto" and hypopg):
        mode, ok = "hypothetical", hypopg
        detail = "hypopg: planner costs of hypothetical indexes, no lock, nothing built"
    elif cfg.mode == "rollback_build" or cfg.allow_blocking_builds:
        mode, ok = "rollback_build", not row.read_only
        detail = (
            f"real builds in rolled-back transactions, BLOCKING WRITES to each table while its index builds "
            f"(only when expected under {cfg.max_blocking_ms} ms)"
            if ok
            else "the server is read-only: an index cannot be built here"
        )
    else:
        mode, ok = "none", False
        detail = "no safe method: no hypopg, no staging server, and blocking builds are not allowed"
    fix = None
    if not ok:
        fix = (
            f"install hypopg (Debian: apt-get install postgresql-{major}-hypopg; then CREATE EXTENSION hypopg) or set "
            "measurement.staging_dsn; or allow builds that block writes: measurement.allow_blocking_builds: true"
        )
    out.append(Finding(f"measurement method ({cfg.mode})", ok, f"{mode}: {detail}", fix))
    if row.hypopg_version:
        hypopg_detail = f"installed {row.hypopg_version}"
    elif row.hypopg_available:
        hypopg_detail = (
            "available (created on first use)" if not row.read_only else "available, but the server is read-only"
        )
    else:
        hypopg_detail = "not installed on this server"
    out.append(
        Finding(
            "hypopg (hypothetical indexes)",
            hypopg,
            hypopg_detail,
            None if hypopg else f"apt-get install postgresql-{major}-hypopg (Debian) for lock-free measurement",
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
