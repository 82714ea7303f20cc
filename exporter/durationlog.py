"""The server's own duration log, read incrementally: every call at or above ``log_min_duration_statement``.

PostgreSQL logs ``duration: X ms  statement: ...`` (or ``execute ...``) for every top-level statement that ran
at least ``log_min_duration_statement`` milliseconds. Above that threshold the log is complete, so a scrape
window's calls there are known one by one: the p95 is exact whenever it lies above the threshold, and below it
the log still says how many calls are in the tail (``latency.LoggedTail``).

Two ways to reach the files, both optional (``exporter.duration_log``):

- ``directory``: the server's log directory mounted into the exporter (``exporter.duration_log_directory``);
- ``pg_read_file``: ``pg_ls_logdir()`` and ``pg_read_binary_file()`` over the exporter's connection (a
  superuser, or a role granted pg_monitor and EXECUTE on pg_read_binary_file).

Formats: csvlog (``*.csv``), jsonlog (``*.json``, PostgreSQL 15+) and stderr (``*.log``, with a
``log_line_prefix`` holding ``%m`` and ``%d``); ``auto`` follows ``log_destination``. The reader keeps one
offset per file (rotation and truncation handled), starts at the end of the files it finds (history is not a
window), reads at most ``duration_log_max_bytes`` per scrape and keeps at most ``duration_log_max_records``
calls per window; past either bound the window is marked incomplete, never silently short.

Windows are cut by the server's clock: each scrape reads ``clock_timestamp()`` in ``log_timezone`` and takes
the records logged after the previous scrape's mark and at or before this one. No statement text is kept:
only the time, database name, query id and duration of each call.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import re
import time
from array import array
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pg_architect.core import db
from pg_architect.core.config import ExporterConfig
from pg_architect.core.serverlog import (
    CSV_DATABASE,
    CSV_MESSAGE,
    CSV_QUERY_ID,
    CSV_SEVERITY,
    CSV_TIME,
    FORMATS,
    SUFFIXES,
    Directory,
    LogFile,
    LogFiles,
    ServerFiles,
    ServerLogError,
    as_int,
    complete_csv,
    complete_lines,
    json_records,
    log_format,
    stderr_pattern,
)
from pg_architect.exporter.queries import QUERIES

log = logging.getLogger(__name__)

_TIME_KEY = 23  # 'YYYY-MM-DD HH:MM:SS.mmm', the part of a log timestamp compared with the mark
_MAX_TAIL = 16 * 1024 * 1024  # an unfinished record longer than this is dropped (and the window marked)
_CHUNK = 4 * 1024 * 1024


DurationLogError = ServerLogError
"""The duration log cannot be read (privileges, a missing directory, an unusable format)."""


# -- the server's settings ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LogSettings:
    """The server's clock as its log writes it, and what the duration log holds (duration_log_settings.sql)."""

    now_local: str
    now_epoch: float
    destination: str
    logging_collector: bool
    log_directory: str | None
    log_line_prefix: str
    threshold_ms: float | None
    log_duration: bool
    log_statement: str
    lc_messages: str
    overrides: list[str] | None

    def threshold_for(self, dbid: int) -> float | None:
        """Milliseconds above which every call in database ``dbid`` is logged; None when none is complete.

        ``ALTER DATABASE ... SET`` and ``ALTER ROLE ... SET`` can raise the threshold (or switch it off)
        for some sessions: the highest that applies to the database is the one the log is complete above.
        """
        values = [self.threshold_ms]
        for item in self.overrides or ():
            oid, _, raw = item.partition("=")
            if oid.isdigit() and int(oid) in (0, dbid):
                values.append(parse_ms(raw))
        if any(v is None or v < 0 for v in values):
            return None
        return max(v for v in values if v is not None)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "min": 60e3, "h": 3600e3, "d": 86400e3}
_SETTING = re.compile(r"^\s*'?\s*(-?\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*'?\s*$")


def parse_ms(raw: str) -> float | None:
    """A time setting as PostgreSQL writes it (``250``, ``250ms``, ``1s``, ``-1``) in ms; None if unreadable."""
    match = _SETTING.match(raw)
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2) or "ms"]


def read_settings(conn: db.Connection) -> LogSettings:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "duration_log_settings"), None, LogSettings)
    assert row is not None  # a SELECT without FROM returns one row
    return row


# -- parsing ----------------------------------------------------------------------------------------------

Record = tuple[str, str, int, float]
"""One logged call: (time 'YYYY-MM-DD HH:MM:SS.mmm' in log_timezone, database name, query id or 0, ms)."""


MARK = "pg-architect duration log mark "
"""The line the reader logs (RAISE LOG) at each scrape, and waits to see: proof the file is caught up."""


def _mark_record(stamp: str, message: str) -> Record | None:
    if message.startswith(MARK):
        return stamp, message[len(MARK) :].strip(), 0, -1.0
    return None


def duration_of(message: str, bare_counts: bool) -> float | None:
    """The duration (ms) of a logged top-level statement, None for any other message.

    Counted: ``duration: X ms  statement: ...`` (simple protocol) and ``duration: X ms  execute ...``
    (extended protocol's execute step); a bare ``duration: X ms`` only when ``bare_counts`` (it then means a
    statement log_statement already printed). Not counted: parse and bind steps, fastpath calls,
    auto_explain's plans.
    """
    if not message.startswith("duration: "):
        return None
    end = message.find(" ms", 10)
    if end < 0:
        return None
    try:
        value = float(message[10:end])
    except ValueError:
        return None
    rest = message[end + 3 : end + 16]
    if rest.startswith(("  statement: ", "  execute ")):
        return value
    if bare_counts and (rest == "" or rest.startswith("\n")):
        return value
    return None


def parse_csv(text: str, bare_counts: bool) -> Iterator[Record]:
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= CSV_MESSAGE or row[CSV_SEVERITY] != "LOG":
            continue
        ms = duration_of(row[CSV_MESSAGE], bare_counts)
        if ms is None:
            mark = _mark_record(row[CSV_TIME][:_TIME_KEY], row[CSV_MESSAGE])
            if mark is not None:
                yield mark
            continue
        qid = row[CSV_QUERY_ID] if len(row) > CSV_QUERY_ID else ""
        yield row[CSV_TIME][:_TIME_KEY], row[CSV_DATABASE], as_int(qid), ms


def parse_json(text: str, bare_counts: bool) -> Iterator[Record]:
    for obj in json_records(text, '"duration: ', MARK):
        message = str(obj.get("message", ""))
        ms = duration_of(message, bare_counts)
        if ms is None:
            mark = _mark_record(str(obj.get("timestamp", ""))[:_TIME_KEY], message)
            if mark is not None:
                yield mark
            continue
        yield str(obj.get("timestamp", ""))[:_TIME_KEY], str(obj.get("dbname", "")), as_int(obj.get("query_id")), ms


def parse_stderr(text: str, bare_counts: bool, pattern: re.Pattern[str]) -> Iterator[Record]:
    for line in text.splitlines():
        if ("duration: " not in line and MARK not in line) or line.startswith("\t"):
            continue  # continuation lines of a multi-line message start with a tab
        match = pattern.match(line)
        if match is None or match.group("severity") != "LOG":
            continue
        ms = duration_of(match.group("message"), bare_counts)
        if ms is None:
            mark = _mark_record(match.group("m"), match.group("message"))
            if mark is not None:
                yield mark
            continue
        qid = match.groupdict().get("Q")
        yield match.group("m"), match.group("d"), as_int(qid), ms


@dataclasses.dataclass(slots=True)
class _Cursor:
    file: LogFile
    offset: int
    tail: bytes = b""


# -- one window of the log ------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class DatabaseTail:
    """The logged calls of one database in one window: durations in ms and their query ids."""

    durations_ms: array[float] = dataclasses.field(default_factory=lambda: array("d"))
    query_ids: array[int] = dataclasses.field(default_factory=lambda: array("q"))


@dataclasses.dataclass(frozen=True, slots=True)
class LogWindow:
    """What the duration log says about the window that the current scrape closes.

    ``complete`` is True when every call at or above the threshold is in ``by_database`` (read to the
    mark, within the bounds, with the same settings as the previous scrape); ``reason`` says why not.
    """

    complete: bool
    reason: str | None
    settings: LogSettings | None
    by_database: dict[str, DatabaseTail]
    bytes_read: int

    def threshold_s(self, dbid: int) -> float | None:
        """Seconds above which the log holds every call of database ``dbid`` in this window, or None."""
        if not self.complete or self.settings is None:
            return None
        ms = self.settings.threshold_for(dbid)
        return None if ms is None else ms / 1000.0


class DurationLog:
    """One target's reader of its server's duration log: files, offsets, and the records of the window.

    Each scrape logs a mark of its own (``RAISE LOG``) and reads until that line shows up: the logging
    collector writes asynchronously, and the mark proves every call logged before it is in the file (and that
    the files read are the ones this server writes). The window is every call stamped after the previous
    mark and at or before this one.
    """

    def __init__(
        self,
        files: LogFiles,
        fmt: str = "auto",
        max_bytes: int = 64 << 20,
        max_records: int = 500_000,
        time_budget_s: float = 1.0,
    ) -> None:
        if fmt not in ("auto", *FORMATS):
            raise ValueError(f"unknown log format {fmt!r}")
        self.files = files
        self.format = fmt
        self.max_bytes = max_bytes
        self.max_records = max_records
        # Reading and waiting for the mark stop after this long (the scrape must answer in its own budget).
        self.time_budget_s = time_budget_s
        self._cursors: dict[str, _Cursor] | None = None  # None until the first scrape positions them
        self._mark: str | None = None  # the previous mark's time stamp
        self._signature: tuple[object, ...] | None = None
        self._records: list[Record] = []  # read but not yet given to a window (bounded by max_records)
        self._overflow = False
        self._gap: str | None = None
        self.late_records = 0  # records stamped before a mark they reached the file after
        self.bytes_read = 0

    def forget(self) -> None:
        """Start over (another server answers at this address): the next scrape is a baseline."""
        self._cursors = None
        self._mark = None
        self._signature = None
        self._records = []
        self._overflow = False
        self._gap = None

    def collect(self, conn: db.Connection) -> LogWindow:
        """Read what the log gained since the last scrape and close the window at this scrape's mark.

        Raises DurationLogError (or a DatabaseError) when the log cannot be read; the reader then starts
        over, so the next window it reports whole is whole.
        """
        try:
            return self._collect(conn)
        except Exception:
            self.forget()
            raise

    def _collect(self, conn: db.Connection) -> LogWindow:
        settings = read_settings(conn)
        if (settings.threshold_ms is None or settings.threshold_ms < 0) and not settings.overrides:
            return self._skip(settings, "log_min_duration_statement is -1: the server logs no durations")
        if settings.log_duration and settings.log_statement != "none":
            # Bare "duration: X ms" lines then mix statements with parse and bind steps.
            return self._skip(settings, "log_duration and log_statement are both on: durations cannot be attributed")
        if settings.lc_messages and not settings.lc_messages.lower().startswith(("c", "en", "posix")):
            return self._skip(settings, f"lc_messages {settings.lc_messages!r}: the log's messages are translated")
        fmt = self._format(settings)
        parse = self._parser(fmt, settings, bare_counts=not settings.log_duration)
        suffix = SUFFIXES[fmt]
        signature = (fmt, settings.threshold_ms, tuple(settings.overrides or ()), settings.log_line_prefix)
        baseline = self._cursors is None or self._mark is None
        if self._cursors is None:
            # The first scrape starts at the end of what is there: history is no window.
            self._cursors = {f.name: _Cursor(f, f.size) for f in self.files.list(conn, settings.log_directory, suffix)}
            self._records = []
        token = os.urandom(8).hex()
        text = db.query(conn, QUERIES, "duration_log_mark")
        assert isinstance(text, str)  # no identifiers asked for: the file's text
        db.execute(conn, db.SQL(text).format(mark=db.Literal(MARK + token)))
        deadline = time.monotonic() + self.time_budget_s
        budget = [self.max_bytes]
        stamp: str | None = None
        total = 0
        while True:
            read, stamp = self._read(conn, settings, suffix, fmt, parse, token, budget, deadline)
            total += read
            if stamp is not None or budget[0] <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.005)  # the logging collector has not written the mark yet
        self.bytes_read += total
        if stamp is None:
            self._gap = self._gap or (
                f"this scrape's mark did not reach the {fmt} files within {self.time_budget_s:g} s "
                "(are they this server's log, and log_min_messages at most LOG?)"
            )
            stamp = settings.now_local
        if baseline:
            self._records = [r for r in self._records if r[0] > stamp]
            self._mark, self._signature = stamp, signature
            self._overflow, self._gap = False, None
            return LogWindow(False, "baseline", settings, {}, total)
        return self._close(settings, signature, stamp, total)

    def _read(
        self,
        conn: db.Connection,
        settings: LogSettings,
        suffix: str,
        fmt: str,
        parse: Callable[[str], Iterator[Record]],
        token: str,
        budget: list[int],
        deadline: float,
    ) -> tuple[int, str | None]:
        """Read every file to its end (within ``budget``); the time stamp of ``token``'s mark if it was read."""
        assert self._cursors is not None
        total = 0
        found: str | None = None
        seen: set[str] = set()
        for listed in self.files.list(conn, settings.log_directory, suffix):
            seen.add(listed.name)
            cursor = self._cursors.get(listed.name)
            if cursor is None or cursor.file.ident != listed.ident or listed.size < cursor.offset:
                if cursor is not None and cursor.tail:
                    self._gap = "a log file was replaced before it was read to its end"
                cursor = self._cursors[listed.name] = _Cursor(listed, 0)  # new, rotated in, or truncated
            cursor.file = listed
            while cursor.offset < listed.size:
                if budget[0] <= 0:
                    self._gap = f"more than duration_log_max_bytes ({self.max_bytes}) were written in one window"
                    break
                if time.monotonic() >= deadline:
                    self._gap = f"the log grew faster than {self.time_budget_s:g} s of a scrape could read"
                    break
                length = min(_CHUNK, budget[0])
                chunk = self.files.read(conn, settings.log_directory, listed.name, cursor.offset, length)
                if not chunk:
                    break
                budget[0] -= len(chunk)
                total += len(chunk)
                cursor.offset += len(chunk)
                data = cursor.tail + chunk
                end = complete_csv(data) if fmt == "csvlog" else complete_lines(data)
                cursor.tail = data[end:]
                if len(cursor.tail) > _MAX_TAIL:
                    cursor.tail = b""
                    self._gap = "a log record longer than 16 MiB was skipped"
                if end:
                    found = self._take(parse(data[:end].decode("utf-8", "replace")), token) or found
        for name in set(self._cursors) - seen:
            del self._cursors[name]  # rotated away (removed)
        return total, found

    def _take(self, records: Iterator[Record], token: str) -> str | None:
        """Keep the calls stamped after the previous mark; the time stamp of ``token``'s mark if among them."""
        previous = self._mark or ""
        found = None
        for record in records:
            if record[3] < 0:  # a mark: ours, an earlier one of ours, or another exporter's
                if record[1] == token:
                    found = record[0]
                continue
            if record[0] <= previous:
                self.late_records += 1
            elif len(self._records) >= self.max_records:
                self._overflow = True
            else:
                self._records.append(record)
        return found

    def _format(self, settings: LogSettings) -> str:
        return log_format(settings.destination, self.format)

    def _parser(self, fmt: str, settings: LogSettings, bare_counts: bool) -> Callable[[str], Iterator[Record]]:
        if fmt == "csvlog":
            return lambda text: parse_csv(text, bare_counts)
        if fmt == "jsonlog":
            return lambda text: parse_json(text, bare_counts)
        pattern = stderr_pattern(settings.log_line_prefix)
        return lambda text: parse_stderr(text, bare_counts, pattern)

    def _skip(self, settings: LogSettings, reason: str) -> LogWindow:
        """A window the log cannot back; the next usable scrape is a baseline again."""
        self.forget()
        return LogWindow(False, reason, settings, {}, 0)

    def _close(self, settings: LogSettings, signature: tuple[object, ...], stamp: str, total: int) -> LogWindow:
        reason = self._gap
        if self._overflow:
            reason = f"more than duration_log_max_records ({self.max_records}) calls were logged in one window"
        if self._signature != signature:
            reason = reason or "the log settings changed during the window"
        by_db: dict[str, DatabaseTail] = {}
        later: list[Record] = []
        for record in self._records:
            if record[0] > stamp:
                later.append(record)  # logged after this mark: the next window's
            elif reason is None:
                tail = by_db.get(record[1])
                if tail is None:
                    tail = by_db[record[1]] = DatabaseTail()
                tail.durations_ms.append(record[3])
                tail.query_ids.append(record[2])
        self._records = later
        self._mark = stamp
        self._signature = signature
        self._overflow = False
        self._gap = None
        return LogWindow(reason is None, reason, settings, by_db if reason is None else {}, total)


def from_config(exporter: ExporterConfig) -> DurationLog | None:
    """The reader ``exporter.duration_log`` asks for, or None when it is off.

    It may spend a quarter of the scrape budget (at most 2 s) reading and waiting for its mark.
    """
    if exporter.duration_log == "off":
        return None
    if exporter.duration_log == "directory":
        files: LogFiles = Directory(exporter.duration_log_directory or "")
    else:
        files = ServerFiles("exporter", "exporter.duration_log")
    return DurationLog(
        files,
        exporter.duration_log_format,
        exporter.duration_log_max_bytes,
        exporter.duration_log_max_records,
        time_budget_s=min(exporter.scrape_budget_s / 4, 2.0),
    )


def metrics(window: LogWindow | None, reader: DurationLog) -> list[Metric]:
    """The reader's own state: whether this window's log is complete, its threshold, what it read."""
    complete = GaugeMetricFamily(
        "pgarch_duration_log_complete",
        "1 when the server's duration log holds every call above its threshold for the last window.",
    )
    complete.add_metric([], 1.0 if window is not None and window.complete else 0.0)
    families: list[Metric] = [complete]
    if window is not None and window.settings is not None and window.settings.threshold_ms is not None:
        threshold = GaugeMetricFamily(
            "pgarch_duration_log_threshold_seconds",
            "log_min_duration_statement: every statement at least this slow is in the duration log (-1: off).",
        )
        ms = window.settings.threshold_ms
        threshold.add_metric([], ms / 1000.0 if ms >= 0 else -1.0)
        families.append(threshold)
    read = CounterMetricFamily("pgarch_duration_log_read_bytes", "Bytes of the duration log read by the exporter.")
    read.add_metric([], reader.bytes_read)
    late = CounterMetricFamily(
        "pgarch_duration_log_late_records",
        "Logged calls that reached the log file after their window was closed (not counted in any window).",
    )
    late.add_metric([], reader.late_records)
    return [*families, read, late]
