"""The server's log files: where they are, how to read a byte range of them, and how to split them into records.

Both processes read the same files for different things: the exporter the durations of every logged call
(exporter.durationlog), the auditor the parameters of its slow statements' logged calls
(auditor.logged). Two ways to reach the files:

- ``Directory``: the server's log directory mounted where the process can read it;
- ``ServerFiles``: ``pg_ls_logdir()`` and ``pg_read_binary_file()`` over the process's own connection (a
  superuser, or a role granted pg_monitor and EXECUTE on pg_read_binary_file).

Formats: csvlog (``*.csv``), jsonlog (``*.json``, PostgreSQL 15+) and stderr (``*.log``, with a
``log_line_prefix`` holding ``%m`` and ``%d``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pg_architect.core import db
from pg_architect.core.errors import PgArchitectError, PrivilegeError
from pg_architect.core.queries import QUERIES

FORMATS = ("csvlog", "jsonlog", "stderr")
SUFFIXES = {"csvlog": ".csv", "jsonlog": ".json", "stderr": ".log"}
# csvlog columns (stable since PostgreSQL 9.0; query_id appended in 14).
CSV_TIME, CSV_DATABASE, CSV_SEVERITY, CSV_MESSAGE, CSV_DETAIL, CSV_QUERY_ID = 0, 2, 11, 13, 14, 25


class ServerLogError(PgArchitectError):
    """The server's log cannot be read (privileges, a missing directory, an unusable format)."""


# -- the files ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LogFile:
    name: str
    size: int
    ident: object  # what says "the same file": (device, inode) on a mount, the modification time over SQL


class LogFiles:
    """Where the log files are: listed oldest first, read by byte range."""

    def list(self, conn: db.Connection, log_directory: str | None, suffix: str) -> list[LogFile]:
        raise NotImplementedError

    def read(
        self, conn: db.Connection, log_directory: str | None, name: str, offset: int, length: int
    ) -> bytes | None:
        raise NotImplementedError


class Directory(LogFiles):
    """The server's log directory, mounted where this process can read it."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def list(self, conn: db.Connection, log_directory: str | None, suffix: str) -> list[LogFile]:
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise ServerLogError(f"cannot list the log directory {self.path}: {exc.strerror or exc}") from exc
        files = []
        for entry in entries:
            if not entry.name.endswith(suffix) or entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue  # rotated away between scandir and stat
            if entry.is_file():
                files.append((st.st_mtime, entry.name, LogFile(entry.name, st.st_size, (st.st_dev, st.st_ino))))
        return [f for _, _, f in sorted(files, key=lambda t: (t[0], t[1]))]

    def read(
        self, conn: db.Connection, log_directory: str | None, name: str, offset: int, length: int
    ) -> bytes | None:
        try:
            with (self.path / name).open("rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ServerLogError(f"cannot read {self.path / name}: {exc.strerror or exc}") from exc


class ServerFiles(LogFiles):
    """The log files read through the process's own connection (pg_ls_logdir, pg_read_binary_file).

    Over SQL a file has no inode: it is "the same file" for as long as it does not shrink (a file reused by
    log_truncate_on_rotation that grew past the old offset before the next read is not detected).
    ``who`` and ``setting`` name the process and its configuration key in error messages.
    """

    def __init__(self, who: str, setting: str) -> None:
        self.who = who
        self.setting = setting

    def _no_privilege(self, exc: Exception) -> ServerLogError:
        return ServerLogError(
            f"the {self.who}'s role may not read the server's log files ({exc}): grant it pg_monitor and EXECUTE "
            f"ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean), or mount the log directory and set "
            f"{self.setting}: directory"
        )

    def list(self, conn: db.Connection, log_directory: str | None, suffix: str) -> list[LogFile]:
        try:
            rows = db.fetch_tuples(conn, db.query(conn, QUERIES, "server_log_files"))
        except PrivilegeError as exc:
            raise self._no_privilege(exc) from exc
        return [LogFile(str(name), int(size), None) for name, size, _ in rows if str(name).endswith(suffix)]

    def read(
        self, conn: db.Connection, log_directory: str | None, name: str, offset: int, length: int
    ) -> bytes | None:
        if not log_directory:
            raise ServerLogError(f"log_directory is hidden from the {self.who}'s role: grant it pg_read_all_settings")
        params = {"path": f"{log_directory.rstrip('/')}/{name}", "offset": offset, "length": length}
        try:
            value = db.fetch_value(conn, db.query(conn, QUERIES, "server_log_read"), params)
        except PrivilegeError as exc:
            raise self._no_privilege(exc) from exc
        return bytes(value) if value is not None else None


def log_format(destination: str, wanted: str = "auto") -> str:
    """The file format to read: ``wanted``, or with ``auto`` the first of csvlog, jsonlog, stderr that
    ``log_destination`` writes. ServerLogError when it writes none of them."""
    if wanted != "auto":
        return wanted
    destinations = {d.strip() for d in destination.split(",")}
    for fmt in FORMATS:
        if fmt in destinations:
            return fmt
    raise ServerLogError(f"log_destination {destination!r} writes no file that can be read (csvlog, jsonlog, stderr)")


# -- records ----------------------------------------------------------------------------------------------


def complete_csv(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole csvlog records (a newline outside quotes)."""
    end = 0
    quotes = 0
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return end
        quotes += data.count(b'"', pos, nl)
        pos = nl + 1
        if quotes % 2 == 0:
            end = pos


def complete_lines(data: bytes) -> int:
    """Length of the prefix of ``data`` that ends with a newline (jsonlog and stderr write one per line)."""
    return data.rfind(b"\n") + 1


# log_line_prefix escapes as regular expressions; %m and %d are the two the readers need.
_PREFIX = {
    "m": r"(?P<m>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})(?: \S+)?",
    "d": r"(?P<d>.*?)",
    "t": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: \S+)?",
    "n": r"\d+\.\d+",
    "p": r"\d+",
    "P": r"\d*",
    "l": r"\d+",
    "x": r"\d+",
    "e": r"[0-9A-Z]{5}",
    "c": r"[0-9a-f]+\.[0-9a-f]+",
    "Q": r"(?P<Q>-?\d+)",
    "q": r"",
}


def stderr_pattern(prefix: str) -> re.Pattern[str]:
    """A regular expression for one stderr log line with this ``log_line_prefix``.

    Raises ServerLogError when the prefix lacks the time with milliseconds (``%m``) or the database
    (``%d``): without them a line cannot be put in its window or its database.
    """
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(prefix):
        ch = prefix[i]
        if ch != "%" or i + 1 >= len(prefix):
            out.append(re.escape(ch))
            i += 1
            continue
        j = i + 1
        while j < len(prefix) and (prefix[j].isdigit() or prefix[j] == "-"):
            j += 1  # padding, as in %-10d
        if j >= len(prefix):
            out.append(re.escape(prefix[i:]))
            break
        esc = prefix[j]
        padded = j > i + 1
        if esc == "%":
            out.append("%")
        else:
            pattern = _PREFIX.get(esc, r".*?")
            if esc in seen:
                pattern = re.sub(r"\(\?P<\w+>", "(?:", pattern)
            seen.add(esc)
            out.append(rf"\s*{pattern}\s*" if padded else pattern)
        i = j + 1
    if "m" not in seen or "d" not in seen:
        raise ServerLogError(
            f"log_line_prefix {prefix!r} lacks %m or %d: stderr lines cannot be placed in a window and a database "
            "(use csvlog or jsonlog, or add '%m' and '%d' to log_line_prefix)"
        )
    return re.compile("^" + "".join(out) + r"(?P<severity>[A-Z0-9]+):  (?P<message>.*)$")


def as_int(value: object) -> int:
    """A query id as the log writes it (a number, its text, or nothing): 0 when there is none."""
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return 0


def json_records(text: str, *markers: str) -> Iterator[dict[str, Any]]:
    """The LOG-level records of jsonlog ``text`` on a line that holds one of ``markers``: most lines are
    passed over without decoding their JSON."""
    for line in text.splitlines():
        for marker in markers:
            if marker in line:
                break
        else:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("error_severity") == "LOG":
            yield obj


@dataclasses.dataclass(frozen=True, slots=True)
class LogEntry:
    """One LOG-level record whose message starts with ``needle``, with its DETAIL (None when it has none)."""

    time: str
    database: str
    query_id: int
    message: str
    detail: str | None


def entries(text: str, fmt: str, needle: str, pattern: re.Pattern[str] | None = None) -> Iterator[LogEntry]:
    """The LOG records in ``text`` (whole records of format ``fmt``) whose message starts with ``needle``.

    stderr needs ``pattern`` (stderr_pattern of the server's log_line_prefix); there a message's DETAIL is the
    DETAIL line that follows it, and continuation lines (a tab first) belong to the line before them.
    """
    if fmt == "csvlog":
        for row in csv.reader(io.StringIO(text)):
            if len(row) > CSV_MESSAGE and row[CSV_SEVERITY] == "LOG" and row[CSV_MESSAGE].startswith(needle):
                detail = row[CSV_DETAIL] if len(row) > CSV_DETAIL and row[CSV_DETAIL] else None
                qid = row[CSV_QUERY_ID] if len(row) > CSV_QUERY_ID else ""
                yield LogEntry(row[CSV_TIME], row[CSV_DATABASE], as_int(qid), row[CSV_MESSAGE], detail)
    elif fmt == "jsonlog":
        for obj in json_records(text, json.dumps(needle)[:-1]):  # the needle as it starts a JSON string
            message = str(obj.get("message", ""))
            if message.startswith(needle):
                detail = obj.get("detail")
                yield LogEntry(
                    str(obj.get("timestamp", "")),
                    str(obj.get("dbname", "")),
                    as_int(obj.get("query_id")),
                    message,
                    str(detail) if detail is not None else None,
                )
    elif fmt == "stderr":
        if pattern is None:
            raise ValueError("stderr records need the log_line_prefix pattern")
        yield from _stderr_entries(text, needle, pattern)
    else:
        raise ValueError(f"unknown log format {fmt!r}")


def _stderr_entries(text: str, needle: str, pattern: re.Pattern[str]) -> Iterator[LogEntry]:
    pending: LogEntry | None = None
    field = ""  # what continuation lines extend: the message or the detail
    for line in text.splitlines():
        if line.startswith("\t"):
            if pending is not None and field == "message":
                pending = dataclasses.replace(pending, message=pending.message + "\n" + line[1:])
            elif pending is not None and field == "detail" and pending.detail is not None:
                pending = dataclasses.replace(pending, detail=pending.detail + "\n" + line[1:])
            continue
        match = pattern.match(line)
        if match is None:
            continue
        severity, message = match.group("severity"), match.group("message")
        if severity == "DETAIL" and pending is not None and pending.detail is None:
            pending = dataclasses.replace(pending, detail=message)
            field = "detail"
            continue
        if pending is not None:
            yield pending
            pending = None
        if severity == "LOG" and message.startswith(needle):
            groups = match.groupdict()
            pending = LogEntry(match.group("m"), match.group("d"), as_int(groups.get("Q")), message, None)
            field = "message"
        else:
            field = ""
    if pending is not None:
        yield pending
