"""Migration files for one index recommendation, written the way each tool applies them.

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block (SQLSTATE 25001), and a multi-statement
file is one: Prisma Migrate sends a ``migration.sql`` to the server as one simple query, golang-migrate sends
an ``.up.sql`` file as one ``Exec``, and PostgreSQL runs a multi-statement simple query as an implicit
transaction. So each file holds exactly one statement, with everything else in ``--`` comments, and the lock
timeout is a setting of the session that applies it, stated in the header.

Formats (``github.migrations.format``):

- ``prisma``: ``<path>/<timestamp>_<name>/migration.sql``, and ``down.sql`` beside it (Prisma ignores other
  files in a migration's folder; its documentation keeps down migrations there, applied with
  ``prisma db execute --file``).
- ``sql``: ``<path>/<timestamp>_<name>.up.sql`` and ``<timestamp>_<name>.down.sql`` (golang-migrate's naming).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from datetime import datetime
from typing import Any

import pglast
from pglast import ast

from pg_architect.auditor.kb import PrRecommendation
from pg_architect.core.errors import PgArchitectError

FORMATS = ("prisma", "sql")
BRANCH_PREFIX = "pg-architect/"


class MigrationError(PgArchitectError):
    """A recommendation cannot become a migration (not one CREATE INDEX CONCURRENTLY, or its name is taken)."""


@dataclasses.dataclass(frozen=True, slots=True)
class IndexDdl:
    """The forward and rollback statement of an index recommendation, checked by the parser."""

    schema: str | None
    table: str
    name: str
    forward: str
    rollback: str


@dataclasses.dataclass(frozen=True, slots=True)
class MigrationFile:
    path: str  # inside the repository, '/'-separated
    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    name: str  # <timestamp>_<index name>
    branch: str
    forward: MigrationFile
    rollback: MigrationFile

    @property
    def files(self) -> tuple[MigrationFile, MigrationFile]:
        return (self.forward, self.rollback)


def index_ddl(sql: str, rollback_sql: str | None) -> IndexDdl:
    """Parse the recommendation: exactly one ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` with a name, and its
    ``DROP INDEX CONCURRENTLY IF EXISTS`` of the same index."""
    forward = _one(sql, "recommendation")
    if not isinstance(forward, ast.IndexStmt) or not forward.idxname:
        raise MigrationError(f"not a named CREATE INDEX: {sql[:120]}")
    if not forward.concurrent or not forward.if_not_exists:
        raise MigrationError(f"the recommendation must be CREATE INDEX CONCURRENTLY IF NOT EXISTS: {sql[:120]}")
    relation = forward.relation
    if relation is None or not relation.relname:
        raise MigrationError(f"CREATE INDEX without a table: {sql[:120]}")
    schema = relation.schemaname
    if rollback_sql is None:
        raise MigrationError(f"recommendation {forward.idxname} has no rollback")
    back = _one(rollback_sql, "rollback")
    names = [tuple(s.sval for s in obj) for obj in (back.objects or ())] if isinstance(back, ast.DropStmt) else []
    expected = (schema, forward.idxname) if schema else (forward.idxname,)
    if not isinstance(back, ast.DropStmt) or not back.concurrent or not back.missing_ok or names != [expected]:
        raise MigrationError(f"the rollback must be DROP INDEX CONCURRENTLY IF EXISTS {'.'.join(expected)}")
    return IndexDdl(schema, str(relation.relname), forward.idxname, _statement(sql), _statement(rollback_sql))


def _one(sql: str, what: str) -> Any:
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise MigrationError(f"the {what} does not parse: {exc}") from exc
    if len(statements) != 1:
        raise MigrationError(f"the {what} must be one statement, got {len(statements)}")
    return statements[0].stmt


def _statement(sql: str) -> str:
    return sql.strip().rstrip(";").strip() + ";"


def branch_name(ddl: IndexDdl) -> str:
    """One branch per index: ``pg-architect/<index name>`` (names are valid in git refs)."""
    return BRANCH_PREFIX + ddl.name


def build(rec: PrRecommendation, fmt: str, path: str, created: datetime, lock_timeout_ms: int) -> Migration:
    """The migration files of ``rec`` in format ``fmt`` under ``path`` (inside the repository)."""
    if fmt not in FORMATS:
        raise MigrationError(f"unknown migration format {fmt!r} (known: {', '.join(FORMATS)})")
    ddl = index_ddl(rec.sql, rec.rollback_sql)
    name = f"{created:%Y%m%d%H%M%S}_{ddl.name}"
    header = _header(rec, ddl, lock_timeout_ms)
    base = path.strip("/")
    if fmt == "prisma":
        folder = f"{base}/{name}" if base else name
        forward = MigrationFile(
            f"{folder}/migration.sql",
            header + _rollback_note(ddl, f"{folder}/down.sql", "prisma db execute --file") + ddl.forward + "\n",
        )
        rollback = MigrationFile(f"{folder}/down.sql", _down_header(rec, ddl, lock_timeout_ms) + ddl.rollback + "\n")
    else:
        stem = f"{base}/{name}" if base else name
        forward = MigrationFile(
            f"{stem}.up.sql", header + _rollback_note(ddl, f"{stem}.down.sql", "migrate down 1") + ddl.forward + "\n"
        )
        rollback = MigrationFile(f"{stem}.down.sql", _down_header(rec, ddl, lock_timeout_ms) + ddl.rollback + "\n")
    return Migration(name, branch_name(ddl), forward, rollback)


def _comment(text: str, width: int = 100) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        wrapped = textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False) or [""]
        lines += [f"--   {w}".rstrip() for w in wrapped]
    return lines


def measurement_summary(measurement: dict[str, Any] | str | None) -> tuple[str, str]:
    """(method, "before -> after") of a stored measurement."""
    m = json.loads(measurement) if isinstance(measurement, str) else (measurement or {})
    method = str(m.get("method") or "unknown")
    before, after = m.get("before_ms"), m.get("after_ms")
    if before is not None and after is not None:
        return method, f"{_ms(before)} -> {_ms(after)} per call"
    return method, f"planner cost {m.get('before_cost', 0):.0f} -> {m.get('after_cost', 0):.0f}"


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value >= 10 else f"{value:.3g} ms"


def verdict(action: str) -> str:
    return "recommend merge" if action == "pr_merge" else "review requested"


def _header(rec: PrRecommendation, ddl: IndexDdl, lock_timeout_ms: int) -> str:
    method, timing = measurement_summary(rec.measurement)
    gain = f"{rec.gain_percent:.0f} %" if rec.gain_percent is not None else "unknown"
    lines = [
        f"-- pg-architect: index {ddl.name} (recommendation #{rec.recommendation_id}, audit run {rec.run_id})",
        f"-- confidence: {rec.confidence:.2f} ({rec.action}: {verdict(rec.action)})",
        f"-- expected gain: {gain} faster ({timing})",
        f"-- measurement method: {method}",
        "-- statement (normalised by pg_stat_statements: no literal values):",
        *_comment(rec.query),
        "-- reasoning:",
        *_comment(rec.reasoning),
        "--",
        "-- CREATE INDEX CONCURRENTLY must not run inside a transaction block (SQLSTATE 25001): this file holds",
        "-- this one statement so the migration tool sends it alone, outside a transaction. Keep it alone.",
        f"-- Apply it with a lock timeout for the session (pg-architect measured with {lock_timeout_ms} ms), e.g.",
        f"-- PGOPTIONS='-c lock_timeout={lock_timeout_ms}' for libpq-based runners; a build that fails leaves an",
        "-- INVALID index: run the rollback, then apply again.",
    ]
    return "\n".join(lines) + "\n"


def _rollback_note(ddl: IndexDdl, path: str, how: str) -> str:
    return f"-- Rollback ({path}, e.g. with {how}):\n--   {ddl.rollback}\n"


def _down_header(rec: PrRecommendation, ddl: IndexDdl, lock_timeout_ms: int) -> str:
    return (
        f"-- pg-architect: rollback of index {ddl.name} (recommendation #{rec.recommendation_id}).\n"
        "-- DROP INDEX CONCURRENTLY must not run inside a transaction block either: one statement, alone.\n"
        f"-- Apply it with a lock timeout for the session, e.g. PGOPTIONS='-c lock_timeout={lock_timeout_ms}'.\n"
    )
