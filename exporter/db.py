"""The one module that talks to the database driver (psycopg 3).

Everything else receives a connection from here and typed rows back; driver errors are translated at
this boundary into pg-architect's own exceptions, with passwords removed from their messages.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import class_row, dict_row

from exporter.errors import DatabaseError, DatabaseUnavailable, PrivilegeError, QueryTimeout, redact

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
Query = str | sql.SQL | sql.Composed
T = TypeVar("T")

__all__ = [
    "SQL",
    "Connection",
    "Identifier",
    "Literal",
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
    "pg_errors",
    "register_vector",
    "server_version_num",
    "set_timeouts",
    "transaction",
    "translate",
    "translated",
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


def connect(
    dsn: str,
    *,
    application_name: str = "pg-architect",
    connect_timeout_s: float = 5,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    autocommit: bool = True,
) -> Connection:
    """Open one connection; every statement on it runs under the given timeouts."""
    options = []
    if statement_timeout_ms is not None:
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
    if lock_timeout_ms is not None:
        options.append(f"-c lock_timeout={int(lock_timeout_ms)}")
    kwargs: dict[str, Any] = {
        "autocommit": autocommit,
        # libpq rounds connect_timeout to whole seconds and treats < 2 as 2.
        "connect_timeout": max(2, round(connect_timeout_s)),
        "application_name": application_name,
    }
    if options:
        kwargs["options"] = " ".join(options)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise translate(exc) from exc


def set_timeouts(conn: Connection, *, statement_timeout_ms: int, lock_timeout_ms: int | None = None) -> None:
    """Change the session's timeouts (values are bound, never formatted into SQL)."""
    with translated():
        conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false)", (str(statement_timeout_ms),))
        if lock_timeout_ms is not None:
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (str(lock_timeout_ms),))


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
    statement = SQL("COPY {} ({}) FROM STDIN").format(
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
