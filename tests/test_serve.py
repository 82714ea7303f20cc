"""``pg-architect serve``: the schedule (pure time arithmetic) and the admin API over real HTTP, against a
real PostgreSQL, with the daemon as a subprocess stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from openapi_spec_validator import validate

from pg_architect.auditor.api import HttpError, audit_overrides, authorize, page
from pg_architect.auditor.kb import AUDIT_LOCK
from pg_architect.auditor.scheduler import (
    DAILY_SNAPSHOT,
    WEEKLY_AUDIT,
    WEEKLY_REPORT,
    Schedule,
    Tracker,
    catch_up_audit,
)
from pg_architect.core.config import ScheduleConfig
from pg_architect.core.embedded import free_port
from tests.stack import wait_for

TOKEN = "secret"
BERLIN = ZoneInfo("Europe/Berlin")
SAIGON = ZoneInfo("Asia/Ho_Chi_Minh")


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A wall-clock time in ``tz`` as a UTC instant."""
    return datetime(year, month, day, hour, minute, second, tzinfo=tz).astimezone(UTC)


def schedule(tz: str = "Asia/Ho_Chi_Minh", **kw: str) -> Schedule:
    return Schedule.from_config(ScheduleConfig(timezone=tz, **kw))


# -- the schedule ------------------------------------------------------------------------------------------


def test_next_slots_are_the_configured_wall_clock_times_in_ho_chi_minh() -> None:
    # Wednesday 2026-11-25 12:00 in Saigon (UTC+7, no DST).
    runs = schedule().next_runs(local(SAIGON, 2026, 11, 25, 12, 0))
    assert runs == [
        (local(SAIGON, 2026, 11, 26, 3, 0), DAILY_SNAPSHOT),
        (local(SAIGON, 2026, 11, 29, 2, 0), WEEKLY_AUDIT),  # Sunday
        (local(SAIGON, 2026, 11, 30, 9, 0), WEEKLY_REPORT),  # Monday
    ], runs
    assert runs[1][0] == datetime(2026, 11, 28, 19, 0, tzinfo=UTC)  # Sunday 02:00 +07 is Saturday 19:00 UTC


def test_a_slot_is_strictly_after_now() -> None:
    s = schedule()
    at = local(SAIGON, 2026, 11, 26, 3, 0)
    assert dict((n, w) for w, n in s.next_runs(at))[DAILY_SNAPSHOT] == local(SAIGON, 2026, 11, 27, 3, 0)
    before = at - timedelta(seconds=1)
    assert dict((n, w) for w, n in s.next_runs(before))[DAILY_SNAPSHOT] == at


def test_berlin_dst_spring_forward_runs_a_skipped_time_once_after_the_gap() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; "sunday 02:30" does not exist that day.
    s = schedule("Europe/Berlin", weekly_audit="sunday 02:30")
    slot = dict((n, w) for w, n in s.next_runs(local(BERLIN, 2026, 3, 28, 12, 0)))[WEEKLY_AUDIT]
    assert slot == datetime(2026, 3, 29, 1, 30, tzinfo=UTC), slot  # 03:30 CEST
    nxt = dict((n, w) for w, n in s.next_runs(slot))[WEEKLY_AUDIT]
    assert nxt == datetime(2026, 4, 5, 0, 30, tzinfo=UTC), nxt  # a week later, 02:30 CEST = 00:30 UTC


def test_berlin_dst_fall_back_runs_a_repeated_time_once() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice that night.
    s = schedule("Europe/Berlin", daily_snapshot="02:30")
    tracker = Tracker(s, local(BERLIN, 2026, 10, 24, 12, 0))
    ran: list[datetime] = []
    t = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    while t < datetime(2026, 10, 26, 6, 0, tzinfo=UTC):  # every minute across both 02:30s and the next day
        if DAILY_SNAPSHOT in tracker.due(t):
            ran.append(t)
        t += timedelta(minutes=1)
    assert ran == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)], ran


def test_each_slot_is_handed_out_once_even_when_polled_repeatedly() -> None:
    s = schedule()
    start = local(SAIGON, 2026, 11, 28, 12, 0)
    tracker = Tracker(s, start)
    slot = local(SAIGON, 2026, 11, 29, 2, 0)
    assert tracker.due(slot - timedelta(seconds=1)) == []
    assert tracker.due(slot) == [WEEKLY_AUDIT]
    for k in range(1, 120):
        assert WEEKLY_AUDIT not in tracker.due(slot + timedelta(seconds=k))
    assert tracker.next_due() == local(SAIGON, 2026, 11, 30, 3, 0) - timedelta(days=1)  # Sunday's snapshot


def test_after_downtime_missed_slots_run_at_most_once() -> None:
    s = schedule()
    tracker = Tracker(s, local(SAIGON, 2026, 11, 1, 12, 0))
    # Three weeks pass with nobody asking (a suspended VM): every job once, not once per missed slot.
    assert sorted(tracker.due(local(SAIGON, 2026, 11, 22, 12, 0))) == sorted(
        [WEEKLY_AUDIT, DAILY_SNAPSHOT, WEEKLY_REPORT]
    )
    assert tracker.due(local(SAIGON, 2026, 11, 22, 12, 1)) == []


def test_catch_up_audit_only_when_the_last_success_is_over_a_week_old() -> None:
    now = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
    assert catch_up_audit(now - timedelta(days=8), now)
    assert not catch_up_audit(now - timedelta(days=6), now)
    assert not catch_up_audit(None, now)  # a fresh install waits for its first slot


# -- request validation ---------------------------------------------------------------------------------


def test_run_audit_body_is_validated_listing_every_problem() -> None:
    assert audit_overrides(b"") == {}
    assert audit_overrides(b'{"min_calls": 2, "dry_run": true}') == {"min_calls": 2, "dry_run": True}
    with pytest.raises(HttpError) as exc:
        audit_overrides(b'{"min_calls": "x", "limit": 0, "bogus": 1}')
    assert exc.value.status == 400
    for part in ("bogus", "min_calls", "limit"):
        assert part in exc.value.message, exc.value.message
    with pytest.raises(HttpError):
        audit_overrides(b"[1]")
    with pytest.raises(HttpError):
        page({"limit": ["-1"]})
    assert page({"limit": ["5"], "offset": ["10"]}) == (5, 10)


def test_no_configured_token_refuses_instead_of_running_open() -> None:
    with pytest.raises(HttpError) as exc:
        authorize(f"Bearer {TOKEN}", None)
    assert exc.value.status == 403 and "no API token" in exc.value.message
    with pytest.raises(HttpError) as exc:
        authorize("Bearer nope", TOKEN)
    assert exc.value.status == 401
    authorize(f"Bearer {TOKEN}", TOKEN)


# -- the daemon, over HTTP ------------------------------------------------------------------------------


def call(
    port: int, method: str, path: str, token: str | None = TOKEN, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw, headers = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, raw, headers = err.code, err.read(), dict(err.headers)
    ctype = headers.get("Content-Type", "")
    return status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode()), headers


@pytest.fixture
def daemon(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, note text)")
        conn.execute("INSERT INTO orders SELECT g, g % 5000, repeat('x', 40) FROM generate_series(1, 60000) g")
        conn.execute("ANALYZE orders")
        for k in range(8):
            conn.execute("SELECT count(*) FROM orders WHERE customer_id = %s", (k,))
    port = free_port()
    # The token through auditor.api.token_file: the config loader currently rejects PG_ARCHITECT_API_TOKEN
    # as an unknown PG_ARCHITECT_* setting although it is the documented variable (reported).
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PG_ARCHITECT_AUDITOR_API_LISTEN": f"127.0.0.1:{port}",
        "PG_ARCHITECT_AUDITOR_API_TOKEN_FILE": str(token_file),
        "PG_ARCHITECT_AUDITOR_THRESHOLDS_MIN_CALLS": "1",
        "PG_ARCHITECT_AUDITOR_THRESHOLDS_MIN_MEAN_MS": "0",
        # The test owns the database and the embedded server has no hypopg: real builds, opted in.
        "PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pg_architect", "serve", "--config", "/dev/null", "--dsn", pg_dsn],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if call(port, "GET", "/healthz", token=None)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"serve exited early:\n{proc.stdout.read() if proc.stdout else ''}"
            assert time.monotonic() < deadline, "serve did not answer /healthz within 120 s"
            time.sleep(0.1)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_run(port: int, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, doc, _ = call(port, "GET", f"/admin/database/runs/{run_id}")
        assert status == 200, (status, doc)
        if doc["status"] != "running":
            return dict(doc)
        assert time.monotonic() < deadline, f"run {run_id} still running after {timeout} s"
        time.sleep(0.2)


def test_serve_runs_audits_over_the_admin_api_and_stops_cleanly_on_sigterm(
    daemon: tuple[int, subprocess.Popen[str]], pg_dsn: str
) -> None:
    port, proc = daemon
    assert call(port, "GET", "/healthz", token=None)[:2] == (200, {"status": "ok"})
    status, doc, _ = call(port, "GET", "/readyz", token=None)
    assert (status, doc) == (200, {"status": "ready"})
    status, spec, _ = call(port, "GET", "/openapi.json", token=None)
    assert status == 200
    validate(spec)
    for path in (
        "/admin/database/run-audit",
        "/admin/database/runs/{id}",
        "/admin/database/optimizations",
        "/admin/database/report",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path

    # Authentication: the token is required, for reads too, and never echoed back.
    for token in (None, "wrong"):
        status, doc, headers = call(port, "POST", "/admin/database/run-audit", token=token, body={})
        assert status == 401, (token, status, doc)
        assert "Bearer" in headers.get("WWW-Authenticate", "")
        assert TOKEN not in json.dumps(doc)
    assert call(port, "GET", "/admin/database/optimizations", token=None)[0] == 401

    # Validation before anything runs.
    status, doc, _ = call(port, "POST", "/admin/database/run-audit", body={"limit": "ten", "nope": 1})
    assert status == 400 and "limit" in doc["error"] and "nope" in doc["error"], doc
    status, doc, _ = call(port, "POST", "/admin/database/run-audit", body=b"{not json")
    assert status == 400, doc
    assert call(port, "GET", "/admin/database/report")[0] == 404  # nothing audited yet
    assert call(port, "GET", f"/admin/database/runs/{uuid.uuid4()}")[0] == 404
    assert call(port, "GET", "/admin/database/runs/not-a-uuid")[0] == 400
    assert call(port, "GET", "/admin/database/optimizations?limit=0")[0] == 400
    assert call(port, "GET", "/admin/database/optimizations?offset=x")[0] == 400

    # Another process (a CLI audit) holding the knowledge base's audit lock: 409 too, and nothing left busy here.
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (AUDIT_LOCK,)).fetchone() == (True,)
        status, doc, _ = call(port, "POST", "/admin/database/run-audit")
        assert status == 409 and "another audit" in doc["error"], (status, doc)

    # One audit: 202 with its run id, a second at once is refused.
    status, started, headers = call(port, "POST", "/admin/database/run-audit", body={"limit": 5})
    assert status == 202, started
    run_id = started["run_id"]
    assert str(uuid.UUID(run_id)) == run_id
    assert headers["Location"] == f"/admin/database/runs/{run_id}"
    status, doc, _ = call(port, "POST", "/admin/database/run-audit")
    assert status == 409, (status, doc)

    report = wait_for_run(port, run_id)
    assert report["status"] == "ok", report
    assert report["run_id"] == run_id

    status, latest, _ = call(port, "GET", "/admin/database/report")
    assert status == 200 and latest["run_id"] == run_id, latest
    status, markdown, headers = call(port, "GET", "/admin/database/report?format=markdown")
    assert status == 200 and headers["Content-Type"].startswith("text/markdown"), markdown
    assert call(port, "GET", "/admin/database/report?format=pdf")[0] == 400

    status, page_doc, _ = call(port, "GET", "/admin/database/optimizations?limit=10")
    assert status == 200, page_doc
    assert page_doc["limit"] == 10 and page_doc["offset"] == 0
    recommended = [q for q in report["slow_queries"] if q["status"] == "recommended"]
    assert len(page_doc["items"]) == min(len(recommended), 10), (page_doc, report["kpis"])
    assert recommended, f"the audit recommended nothing: {report['kpis']}"
    assert {item["run_id"] for item in page_doc["items"]} == {run_id}
    assert any("customer_id" in item["sql"] for item in page_doc["items"]), page_doc["items"]

    # SIGTERM: the loop sees the flag, the API stops, exit code 0.
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert time.monotonic() - t0 < 5, out
    print(out)
    assert TOKEN not in out


# -- the daemon's loop, in process with a fake clock ------------------------------------------------------


def test_loop_runs_due_jobs_catches_up_a_missed_audit_and_survives_a_failing_job(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pg_architect.auditor import daemon as daemon_mod
    from pg_architect.auditor.kb import KnowledgeBase
    from pg_architect.core.config import load_config

    kb = KnowledgeBase.open(pg_dsn)
    try:
        # The last successful audit was 8 days before the daemon's (fake) clock: it was down on Sunday.
        eight_days_before = local(SAIGON, 2026, 11, 17, 2, 59, 59)
        kb.conn.execute(
            "INSERT INTO pgarch.audit_runs (run_id, trigger, status, started_at, finished_at)"
            " VALUES (%s, 'schedule', 'ok', %s, %s)",
            (str(uuid.uuid4()), eight_days_before, eight_days_before),
        )
    finally:
        kb.close()
    cfg = load_config(
        None,
        env={"PG_ARCHITECT_AUDITOR_API_LISTEN": f"127.0.0.1:{free_port()}"},
        overrides={"database.dsn": pg_dsn},
    )
    # Wednesday 02:59:59 in Saigon, then the clock passes the daily snapshot's 03:00.
    times = [local(SAIGON, 2026, 11, 25, 2, 59, 59)]

    def clock() -> datetime:
        return times[0]

    stop = threading.Event()
    caplog.set_level("INFO", logger="pg_architect")
    thread = threading.Thread(target=daemon_mod.run, args=(cfg, pg_dsn, pg_dsn, stop, clock))
    thread.start()
    try:
        # Wait for events, not a deadline: under load a snapshot plus an audit can take minutes.
        wait_for(
            lambda: "next weekly_report at" in caplog.text or not thread.is_alive(),  # anchored at 02:59:59
            600,
            "the daemon to schedule its jobs",
            lambda: caplog.text,
        )
        assert thread.is_alive(), caplog.text
        times[0] = local(SAIGON, 2026, 11, 25, 3, 0, 1)

        def done() -> bool:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                snapshots = conn.execute("SELECT count(*) FROM pgarch.pgss_snapshots WHERE kind = 'daily'").fetchone()
                runs = conn.execute(
                    "SELECT count(*) FROM pgarch.audit_runs WHERE trigger = 'schedule' AND status <> 'running'"
                    " AND started_at > now() - interval '1 hour'"
                ).fetchone()
            return snapshots == (1,) and runs == (1,)

        wait_for(done, 900, "the daily snapshot and the catch-up audit", lambda: caplog.text)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert "catch-up" in caplog.text

    # The weekly report job logs the latest report; a failing job is logged, not raised.
    runner = daemon_mod.AuditRunner(cfg, pg_dsn, pg_dsn)
    jobs = daemon_mod.Daemon(cfg, pg_dsn, pg_dsn, runner)
    jobs.weekly_report()
    assert "weekly report ready for run" in caplog.text
    broken = daemon_mod.Daemon(cfg, "postgresql://nobody:hunter2@127.0.0.1:1/none", pg_dsn, runner)
    broken.launch(DAILY_SNAPSHOT)
    for t in broken.running():
        t.join(15)
    assert "daily_snapshot failed" in caplog.text
    assert "hunter2" not in caplog.text
