"""``pg-architect check``, the exporter's part: is this server ready to be monitored, and how to fix what is not."""

from __future__ import annotations

import dataclasses

from pg_architect.core import db
from pg_architect.core.errors import PgArchitectError
from pg_architect.core.preflight import Finding
from pg_architect.exporter.queries import QUERIES

MIN_SERVER_VERSION = 130000


@dataclasses.dataclass(frozen=True, slots=True)
class PreflightRow:
    server_version_num: int
    server_version: str
    shared_preload_libraries: str | None
    compute_query_id: str | None
    track_io_timing: str
    is_superuser: bool
    has_pg_monitor: bool
    pgss_version: str | None
    pgss_available: bool
    role_name: str
    datname: str
    reserved_connections: int | None
    can_use_reserved: bool | None


def _libraries(setting: str | None) -> set[str]:
    return {lib.strip().strip('"') for lib in (setting or "").split(",") if lib.strip()}


def check_server(conn: db.Connection) -> list[Finding]:
    """Findings for the monitored server."""
    row = db.fetch_one(conn, db.query(conn, QUERIES, "preflight"), None, PreflightRow)
    assert row is not None
    version_ok = row.server_version_num >= MIN_SERVER_VERSION
    out = [
        Finding(
            "server version",
            version_ok,
            f"PostgreSQL {row.server_version}",
            None if version_ok else "upgrade to PostgreSQL 13 or later",
        )
    ]
    if row.shared_preload_libraries is None:
        # The role may not read the setting (no pg_monitor): pg_stat_statements answering proves it is loaded.
        preloaded = row.pgss_version is not None and _pgss_answers(conn)
        out.append(
            Finding(
                "pg_stat_statements loaded",
                preloaded,
                "shared_preload_libraries is hidden from this role"
                + ("; pg_stat_statements answers" if preloaded else ""),
                None if preloaded else "grant pg_monitor (below) so the setting can be checked",
            )
        )
    else:
        libraries = _libraries(row.shared_preload_libraries)
        preloaded = "pg_stat_statements" in libraries
        fix = (
            f"ALTER SYSTEM SET shared_preload_libraries = '{','.join(sorted(libraries | {'pg_stat_statements'}))}'"
            "; then restart PostgreSQL" + ("" if row.pgss_available else " (install the contrib package first)")
        )
        out.append(
            Finding(
                "pg_stat_statements loaded",
                preloaded,
                f"shared_preload_libraries = '{row.shared_preload_libraries}'",
                None if preloaded else fix,
            )
        )
    out.append(
        Finding(
            "pg_stat_statements created",
            row.pgss_version is not None,
            f"version {row.pgss_version}" if row.pgss_version else f"not created in database {row.datname}",
            None if row.pgss_version else f"CREATE EXTENSION pg_stat_statements; -- in database {row.datname}",
        )
    )
    if row.compute_query_id is not None:
        qid_ok = row.compute_query_id in ("on", "regress") or (row.compute_query_id == "auto" and preloaded)
        out.append(
            Finding(
                "compute_query_id",
                qid_ok,
                f"compute_query_id = {row.compute_query_id}",
                None if qid_ok else "ALTER SYSTEM SET compute_query_id = on; SELECT pg_reload_conf();",
            )
        )
    privileged = row.is_superuser or row.has_pg_monitor
    held = "superuser" if row.is_superuser else "member of pg_monitor" if row.has_pg_monitor else "no pg_monitor"
    out.append(
        Finding(
            "monitoring privileges",
            privileged,
            f"role {row.role_name}: {held}",
            None if privileged else f"GRANT pg_monitor TO {db.Identifier(row.role_name).as_string(conn)};",
        )
    )
    if row.reserved_connections is not None and not row.is_superuser:
        # When clients take every slot, an exporter without a reserved slot cannot connect either: the
        # outage then shows only as pg_up 0, without the connection numbers that explain it.
        reserved_ok = bool(row.can_use_reserved) and row.reserved_connections > 0
        role = db.Identifier(row.role_name).as_string(conn)
        out.append(
            Finding(
                "a reserved slot for monitoring",
                reserved_ok,
                f"reserved_connections = {row.reserved_connections}, role "
                + ("may" if row.can_use_reserved else "may not")
                + " use them",
                None
                if reserved_ok
                else (
                    (
                        "ALTER SYSTEM SET reserved_connections = 3; -- needs a restart\n       "
                        if not row.reserved_connections
                        else ""
                    )
                    + f"GRANT pg_use_reserved_connections TO {role};"
                ),
                required=False,
            )
        )
    io_ok = row.track_io_timing == "on"
    out.append(
        Finding(
            "track_io_timing",
            io_ok,
            f"track_io_timing = {row.track_io_timing}",
            None if io_ok else "ALTER SYSTEM SET track_io_timing = on; SELECT pg_reload_conf();",
            required=False,
        )
    )
    return out


def _pgss_answers(conn: db.Connection) -> bool:
    try:
        db.fetch_value(conn, "SELECT 1 FROM pg_stat_statements LIMIT 1")
    except PgArchitectError:
        return False
    return True
