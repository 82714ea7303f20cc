"""The parameters of the slow statements' real calls, read from the server's log.

pg_stat_statements keeps no parameter values, so by default the audit draws them from pg_stats: a range
sampled to be selective makes an index look good for a statement whose calls read most of the table, and a
constant it normalised inside an expression (``date_trunc('day', created_at)`` recorded as
``date_trunc($1, created_at)``) cannot become an index at all. With ``log_min_duration_statement`` the server
logs every call at least that slow, with its text, and for the extended protocol its bind parameters in a
DETAIL line. With ``auditor.server_log`` set, the audit reads those calls (auditor's role: pg_monitor and
EXECUTE on pg_read_binary_file, or the log directory mounted), matches each to its statement by query id,
and lines its text up with pg_stat_statements' text token by token: every placeholder gets the value that
call ran with. Calls that do not line up (another spelling under the same query id) are left out.

What leaves the audit: nothing of the values, with one exception. They are bound into the samples the
server plans and runs, in the audit's own rolled-back session, as values drawn from pg_stats are; they are
not stored, reported or sent to a model. The exception is a constant the application writes into the SQL
itself, inside an expression an index would hold (the unit of ``date_trunc``, a JSON key), and that is the
same in every logged call: that is the statement's shape, not data, and it goes into the expression index.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence

from pglast import parser
from pglast.parser import ParseError

from pg_architect.auditor.parsing import QueryShape
from pg_architect.core import db
from pg_architect.core.errors import PgArchitectError
from pg_architect.core.queries import QUERIES
from pg_architect.core.serverlog import (
    SUFFIXES,
    LogFiles,
    ServerLogError,
    complete_csv,
    complete_lines,
    entries,
    log_format,
    stderr_pattern,
)

log = logging.getLogger(__name__)

#: Logged calls kept per statement (the latest), and used as samples at most.
MAX_CALLS = 200
_CHUNK = 4 * 1024 * 1024
_NEEDLE = "duration: "
_CONSTANTS = frozenset({"SCONST", "ICONST", "FCONST", "BCONST", "XCONST", "USCONST"})
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_KEYWORD_VALUES = {"TRUE_P": "true", "FALSE_P": "false"}
#: A constant longer than this is never taken into an expression index.
MAX_CONSTANT_CHARS = 64


@dataclasses.dataclass(frozen=True, slots=True)
class LogSettings:
    destination: str
    logging_collector: bool
    log_directory: str | None
    log_line_prefix: str
    threshold_ms: float | None
    parameter_max_length: int | None
    lc_messages: str


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedCall:
    """One logged call of a statement, in pg_stat_statements' placeholders.

    ``values``: each placeholder's value as text (None: NULL); a placeholder whose value the log does not
    hold whole (a truncated parameter) is absent. ``written``: the placeholders that were constants written
    in the SQL text (not bind parameters), with their spelling there (``'day'``, ``-1``).
    """

    ms: float
    values: dict[int, str | None]
    written: dict[int, str]


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedCalls:
    """What the log said for one audit: the calls per query id, and how much was read."""

    by_query_id: dict[int, list[LoggedCall]]
    bytes_read: int
    threshold_ms: float | None

    def of(self, query_ids: Iterable[int]) -> list[LoggedCall]:
        calls: list[LoggedCall] = []
        for qid in query_ids:
            calls.extend(self.by_query_id.get(qid, ()))
        return calls


class ServerLogUnusable(PgArchitectError):
    """The server's log holds no usable parameters (the reason says why, and what to set)."""


# -- reading ----------------------------------------------------------------------------------------------


def read_settings(conn: db.Connection) -> LogSettings:
    row = db.fetch_one(conn, db.query(conn, QUERIES, "server_log_settings"), None, LogSettings)
    assert row is not None  # a SELECT without FROM returns one row
    return row


def read(
    conn: db.Connection,
    files: LogFiles,
    database: str,
    statements: Mapping[int, str],
    max_bytes: int,
    fmt: str = "auto",
) -> LoggedCalls:
    """The logged calls of ``statements`` (query id -> pg_stat_statements' text) in ``database``, newest files
    first, reading at most ``max_bytes``. ServerLogUnusable or ServerLogError when the log cannot serve."""
    settings = read_settings(conn)
    if settings.threshold_ms is None or settings.threshold_ms < 0:
        raise ServerLogUnusable(
            "log_min_duration_statement is -1: the server logs no slow statement (set it, e.g. to 250ms)"
        )
    if settings.lc_messages and not settings.lc_messages.lower().startswith(("c", "en", "posix")):
        raise ServerLogUnusable(f"lc_messages {settings.lc_messages!r}: the log's messages are translated")
    fmt = log_format(settings.destination, fmt)
    pattern = stderr_pattern(settings.log_line_prefix) if fmt == "stderr" else None
    wanted = {qid: text for qid, text in statements.items() if qid}
    found: dict[int, collections.deque[LoggedCall]] = {qid: collections.deque(maxlen=MAX_CALLS) for qid in wanted}
    budget = max_bytes
    total = 0
    for listed in reversed(files.list(conn, settings.log_directory, SUFFIXES[fmt])):
        if budget <= 0 or all(len(calls) >= MAX_CALLS for calls in found.values()):
            break
        start = max(0, listed.size - budget)
        in_file: dict[int, list[LoggedCall]] = {qid: [] for qid in wanted}
        offset, tail, first = start, b"", start > 0
        while offset < listed.size:
            chunk = files.read(conn, settings.log_directory, listed.name, offset, min(_CHUNK, listed.size - offset))
            if not chunk:
                break
            offset += len(chunk)
            total += len(chunk)
            data = tail + chunk
            if first:
                data, first = _from_record_start(data, fmt), False
            end = complete_csv(data) if fmt == "csvlog" else complete_lines(data)
            tail = data[end:]
            for entry in entries(data[:end].decode("utf-8", "replace"), fmt, _NEEDLE, pattern):
                if entry.database != database:
                    continue
                # Without a query id in the log (a stderr prefix without %Q, compute_query_id off), the call
                # belongs to the statement whose text it lines up with token for token.
                for qid in (entry.query_id,) if entry.query_id else wanted:
                    template = wanted.get(qid)
                    if template is None:
                        continue
                    call = _call(template, entry.message, entry.detail, settings.parameter_max_length)
                    if call is not None:
                        in_file[qid].append(call)
                        break
        budget -= listed.size - start
        for qid, calls in in_file.items():
            # Older files come later: this file's calls go before those already kept.
            found[qid].extendleft(reversed(calls))
    return LoggedCalls({qid: list(calls) for qid, calls in found.items() if calls}, total, settings.threshold_ms)


_RECORD_START = {
    "csvlog": re.compile(rb"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"),
    "jsonlog": re.compile(rb'\n(?=\{"timestamp")'),
}


def _from_record_start(data: bytes, fmt: str) -> bytes:
    """``data`` from the first record that starts in it (a read that began mid-file began mid-record)."""
    pattern = _RECORD_START.get(fmt)
    match = pattern.search(data) if pattern is not None else re.search(rb"\n", data)
    return data[match.end() :] if match is not None else b""


def _statement_text(message: str) -> tuple[float, str] | None:
    """(ms, text) of ``duration: X ms  statement: ...`` or ``duration: X ms  execute <name>: ...``."""
    end = message.find(" ms  ", len(_NEEDLE))
    if end < 0:
        return None
    try:
        ms = float(message[len(_NEEDLE) : end])
    except ValueError:
        return None
    rest = message[end + 5 :]
    if rest.startswith("statement: "):
        return ms, rest[len("statement: ") :]
    if rest.startswith("execute "):
        colon = rest.find(": ")
        return (ms, rest[colon + 2 :]) if colon > 0 else None
    return None


def _call(template: str, message: str, detail: str | None, max_length: int | None) -> LoggedCall | None:
    parsed = _statement_text(message)
    if parsed is None:
        return None
    ms, text = parsed
    binds = bind_parameters(detail, max_length) if detail else {}
    lined_up = align(template, text, binds)
    if lined_up is None:
        return None
    values, written = lined_up
    return LoggedCall(ms, values, written)


# -- the DETAIL line's parameters ------------------------------------------------------------------------

_PARAM = re.compile(r"\$(\d+) = (NULL|'((?:[^']|'')*)')")


def bind_parameters(detail: str, max_length: int | None) -> dict[int, str | None]:
    """``Parameters: $1 = 'x', $2 = NULL`` as {1: 'x', 2: None}; a value the server cut at
    ``log_parameter_max_length`` (it then ends with ``...``) is left out."""
    head = detail.lstrip()
    if not head.lower().startswith("parameters: "):
        return {}
    out: dict[int, str | None] = {}
    for match in _PARAM.finditer(head, len("parameters: ")):
        number = int(match.group(1))
        if match.group(2) == "NULL":
            out[number] = None
            continue
        value = match.group(3).replace("''", "'")
        if max_length is not None and max_length > 0 and value.endswith("...") and len(value) - 3 >= max_length:
            continue  # truncated
        out[number] = value
    return out


# -- lining a logged call up with pg_stat_statements' text ---------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    name: str
    text: str


def _tokens(text: str) -> list[_Token] | None:
    try:
        scanned = parser.scan(text)
    except ParseError:
        return None
    return [_Token(t.name, text[t.start : t.end + 1]) for t in scanned]


def _constant(tokens: Sequence[_Token], i: int) -> tuple[str, str | None, int] | None:
    """The constant at ``tokens[i]`` as (spelling, value, tokens used); a minus sign before a number belongs
    to it (pg_stat_statements counts it in). None when ``tokens[i]`` is no constant."""
    tok = tokens[i]
    if tok.name == "ASCII_45" and i + 1 < len(tokens) and tokens[i + 1].name in ("ICONST", "FCONST"):
        return "-" + tokens[i + 1].text, "-" + tokens[i + 1].text, 2
    if tok.name in ("ICONST", "FCONST"):
        return tok.text, tok.text, 1
    if tok.name == "SCONST":
        return tok.text, _string_value(tok.text), 1
    if tok.name in _CONSTANTS:
        return tok.text, None, 1  # bit strings, Unicode escapes: their value is not read here
    if tok.name in _KEYWORD_VALUES:
        return tok.text, _KEYWORD_VALUES[tok.name], 1
    if tok.name == "NULL_P":
        return tok.text, None, 1
    return None


def _string_value(spelling: str) -> str | None:
    """The value of a string constant as written; None for forms whose escapes are not decoded here."""
    if spelling.startswith("'") and spelling.endswith("'") and len(spelling) >= 2:
        return spelling[1:-1].replace("''", "'")
    dollar = re.fullmatch(r"(\$[A-Za-z_0-9]*\$)(.*)\1", spelling, re.DOTALL)
    if dollar is not None:
        return dollar.group(2)
    return None  # E'...' with backslash escapes


def align(
    template: str, logged: str, binds: Mapping[int, str | None]
) -> tuple[dict[int, str | None], dict[int, str]] | None:
    """The value of each of ``template``'s placeholders in the call ``logged`` (its text as the server logged
    it, ``binds`` its bind parameters), and which of them were constants written in that text; None when the
    two texts are not the same statement token for token.

    pg_stat_statements replaced constants with ``$n`` (and from PostgreSQL 18 renumbered bind parameters
    too), so a placeholder of the template meets a constant or a ``$n`` of the logged text. An IN list it
    squashed (``IN ($1 /*, ... */)``) meets the whole list: its first value is taken. A logged text holding
    several statements lines up when one of them does.
    """
    tmpl = _tokens(template)
    text = _tokens(logged)
    if tmpl is None or text is None:
        return None
    statements: list[list[_Token]] = [[]]
    for tok in text:
        if tok.name in _COMMENTS:
            continue
        if tok.name == "ASCII_59":
            statements.append([])
        else:
            statements[-1].append(tok)
    for part in statements:
        if part:
            found = _align(tmpl, part, binds)
            if found is not None:
                return found
    return None


def _align(
    tmpl: Sequence[_Token], text: Sequence[_Token], binds: Mapping[int, str | None]
) -> tuple[dict[int, str | None], dict[int, str]] | None:
    values: dict[int, str | None] = {}
    written: dict[int, str] = {}
    i = j = 0
    while i < len(tmpl):
        tok = tmpl[i]
        if tok.name in _COMMENTS or tok.name == "ASCII_59":
            i += 1
            continue
        if j >= len(text):
            return None
        if tok.name != "PARAM":
            if text[j].name != tok.name or (tok.name in ("IDENT", "Op") and text[j].text != tok.text):
                return None
            i, j = i + 1, j + 1
            continue
        number = int(tok.text[1:])
        squashed = i + 1 < len(tmpl) and tmpl[i + 1].name == "C_COMMENT" and "..." in tmpl[i + 1].text
        if text[j].name == "PARAM":
            bind = int(text[j].text[1:])
            if bind in binds:
                values[number] = binds[bind]
            j += 1
        else:
            constant = _constant(text, j)
            if constant is None:
                return None
            spelling, value, used = constant
            if value is not None or spelling.upper() == "NULL":
                values[number] = value
            written[number] = spelling
            j += used
        if squashed:
            # The rest of the list: ``, item`` pairs up to the closing parenthesis.
            while j + 1 < len(text) and text[j].name == "ASCII_44":
                nxt = _constant(text, j + 1)
                if nxt is not None:
                    j += 1 + nxt[2]
                elif text[j + 1].name == "PARAM":
                    j += 2
                else:
                    return None
            written.pop(number, None)
        i += 1
    if j != len(text):
        return None
    return values, written


# -- what the audit takes from the calls ------------------------------------------------------------------


def samples(calls: Sequence[LoggedCall], placeholders: Iterable[int], n: int) -> list[dict[int, str | None]]:
    """Up to ``n`` distinct value sets of the calls for ``placeholders`` (calls lacking one are left out), spread
    over the calls' durations, the median call first: the same log gives the same samples."""
    wanted = sorted(set(placeholders))
    distinct: dict[tuple[tuple[int, str | None], ...], float] = {}
    for call in calls:
        if any(p not in call.values for p in wanted):
            continue
        key = tuple((p, call.values[p]) for p in wanted)
        distinct[key] = max(distinct.get(key, 0.0), call.ms)
    if not distinct or n <= 0:
        return []
    ordered = sorted(distinct.items(), key=lambda kv: (-kv[1], repr(kv[0])))
    if len(ordered) <= n:
        positions = list(range(len(ordered)))
    else:
        step = (len(ordered) - 1) / max(n - 1, 1)
        positions = sorted({round(k * step) for k in range(n)})
    # The median call first (the measurement keeps the first ones), then the slowest, the fastest, ...
    middle = (len(ordered) - 1) / 2
    positions.sort(key=lambda i: (abs(i - middle), i))
    return [dict(ordered[i][0]) for i in positions]


def shape_constants(calls: Sequence[LoggedCall], shape: QueryShape) -> dict[int, str]:
    """The placeholders inside an expression an index would hold (``date_trunc($1, created_at)``) that every
    logged call wrote as the same constant in its SQL: placeholder -> the constant as written."""
    inside: set[int] = set()
    for use in shape.columns:
        if use.parameterised and use.role in ("eq", "range", "in", "order_by") and use.expression is not None:
            inside.update(int(t.text[1:]) for t in _tokens(use.expression) or () if t.name == "PARAM")
    if not calls:
        return {}
    out: dict[int, str] = {}
    for number in sorted(inside):
        spellings = {call.written.get(number) for call in calls}
        if len(spellings) != 1:
            continue
        spelling = next(iter(spellings))
        if spelling is not None and len(spelling) <= MAX_CONSTANT_CHARS:
            out[number] = spelling
    return out


def renumbered(calls: Sequence[LoggedCall], renumber: Mapping[int, int]) -> list[LoggedCall]:
    """``calls`` in the placeholders of the statement ``with_constants`` wrote (old number -> new number)."""
    return [
        LoggedCall(
            call.ms,
            {renumber[n]: v for n, v in call.values.items() if n in renumber},
            {renumber[n]: w for n, w in call.written.items() if n in renumber},
        )
        for call in calls
    ]


def with_constants(text: str, constants: Mapping[int, str]) -> tuple[str, dict[int, int]]:
    """``text`` with the placeholders in ``constants`` written back as those constants, and the others
    renumbered from $1 (old number -> new number), so that the statement still has no gap in its ``$n``."""
    scanned = _tokens(text)
    if scanned is None:
        return text, {}
    numbers = sorted({int(t.text[1:]) for t in scanned if t.name == "PARAM"} - set(constants))
    renumber = {old: new for new, old in enumerate(numbers, start=1)}
    pieces: list[str] = []
    last = 0
    for tok in parser.scan(text):
        if tok.name != "PARAM":
            continue
        old = int(text[tok.start + 1 : tok.end + 1])
        pieces.append(text[last : tok.start])
        pieces.append(constants[old] if old in constants else f"${renumber[old]}")
        last = tok.end + 1
    pieces.append(text[last:])
    return "".join(pieces), renumber


__all__ = [
    "LoggedCall",
    "LoggedCalls",
    "ServerLogError",
    "ServerLogUnusable",
    "align",
    "bind_parameters",
    "read",
    "renumbered",
    "samples",
    "shape_constants",
    "with_constants",
]
