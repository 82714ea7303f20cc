"""The one module that talks to the database driver (psycopg 3).

Everything else receives a connection from here and typed rows back; driver errors are translated at
this boundary into pg-architect's own exceptions, with passwords removed from their messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import conninfo, sql
from psycopg import errors as pg_errors
from psycopg.rows import class_row, dict_row

from pg_architect.core.errors import DatabaseError, DatabaseUnavailable, PrivilegeError, QueryTimeout, redact
from pg_architect.core.sqlfiles import MARKER, SqlLibrary, extension_version_num

if TYPE_CHECKING:
    from pg_architect.core.config import Config

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
Query = str | sql.SQL | sql.Composed
T = TypeVar("T")

__all__ = [
    "SQL",
    "Connection",
    "Identifier",
    "Literal",
    "Role",
    "ServerFacts",
    "Timeouts",
    "advisory_lock",
    "advisory_unlock",
    "connect",
    "copy_rows",
    "execute",
    "fetch",
    "fetch_dicts",
    "fetch_one",
    "fetch_tuples",
    "fetch_value",
    "iter_tuples",
    "parse_dsn",
    "pg_errors",
    "policy",
    "query",
    "register_vector",
    "server_facts",
    "server_version_num",
    "set_timeouts",
    "transaction",
    "translate",
    "translated",
    "untrack",
]

SQL = sql.SQL
Identifier = sql.Identifier
Literal = sql.Literal


def translate(exc: BaseException) -> DatabaseError:
    """Map a driver error to our exception tree, with any password hidden."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
        return QueryTimeout(message)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return PrivilegeError(message)
    if isinstance(exc, pg_errors.OperationalError | psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(message)
    return DatabaseError(message)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver errors inside the block as pg-architect errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


class Role(enum.Enum):
    """Who a connection is for; its value is the connection's ``application_name``, so a DBA can tell our
    sessions apart in pg_stat_activity (and the exporter can leave its own out of the counts)."""

    EXPORTER = "pg-architect-exporter"
    AUDITOR = "pg-architect-auditor"  # the audited server, during an audit or a snapshot
    STAGING = "pg-architect-staging"
    KNOWLEDGE_BASE = "pg-architect-kb"
    API = "pg-architect-api"
    DAEMON = "pg-architect-daemon"
    CHECK = "pg-architect-check"
    DEMO = "pg-architect-demo"


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """Every connection gets all four: no statement, lock wait or forgotten transaction runs unbounded."""

    connect_s: float = 5
    statement_ms: int = 30_000
    lock_ms: int = 2_000
    idle_in_transaction_ms: int = 60_000


def policy(cfg: Config, role: Role) -> Timeouts:
    """The one timeout policy: what each role's connections may wait for, from the configuration."""
    connect_s = cfg.database.connect_timeout_s
    if role is Role.EXPORTER:
        budget_ms = int(cfg.exporter.scrape_budget_s * 1000)
        return Timeouts(connect_s, budget_ms, cfg.exporter.lock_timeout_ms, budget_ms)
    if role in (Role.AUDITOR, Role.STAGING):
        m = cfg.measurement
        return Timeouts(connect_s, m.statement_timeout_ms, m.lock_timeout_ms, m.statement_timeout_ms + 30_000)
    # The knowledge base, the API, the daemon and check: short statements on our own schema. (The demo,
    # which owns its database and loads it, uses pg_architect.demo.DEMO_TIMEOUTS.)
    return Timeouts(connect_s, 30_000, 5_000, 60_000)


def parse_dsn(dsn: str) -> dict[str, str]:
    """The parameters of a libpq connection string (URI or key=value), as libpq reads them."""
    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.Error as exc:
        raise DatabaseError("not a valid connection string") from exc


def connect(dsn: str, role: Role, timeouts: Timeouts, *, autocommit: bool = True) -> Connection:
    """Open one connection for ``role``; every statement on it runs under ``timeouts``.

    The only place the product opens a connection (tests and benchmarks aside).
    """
    options = (
        f"-c statement_timeout={int(timeouts.statement_ms)} -c lock_timeout={int(timeouts.lock_ms)}"
        f" -c idle_in_transaction_session_timeout={int(timeouts.idle_in_transaction_ms)}"
    )
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=autocommit,
            # libpq rounds connect_timeout to whole seconds and treats < 2 as 2.
            connect_timeout=max(2, round(timeouts.connect_s)),
            application_name=role.value,
            options=options,
        )
    except psycopg.Error as exc:
        raise translate(exc) from exc
    if role in UNTRACKED:
        untrack(conn)
    return conn


#: Roles whose sessions pg_stat_statements should not record: the auditor EXPLAINs statements with sampled
#: real values (an e-mail, a name), which must never become pg_stat_statements text.
UNTRACKED = frozenset({Role.AUDITOR, Role.STAGING})


_UNTRACK = f"SELECT pg_catalog.set_config('pg_stat_statements.track', 'none', false) {MARKER}"


def untrack(conn: Connection) -> bool:
    """Stop pg_stat_statements recording this session's statements, where the role may; True if it may.

    ``pg_stat_statements.track`` is superuser-settable: a superuser may, and on PostgreSQL 15+ so may a
    role granted ``SET`` on it (``GRANT SET ON PARAMETER pg_stat_statements.track TO ...``). Other roles
    carry on tracked (silently: nothing is wrong with them), and the auditor's text redaction still holds.
    Set after connecting, not in the startup packet, because a refused startup option refuses the
    connection. Not set when pg_stat_statements is not loaded (an unknown custom option would linger).
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_catalog.current_setting('pg_stat_statements.track', true)")
            loaded = cur.fetchone()
            done = loaded is not None and loaded[0] is not None
            if done:
                cur.execute(_UNTRACK)
        if not conn.autocommit:
            conn.commit()  # a session setting made in a transaction is undone by its rollback
        return done
    except pg_errors.InsufficientPrivilege:
        if not conn.autocommit:
            conn.rollback()
        log.debug("pg_stat_statements.track stays on for this role (no SET privilege on it)")
        return False
    except psycopg.Error as exc:
        conn.close()
        raise translate(exc) from exc


# -- what a connection learns about its server, once -------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ServerFacts:
    """The server's version and the extensions of the connected database, learned once per connection."""

    version_num: int
    extensions: Mapping[str, tuple[str, str]]  # name -> (schema, version)

    def extension_schema(self, name: str) -> str | None:
        found = self.extensions.get(name)
        return found[0] if found else None

    def extension_version(self, name: str) -> str | None:
        found = self.extensions.get(name)
        return found[1] if found else None


_FACTS: weakref.WeakKeyDictionary[Connection, ServerFacts] = weakref.WeakKeyDictionary()
_EXTENSIONS = (
    "SELECT e.extname, n.nspname, e.extversion FROM pg_catalog.pg_extension e "
    "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace /* pg-architect */"
)


def server_facts(conn: Connection, *, refresh: bool = False) -> ServerFacts:
    """What ``conn``'s server is: read on first use (or ``refresh``), then remembered for the connection."""
    facts = None if refresh else _FACTS.get(conn)
    if facts is None:
        with translated(), conn.cursor() as cur:
            cur.execute(_EXTENSIONS)
            extensions = {name: (schema, version) for name, schema, version in cur.fetchall()}
        facts = ServerFacts(int(conn.info.server_version), extensions)
        _FACTS[conn] = facts
    return facts


def query(conn: Connection, library: SqlLibrary, name: str, **identifiers: str) -> Query:
    """The text of ``name`` from ``library`` for ``conn``'s server: the one place SQL is chosen by version.

    Files named ``pgss_*`` are chosen by the pg_stat_statements extension's version, the rest by the
    server's. ``identifiers`` fill ``{name}`` placeholders as quoted identifiers (a schema, say).
    """
    facts = server_facts(conn)
    if name.startswith("pgss_"):
        version = facts.extension_version("pg_stat_statements")
        if version is None:
            raise DatabaseError(
                "pg_stat_statements is not created in this database: CREATE EXTENSION pg_stat_statements"
            )
        text = library.get(name, extension_version_num(version))
    else:
        text = library.get(name, facts.version_num)
    if identifiers:
        return SQL(text).format(**{k: Identifier(v) for k, v in identifiers.items()})
    return text


def set_timeouts(conn: Connection, *, statement_timeout_ms: int, lock_timeout_ms: int | None = None) -> None:
    """Change the session's timeouts (values are bound, never formatted into SQL)."""
    with translated():
        if lock_timeout_ms is None:
            conn.execute(
                f"SELECT pg_catalog.set_config('statement_timeout', %s, false) {MARKER}", (str(statement_timeout_ms),)
            )
        else:  # one round trip for both: the exporter sets them before every scrape
            conn.execute(
                "SELECT pg_catalog.set_config('statement_timeout', %s, false),"
                f" pg_catalog.set_config('lock_timeout', %s, false) {MARKER}",
                (str(statement_timeout_ms), str(lock_timeout_ms)),
            )


def server_version_num(conn: Connection) -> int:
    """``server_version_num`` of the connected server, e.g. 180006."""
    return int(conn.info.server_version)


def fetch(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None, row: type[T]) -> list[T]:
    """Run ``query`` and return its rows as instances of ``row`` (SQL aliases equal field names)."""
    with translated(), conn.cursor(row_factory=class_row(row)) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def fetch_tuples(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None = None) -> list[Any]:
    """Rows as plain tuples, in binary format: the cheapest way to read many rows."""
    with translated(), conn.cursor(binary=True) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def iter_tuples(
    conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None = None, chunk: int = 2000
) -> Iterator[Any]:
    """Rows as plain tuples, in binary format, made ``chunk`` at a time as the caller iterates.

    The query runs now and libpq holds its whole result; only the Python objects are made lazily, so a caller
    that keeps a compact form of each row never holds all of them at once (20,000 pg_stat_statements rows as
    tuples are about 7 MB).
    """
    cur = conn.cursor(binary=True)
    try:
        with translated():
            cur.execute(query, params)
    except BaseException:
        cur.close()
        raise

    def rows() -> Iterator[Any]:
        with cur:
            while True:
                with translated():
                    batch = cur.fetchmany(chunk)
                if not batch:
                    return
                yield from batch

    return rows()


def fetch_one(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None, row: type[T]) -> T | None:
    rows = fetch(conn, query, params, row)
    return rows[0] if rows else None


def fetch_dicts(
    conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    with translated(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def fetch_value(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    """The first column of the first row, or None."""
    with translated(), conn.cursor() as cur:
        cur.execute(query, params)
        first = cur.fetchone()
        return first[0] if first else None


def execute(conn: Connection, query: Query, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
    with translated():
        conn.execute(query, params)


def copy_rows(conn: Connection, schema: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Bulk-load ``rows`` with COPY; returns how many were written."""
    # Marked like every statement of ours, so the auditor never mistakes its own bulk load for the workload.
    statement = SQL("COPY {} ({}) FROM STDIN " + MARKER).format(
        Identifier(schema, table), SQL(", ").join(Identifier(c) for c in columns)
    )
    written = 0
    with translated(), conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            written += 1
    return written


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """A transaction (or savepoint) whose driver errors come out translated."""
    with translated(), conn.transaction():
        yield


def advisory_lock(conn: Connection, key: int) -> bool:
    """Try the session-level advisory lock ``key``; True when this session now holds it."""
    return bool(fetch_value(conn, "SELECT pg_catalog.pg_try_advisory_lock(%s)", (key,)))


def advisory_unlock(conn: Connection, key: int) -> None:
    fetch_value(conn, "SELECT pg_catalog.pg_advisory_unlock(%s)", (key,))


def register_vector(conn: Connection) -> None:
    """Let psycopg send and receive pgvector values on this connection (the extension must exist)."""
    from pgvector.psycopg import register_vector as _register

    with translated():
        _register(conn)
