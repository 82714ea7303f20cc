"""The server's own duration log: parsing each format, the incremental reader on a real server, its bounds."""

from __future__ import annotations

import csv
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pg_architect.core import db
from pg_architect.core.config import load_config
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.core.errors import ConfigError
from pg_architect.core.serverlog import Directory, LogFiles, ServerFiles, complete_csv, stderr_pattern
from pg_architect.exporter.durationlog import (
    DurationLog,
    DurationLogError,
    LogSettings,
    duration_of,
    parse_csv,
    parse_json,
    parse_ms,
    parse_stderr,
)
from tests.conftest import LOG_THRESHOLD_MS, ServerInfo, make_database

# -- parsing, no server -------------------------------------------------------------------------------------


def test_only_top_level_statement_durations_count() -> None:
    assert duration_of("duration: 12.345 ms  statement: SELECT 1", bare_counts=False) == 12.345
    assert duration_of("duration: 0.500 ms  execute <unnamed>: SELECT $1", bare_counts=False) == 0.5
    assert duration_of("duration: 3.000 ms  parse <unnamed>: SELECT 1", bare_counts=True) is None
    assert duration_of("duration: 3.000 ms  bind <unnamed>: SELECT 1", bare_counts=True) is None
    assert duration_of("duration: 9.000 ms  plan:\nQuery Text: SELECT 1", bare_counts=True) is None
    assert duration_of("duration: 3.000 ms", bare_counts=False) is None  # log_duration: may be a parse step
    assert duration_of("duration: 3.000 ms", bare_counts=True) == 3.0  # log_statement printed it before
    assert duration_of("connection authorized: user=x", bare_counts=True) is None


def test_a_csv_record_is_complete_only_at_a_newline_outside_quotes() -> None:
    first = b'2026-01-01 00:00:00.001 UTC,"u","d",1,,,,,,,,LOG,00000,"duration: 1.000 ms  statement: SELECT\n 1",,,\n'
    partial = b'2026-01-01 00:00:00.002 UTC,"u","d",1,,,,,,,,LOG,00000,"duration: 2.000 ms  statement: SELECT\n'
    assert complete_csv(first) == len(first)
    assert complete_csv(first + partial) == len(first)
    assert complete_csv(partial) == 0


def _csv_line(stamp: str, db: str, message: str, query_id: str = "42", severity: str = "LOG") -> str:
    row = [stamp, "alice", db, "7", "", "", "1", "", "", "", "0", severity, "00000", message]
    row += [""] * 8 + ["app", "client backend", "", query_id]
    out: list[str] = []
    csv.writer(_Sink(out)).writerow(row)
    return "".join(out)


class _Sink:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)


def test_csvlog_records_give_time_database_query_id_and_duration() -> None:
    text = (
        _csv_line("2026-01-01 10:00:00.123 UTC", "shop", "duration: 300.5 ms  statement: SELECT 'a,\n\"b\"'")
        + _csv_line("2026-01-01 10:00:00.200 UTC", "shop", "duration: 1.0 ms  parse s1: SELECT 1")
        + _csv_line("2026-01-01 10:00:00.300 UTC", "shop", "duration: 5.0 ms  statement: x", severity="ERROR")
        + _csv_line("2026-01-01 10:00:00.400 UTC", "crm", "duration: 2.0 ms  execute s1: SELECT 1", query_id="-9")
    )
    assert list(parse_csv(text, bare_counts=False)) == [
        ("2026-01-01 10:00:00.123", "shop", 42, 300.5),
        ("2026-01-01 10:00:00.400", "crm", -9, 2.0),
    ]


def test_jsonlog_records_give_time_database_query_id_and_duration() -> None:
    lines = [
        '{"timestamp":"2026-01-01 10:00:00.123 UTC","dbname":"shop","error_severity":"LOG",'
        '"message":"duration: 300.500 ms  statement: SELECT 1","query_id":42}',
        '{"timestamp":"2026-01-01 10:00:00.124 UTC","dbname":"shop","error_severity":"LOG",'
        '"message":"connection received"}',
        "not json: duration: 1 ms",
    ]
    assert list(parse_json("\n".join(lines) + "\n", bare_counts=False)) == [
        ("2026-01-01 10:00:00.123", "shop", 42, 300.5)
    ]


def test_stderr_lines_are_read_through_the_servers_log_line_prefix() -> None:
    pattern = stderr_pattern("%m [%p] %q%u@%d ")
    text = (
        "2026-01-01 10:00:00.123 UTC [77] alice@shop LOG:  duration: 300.500 ms  statement: SELECT\n"
        "\t1\n"
        "2026-01-01 10:00:00.124 UTC [77] alice@shop LOG:  duration: 0.200 ms  bind s: SELECT 1\n"
        "2026-01-01 10:00:00.125 UTC [78] bob@crm LOG:  duration: 250.000 ms  execute s: SELECT 2\n"
    )
    assert list(parse_stderr(text, False, pattern)) == [
        ("2026-01-01 10:00:00.123", "shop", 0, 300.5),
        ("2026-01-01 10:00:00.125", "crm", 0, 250.0),
    ]


def test_a_stderr_prefix_without_time_or_database_is_refused_with_the_fix() -> None:
    with pytest.raises(DurationLogError, match="%m or %d"):
        stderr_pattern("%t [%p] ")
    with pytest.raises(DurationLogError, match="%m or %d"):
        stderr_pattern("%m [%p] ")


def test_time_settings_are_read_in_their_units() -> None:
    assert parse_ms("250") == 250.0
    assert parse_ms("250ms") == 250.0
    assert parse_ms("1s") == 1000.0
    assert parse_ms("2min") == 120000.0
    assert parse_ms("-1") == -1.0
    assert parse_ms("soon") is None


def test_the_highest_threshold_that_applies_to_a_database_is_the_complete_one() -> None:
    def settings(threshold_ms: float, overrides: list[str] | None) -> LogSettings:
        return LogSettings("", 0.0, "csvlog", True, "log", "", threshold_ms, False, "none", "C", overrides)

    assert settings(250.0, None).threshold_for(5) == 250.0
    per_db = settings(250.0, ["5=1s", "0=500", "6=-1"])
    assert per_db.threshold_for(5) == 1000.0  # its own 1 s, above the role-wide 500 ms
    assert per_db.threshold_for(7) == 500.0  # a role-wide setting applies to every database
    assert per_db.threshold_for(6) is None  # switched off there: the log is complete nowhere in it
    assert settings(-1.0, None).threshold_for(5) is None


def test_config_needs_the_directory_for_the_directory_source() -> None:
    with pytest.raises(ConfigError, match="duration_log_directory"):
        load_config(env={"PG_ARCHITECT_EXPORTER_DURATION_LOG": "directory"})
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(env={"PG_ARCHITECT_EXPORTER_DURATION_LOG": "syslog"})
    cfg = load_config(
        env={"PG_ARCHITECT_EXPORTER_DURATION_LOG": "directory", "PG_ARCHITECT_EXPORTER_DURATION_LOG_DIRECTORY": "/x"}
    )
    assert cfg.exporter.duration_log_directory == "/x"


# -- the reader on a real server ----------------------------------------------------------------------------


def _log_dir(server: ServerInfo) -> Path:
    assert isinstance(server.server, EmbeddedPostgres)
    return server.server.data_dir / "log"


def _run(dsn: str, seconds: list[float], threads: int = 2) -> None:
    """pg_sleep calls from ``threads`` connections over the simple protocol (one log line per call)."""
    errors: list[BaseException] = []

    def work(chunk: list[float]) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
                for s in chunk:
                    conn.execute("SELECT pg_sleep(%s)", (s,))
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(seconds[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


@pytest.fixture
def log_db(logging_pg: ServerInfo, request: pytest.FixtureRequest) -> str:
    return make_database(logging_pg, f"log_{request.node.name[5:40]}")


def _reader(logging_pg: ServerInfo, via: str = "directory", **kw: float) -> DurationLog:
    files: LogFiles = Directory(str(_log_dir(logging_pg)))
    if via != "directory":
        files = ServerFiles("exporter", "exporter.duration_log")
    return DurationLog(files, "auto", **kw)  # type: ignore[arg-type]


def _slow_calls(window_db: object) -> list[float]:
    return sorted(window_db.durations_ms) if window_db is not None else []  # type: ignore[attr-defined]


def test_every_call_above_the_threshold_is_in_its_window_through_both_sources(
    logging_pg: ServerInfo, log_db: str
) -> None:
    dbname = log_db.rsplit("/", 1)[1]
    with db.connect(logging_pg.dsn(), db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        by_dir, by_sql = _reader(logging_pg), _reader(logging_pg, "pg_read_file")
        assert by_dir.collect(conn).reason == "baseline"
        assert by_sql.collect(conn).reason == "baseline"
        _run(log_db, [0.3, 0.001, 0.26, 0.002, 0.4, 0.001])
        first_dir, first_sql = by_dir.collect(conn), by_sql.collect(conn)
        _run(log_db, [0.27, 0.001])
        second_dir = by_dir.collect(conn)
    assert first_dir.complete and first_sql.complete, (first_dir.reason, first_sql.reason)
    slow = _slow_calls(first_dir.by_database.get(dbname))
    assert len(slow) == 3 and slow[0] >= LOG_THRESHOLD_MS, slow
    assert slow == _slow_calls(first_sql.by_database.get(dbname))
    assert all(q != 0 for q in first_dir.by_database[dbname].query_ids)  # csvlog carries the query id
    assert first_dir.threshold_s(0) == LOG_THRESHOLD_MS / 1000
    later = _slow_calls(second_dir.by_database.get(dbname))
    assert len(later) == 1 and later[0] >= 270, later  # the next window holds only its own call


def test_a_rotated_log_loses_no_call(logging_pg: ServerInfo, log_db: str) -> None:
    dbname = log_db.rsplit("/", 1)[1]
    with db.connect(logging_pg.dsn(), db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        reader = _reader(logging_pg)
        reader.collect(conn)
        before = {p.name for p in _log_dir(logging_pg).glob("*.csv")}
        _run(log_db, [0.26, 0.27])
        conn.execute("SELECT pg_rotate_logfile()")
        # The collector opens a new file (named by the second); calls after it land there.
        while {p.name for p in _log_dir(logging_pg).glob("*.csv")} == before:
            conn.execute("SELECT pg_sleep(0.05)")
            conn.execute("SELECT pg_rotate_logfile()")
        _run(log_db, [0.28, 0.29, 0.001])
        window = reader.collect(conn)
    assert window.complete, window.reason
    assert len(_slow_calls(window.by_database.get(dbname))) == 4


def test_past_its_bounds_a_window_is_marked_incomplete_not_short(logging_pg: ServerInfo, log_db: str) -> None:
    with db.connect(logging_pg.dsn(), db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        few_records = _reader(logging_pg, max_records=2)
        few_bytes = _reader(logging_pg, max_bytes=200)
        no_time = _reader(logging_pg, time_budget_s=0.0)  # a scrape that cannot wait: never a short window
        for reader in (few_records, few_bytes, no_time):
            reader.collect(conn)
        _run(log_db, [0.26, 0.26, 0.26])
        records, size, hurried = few_records.collect(conn), few_bytes.collect(conn), no_time.collect(conn)
        assert not records.complete and "duration_log_max_records" in (records.reason or "")
        assert not size.complete and "duration_log_max_bytes" in (size.reason or "")
        assert not hurried.complete and "faster" in (hurried.reason or ""), hurried.reason
        assert records.by_database == {} and size.by_database == {} and hurried.by_database == {}


def test_a_changed_threshold_makes_the_window_incomplete(logging_pg: ServerInfo, log_db: str) -> None:
    dbname = log_db.rsplit("/", 1)[1]
    with db.connect(logging_pg.dsn(), db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        reader = _reader(logging_pg)
        reader.collect(conn)
        conn.execute(f"ALTER DATABASE {dbname} SET log_min_duration_statement = '1s'")
        try:
            _run(log_db, [0.3])
            changed = reader.collect(conn)
            steady = reader.collect(conn)
            dbid = conn.execute("SELECT oid::bigint FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        finally:
            conn.execute(f"ALTER DATABASE {dbname} RESET log_min_duration_statement")
    assert not changed.complete and "changed" in (changed.reason or "")
    assert steady.complete and dbid is not None
    assert steady.threshold_s(int(dbid[0])) == 1.0  # complete only above the database's own 1 s
    assert steady.threshold_s(0) == LOG_THRESHOLD_MS / 1000


def test_a_role_that_may_not_read_the_log_gets_the_fix_in_the_error(logging_pg: ServerInfo) -> None:
    with psycopg.connect(logging_pg.dsn(), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS log_reader_plain")
        admin.execute("CREATE ROLE log_reader_plain LOGIN")
    dsn = logging_pg.dsn(user="log_reader_plain")
    with db.connect(dsn, db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        reader = _reader(logging_pg, "pg_read_file")
        with pytest.raises(DurationLogError, match="pg_monitor"):
            reader.collect(conn)


@pytest.fixture(scope="module")
def json_and_stderr_pg() -> Iterator[ServerInfo]:
    """A server writing both jsonlog and stderr files (PostgreSQL 15+), every statement of 100 ms or more."""
    root = Path(tempfile.mkdtemp(prefix="pgarch-jsonlog-"))
    server = EmbeddedPostgres(
        root / "data",
        settings={
            "logging_collector": "on",
            "log_destination": "'stderr,jsonlog'",
            "log_directory": "'log'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_duration_statement": "100",
        },
    )
    server.start()
    try:
        yield ServerInfo(host=server.host, port=server.port, user="postgres", server=server)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fmt", ["jsonlog", "stderr"])
def test_jsonlog_and_stderr_files_of_a_real_server_give_the_same_calls(
    json_and_stderr_pg: ServerInfo, fmt: str
) -> None:
    dbname = f"fmt_{fmt}"
    dsn = make_database(json_and_stderr_pg, dbname)
    with db.connect(json_and_stderr_pg.dsn(), db.Role.EXPORTER, db.Timeouts(5, 30000, 1000, 60000)) as conn:
        reader = DurationLog(Directory(str(_log_dir(json_and_stderr_pg))), fmt)
        assert reader.collect(conn).reason == "baseline"
        _run(dsn, [0.12, 0.001, 0.15, 0.002, 0.11])
        window = reader.collect(conn)
    assert window.complete, window.reason
    slow = _slow_calls(window.by_database.get(dbname))
    assert len(slow) == 3 and slow[0] >= 100, slow
