"""The recommendation lifecycle on real PostgreSQL: an index applied by hand is found by its definition and its
outcome measured from the snapshots; people reject through the CLI and the API and the statement is not proposed
again; pull requests closed or merged (a local GitHub stand-in, a real git repository) move recommendations; the
second and third weekly audits on an unchanged database are not stuck; the exporter serves the outcomes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_architect import demo
from pg_architect.auditor import lifecycle, pullrequests, window
from pg_architect.auditor.api import AdminServer
from pg_architect.auditor.audit import AuditOptions, Auditor, run_audit
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.queries import QUERIES
from pg_architect.auditor.redaction import safe_text
from pg_architect.auditor.report import render
from pg_architect.auditor.snapshot import take_snapshot
from pg_architect.core import db
from pg_architect.core.config import Config, load_config
from tests.conftest import ServerInfo, make_database
from tests.fakes.github_api import GitHubApi

SCALE = {"customers": 40_000, "orders": 200_000, "jobs": 60_000}
TEMPLATE = "lifecycle_shop"
CUSTOMER = "orders WHERE customer_id"
EMAIL = "lower(email)"
TOKEN = "lifecycle-test-token"
REPO = "acme/shop"


@pytest.fixture(scope="module")
def shop_template(embedded_pg: ServerInfo) -> str:
    """The shop's schema and data, loaded once; each test audits its own copy."""
    demo.load(
        embedded_pg.dsn(), embedded_pg.dsn, name=TEMPLATE, progress=lambda m: None, reset_statements=False, **SCALE
    )
    return TEMPLATE


def shop_copy(server: ServerInfo, template: str, name: str) -> str:
    """A fresh copy of the shop with the slow workload run on it once."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    dsn = server.dsn(name)
    workload(dsn)
    return dsn


def workload(dsn: str) -> None:
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))


def config(**overrides: Any) -> Config:
    # The tests own these databases and the embedded server has no hypopg: real builds, opted in.
    values = {"auditor.lifecycle.verify_min_calls": 4, "measurement.allow_blocking_builds": True, **overrides}
    return load_config(env={}, overrides=values)


def audit(cfg: Config, dsn: str, kb: str) -> dict[str, Any]:
    options = AuditOptions(min_calls=4, min_mean_ms=1.0, limit=20)
    return run_audit(cfg, dsn, kb, options).as_json()


def find(report: dict[str, Any], fragment: str) -> dict[str, Any]:
    for q in report["slow_queries"]:
        if fragment in q["query"]:
            return q
    raise AssertionError(f"no slow statement with {fragment!r}: {[q['query'][:60] for q in report['slow_queries']]}")


def rec_id(kb: str, fragment: str) -> int:
    with psycopg.connect(kb) as conn:
        rows = conn.execute(
            "SELECT recommendation_id FROM pgarch.recommendations WHERE worth_applying AND query LIKE %s "
            "ORDER BY recommendation_id",
            (f"%{fragment}%",),
        ).fetchall()
    assert len(rows) == 1, (fragment, rows)
    return int(rows[0][0])


def state(kb: str, recommendation_id: int) -> dict[str, Any]:
    with psycopg.connect(kb) as conn:
        conn.row_factory = psycopg.rows.dict_row
        row = conn.execute(
            "SELECT r.status, r.applied_index, r.decision, r.decided_by, r.decision_reason, o.* "
            "FROM pgarch.recommendations r LEFT JOIN pgarch.recommendation_outcomes o USING (recommendation_id) "
            "WHERE r.recommendation_id = %s",
            (recommendation_id,),
        ).fetchone()
        events = (
            conn.cursor(row_factory=psycopg.rows.tuple_row)
            .execute(
                "SELECT from_status, to_status, source, actor, reason FROM pgarch.recommendation_events "
                "WHERE recommendation_id = %s ORDER BY at, event_id",
                (recommendation_id,),
            )
            .fetchall()
        )
    assert row is not None
    return {**row, "events": events}


def by_hand(dsn: str, recommended_sql: str, name: str) -> str:
    """The recommended index, created by a person under a name of their own (CONCURRENTLY, as in production)."""
    ddl = re.sub(r'INDEX CONCURRENTLY IF NOT EXISTS ("[^"]+"|\S+)', f"INDEX CONCURRENTLY {name}", recommended_sql)
    assert name in ddl, ddl
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl.rstrip(";"))
    return ddl


# -- applied by hand, found by definition, outcome measured -------------------------------------------------------


def test_index_applied_by_hand_under_another_name_is_found_and_its_outcome_measured_improved(
    shop_template: str, embedded_pg: ServerInfo
) -> None:
    from pg_architect.exporter.target import Target
    from tests.exporter_helpers import Scrape
    from tests.exporter_helpers import config as exporter_config

    dsn = shop_copy(embedded_pg, shop_template, "lc_applied")
    kb = make_database(embedded_pg, "lc_applied_kb", ("vector",))
    cfg = config()
    first = audit(cfg, dsn, kb)
    rec = find(first, CUSTOMER)["recommendation"]
    assert rec["status"] == "pending" and rec["outcome"] is None
    rid = rec_id(kb, CUSTOMER)

    by_hand(dsn, rec["sql"], "orders_by_customer_handmade")
    workload(dsn)
    summary = take_snapshot(cfg, dsn, kb)
    assert f"#{rid} applied: index public.orders_by_customer_handmade found" in summary, summary

    s = state(kb, rid)
    assert s["status"] == "applied" and s["applied_index"] == "public.orders_by_customer_handmade", s
    assert ("pending", "applied", "catalog", None, "index public.orders_by_customer_handmade exists and is valid") in s[
        "events"
    ], s["events"]
    assert s["result"] == "improved", s
    assert s["before_mean_ms"] > s["after_mean_ms"] > 0 and s["measured_gain_percent"] > 50, s
    assert s["before_calls"] >= 4 and s["after_calls"] >= 4 and s["time_saved_ms"] > 0, s
    assert s["predicted_gain_percent"] == pytest.approx(rec["measurement"]["gain_percent"], abs=0.01)
    # The other recommendations are still waiting: nothing else was mistaken for them.
    assert state(kb, rec_id(kb, EMAIL))["status"] == "pending"

    # The stored report says what became of it; the weekly report carries the month's figures.
    k = KnowledgeBase.open(kb, cfg)
    try:
        doc = k.run_report(first["run_id"])
    finally:
        k.close()
    assert doc is not None
    current = find(doc, CUSTOMER)["recommendation"]
    assert current["status"] == "applied" and current["outcome"]["result"] == "improved", current
    assert current["outcome"]["measured_gain_percent"] == pytest.approx(s["measured_gain_percent"], abs=0.01)
    lc = doc["lifecycle"]
    assert lc["applied_this_month"] == 1 and lc["verified"] == 1 and lc["accuracy_ratio"] == 1.0, lc
    markdown = render(doc, "markdown")
    assert "applied this month: 1" in markdown and "accuracy: 100% of 1 verified" in markdown, markdown
    assert f"average gain: {s['measured_gain_percent']:.0f} %" in markdown, markdown

    # The exporter serves the outcome.
    target = Target("lc", dsn, exporter_config(), kb_dsn=kb)
    try:
        scrape = Scrape(target.scrape())
    finally:
        target.close()
    assert scrape.value("pgarch_optimizations_verified_total", outcome="improved") == 1
    assert scrape.value("pgarch_optimizations_verified_total", outcome="regressed") == 0
    assert scrape.value("pgarch_agent_accuracy_ratio") == 1.0
    assert scrape.value("pgarch_time_saved_seconds_total") == pytest.approx(s["time_saved_ms"] / 1000, rel=1e-6)
    assert scrape.value("pgarch_recommendations", status="applied") == 1
    assert scrape.value("pgarch_recommendations", status="pending") == first["kpis"]["recommended"] - 1
    assert scrape.value("pgarch_optimizations_applied_total") == 1
    assert (scrape.value("pgarch_knowledge_base_size_bytes") or 0) > 0

    # Dropped later: detected, the outcome keeps when.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX CONCURRENTLY orders_by_customer_handmade")
    summary = take_snapshot(cfg, dsn, kb)
    assert f"#{rid}: applied index public.orders_by_customer_handmade was dropped" in summary, summary
    s = state(kb, rid)
    assert s["status"] == "obsolete" and s["dropped_at"] is not None and s["result"] == "improved", s


# -- a person's decision: CLI and admin API ---------------------------------------------------------------------


class _NoAudits:
    def start(self, options: AuditOptions) -> str | None:
        raise AssertionError("this test starts no audit")


@pytest.fixture
def admin_api() -> Iterator[Any]:
    """Starts the admin API on a knowledge base (a free port, the test token); stopped after the test."""
    servers: list[AdminServer] = []

    def start(kb: str) -> AdminServer:
        cfg = dataclasses.replace(config(), secrets={"api_token": TOKEN})
        server = AdminServer(("127.0.0.1", 0), cfg, kb, _NoAudits())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(port: int, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def cli(kb: str, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", "recommendations", *args, "--dsn", dsn, "--config", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PG_ARCHITECT_DATABASE_KB_DSN": kb},
    )


def test_rejected_through_the_cli_and_the_api_is_recorded_and_not_proposed_again(
    shop_template: str, embedded_pg: ServerInfo, admin_api: Any
) -> None:
    start = admin_api
    dsn = shop_copy(embedded_pg, shop_template, "lc_reject")
    kb = make_database(embedded_pg, "lc_reject_kb", ("vector",))
    cfg = config()
    first = audit(cfg, dsn, kb)
    customer, email = rec_id(kb, CUSTOMER), rec_id(kb, EMAIL)

    # The CLI: who is --by, why is --reason.
    proc = cli(kb, dsn, "reject", str(customer), "--reason", "we partition orders next month", "--by", "alice")
    assert proc.returncode == 0, proc.stderr
    assert f"#{customer} rejected by alice: status rejected" in proc.stdout
    s = state(kb, customer)
    assert s["status"] == "rejected" and s["decided_by"] == "alice", s
    assert s["events"][-1] == ("pending", "rejected", "person", "alice", "we partition orders next month")
    again = cli(kb, dsn, "reject", str(customer))
    assert again.returncode == 1 and "is rejected: only pending, pr_open or merged" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert cli(kb, dsn, "reject").returncode == 2
    assert cli(kb, dsn, "show", "999999").returncode == 1
    shown = cli(kb, dsn, "show", str(customer))
    assert shown.returncode == 0 and "pending -> rejected (person by alice): we partition orders" in shown.stdout

    # The API: authenticated, validated, recorded with who/when/why.
    server = start(kb)
    port = server.server_port
    path = f"/admin/database/optimizations/{email}/decision"
    assert call(port, "POST", path, {"decision": "rejected"}, token=None)[0] == 401
    status, doc = call(port, "POST", path, {"decision": "maybe", "colour": "red"})
    assert status == 400 and "decision: must be one of accepted, rejected" in doc["error"]
    assert "unknown field 'colour'" in doc["error"], doc
    assert call(port, "POST", "/admin/database/optimizations/999999/decision", {"decision": "rejected"})[0] == 404
    assert call(port, "POST", "/admin/database/optimizations/x1/decision", {"decision": "rejected"})[0] == 400
    assert call(port, "GET", path)[0] == 405
    status, doc = call(port, "POST", path, {"decision": "rejected", "reason": "the email lookup moves", "by": "bob"})
    assert status == 200 and doc["status"] == "rejected" and doc["decided_by"] == "api:bob", doc
    assert doc["events"][-1]["source"] == "person" and doc["events"][-1]["reason"] == "the email lookup moves"
    assert call(port, "POST", path, {"decision": "rejected"})[0] == 409
    status, page = call(port, "GET", "/admin/database/optimizations?status=rejected")
    assert status == 200 and {i["recommendation_id"] for i in page["items"]} == {customer, email}, page
    assert call(port, "GET", "/admin/database/optimizations?status=lost")[0] == 400
    status, pending = call(port, "GET", "/admin/database/optimizations?status=pending")
    assert len(pending["items"]) == first["kpis"]["recommended"] - 2

    # The next audit does not propose them again, and says why; they count as handled.
    second = audit(cfg, dsn, kb)
    for fragment, rid in ((CUSTOMER, customer), (EMAIL, email)):
        q = find(second, fragment)
        assert q["status"] == "skipped" and q["handled_by"] == rid, q
        assert f"#{rid}" in q["skip_reason"] and "was rejected on" in q["skip_reason"], q
        assert "the evidence has not changed materially" in q["skip_reason"], q
    assert second["kpis"]["recommended"] == 0 and second["stuck"] is False
    with psycopg.connect(kb) as conn:
        count = conn.execute("SELECT count(*) FROM pgarch.recommendations WHERE worth_applying").fetchone()
    assert count == (first["kpis"]["recommended"],)

    # Accepting a rejected one re-opens it, recorded as well.
    proc = cli(kb, dsn, "accept", str(email), "--reason", "changed our mind", "--by", "carol")
    assert proc.returncode == 0, proc.stderr
    s = state(kb, email)
    assert s["status"] == "pending" and s["decision"] == "accepted", s
    assert s["events"][-1] == ("rejected", "pending", "person", "carol", "accepted after rejection: changed our mind")
    listed = cli(kb, dsn, "list", "--status", "rejected")
    assert listed.returncode == 0 and f"#{customer}" in listed.stdout and f"#{email} " not in listed.stdout


def test_rejected_recommendation_is_proposed_again_when_the_statement_got_much_slower(
    shop_template: str, embedded_pg: ServerInfo
) -> None:
    dsn = shop_copy(embedded_pg, shop_template, "lc_reconsider")
    kb = make_database(embedded_pg, "lc_reconsider_kb", ("vector",))
    cfg = config()
    audit(cfg, dsn, kb)
    customer = rec_id(kb, CUSTOMER)
    k = KnowledgeBase.open(kb, cfg)
    try:
        lifecycle.decide(k, customer, "rejected", "dave", "not now")
    finally:
        k.close()
    # The evidence the rejection saw: pretend the statement was ten times faster then.
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgarch.slow_queries q SET mean_ms = q.mean_ms / 10 FROM pgarch.recommendations r "
            "WHERE r.slow_query_id = q.slow_query_id AND r.recommendation_id = %s",
            (customer,),
        )
    second = audit(cfg, dsn, kb)
    q = find(second, CUSTOMER)
    assert q["status"] == "recommended", q
    assert f"Proposed again: #{customer} was rejected on" in q["recommendation"]["reasoning"]
    assert "since then the mean time rose from" in q["recommendation"]["reasoning"]


# -- pull requests: GitHub and the local repository ------------------------------------------------------------


def test_pull_request_closed_unmerged_rejects_and_merged_then_deployed_applies(
    shop_template: str, embedded_pg: ServerInfo
) -> None:
    dsn = shop_copy(embedded_pg, shop_template, "lc_prs")
    kb = make_database(embedded_pg, "lc_prs_kb", ("vector",))
    audit(config(), dsn, kb)
    customer, email = rec_id(kb, CUSTOMER), rec_id(kb, EMAIL)
    with GitHubApi(TOKEN) as gh:
        gh.add_repo(REPO)
        # What issue 15's delivery stores: the pull request's URL on the recommendation.
        urls = {customer: gh.open_pull(REPO, 11), email: gh.open_pull(REPO, 12)}
        with psycopg.connect(kb, autocommit=True) as conn:
            for rid, url in urls.items():
                conn.execute("UPDATE pgarch.recommendations SET pr_url = %s WHERE recommendation_id = %s", (url, rid))
        cfg = dataclasses.replace(
            config(**{"github.repo": REPO, "github.api_url": gh.url}), secrets={"github_token": TOKEN}
        )
        summary = take_snapshot(cfg, dsn, kb)
        assert state(kb, customer)["status"] == "pr_open" and state(kb, email)["status"] == "pr_open", summary

        gh.close_pull(REPO, 12)
        gh.merge_pull(REPO, 11, by="erin")
        summary = take_snapshot(cfg, dsn, kb)
        s = state(kb, email)
        assert s["status"] == "rejected", (summary, s)
        assert s["events"][-1] == (
            "pr_open",
            "rejected",
            "github",
            None,
            f"pull request {urls[email]} was closed without merging",
        )
        s = state(kb, customer)
        assert s["status"] == "merged" and s["events"][-1][2:4] == ("github", "erin"), s

        # Merged is not applied: only the catalog says so, once the migration ran.
        rec_sql = _sql_of(kb, customer)
        take_snapshot(cfg, dsn, kb)
        assert state(kb, customer)["status"] == "merged"
        by_hand(dsn, rec_sql, "orders_customer_from_migration")
        take_snapshot(cfg, dsn, kb)
        s = state(kb, customer)
        assert s["status"] == "applied" and s["events"][-1][:3] == ("merged", "applied", "catalog"), s
        # Only the pull requests were read (the stand-in answers 401 to a request without the token).
        assert {path for _method, path in gh.requests} == {f"/repos/{REPO}/pulls/11", f"/repos/{REPO}/pulls/12"}

    # GitHub unreachable: logged, nothing changes, the snapshot still succeeds.
    broken = dataclasses.replace(cfg, github=dataclasses.replace(cfg.github, api_url="http://127.0.0.1:9"))
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgarch.recommendations SET pr_url = %s WHERE recommendation_id = %s",
            (f"https://github.com/{REPO}/pull/13", rec_id(kb, "finished_at IS NULL")),
        )
    assert "snapshot" in take_snapshot(broken, dsn, kb)
    assert state(kb, rec_id(kb, "finished_at IS NULL"))["status"] == "pending"


def _sql_of(kb: str, recommendation_id: int) -> str:
    with psycopg.connect(kb) as conn:
        row = conn.execute(
            "SELECT sql FROM pgarch.recommendations WHERE recommendation_id = %s", (recommendation_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_branch_merged_in_the_local_repository_marks_the_recommendation_merged(
    tmp_path: Path, embedded_pg: ServerInfo
) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("app\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "init")
    git(repo, "checkout", "-q", "-b", "pg-architect/orders-customer-idx")
    (repo / "migration.sql").write_text("CREATE INDEX CONCURRENTLY ...;\n")
    git(repo, "add", "migration.sql")
    git(repo, "commit", "-q", "-m", "index")
    git(repo, "checkout", "-q", "main")
    branch = "pg-architect/orders-customer-idx"
    assert pullrequests.git_merged(str(repo), "main", branch) is False
    with pytest.raises(pullrequests.PullRequestError, match="git merge-base"):
        pullrequests.git_merged(str(repo), "main", "no-such-branch")

    kb_dsn = make_database(embedded_pg, "lc_git_kb", ("vector",))
    kb = KnowledgeBase.open(kb_dsn)
    try:
        rid = _insert_recommendation(kb_dsn)
        ref = pullrequests.PullRequestRef(rid, REPO, 5, f"https://github.com/{REPO}/pull/5", branch=branch)
        now = kb.clock()
        assert pullrequests.sync(kb, [ref], now, local_repo=str(repo)) == []
        git(repo, "merge", "-q", "--no-ff", "-m", "merge", branch)
        assert pullrequests.sync(kb, [ref], now, local_repo=str(repo)) == [f"#{rid} merged: {ref.url}"]
    finally:
        kb.close()
    s = state(kb_dsn, rid)
    assert s["status"] == "merged" and s["events"][-1] == (
        "pending",
        "merged",
        "git",
        None,
        f"pull request {ref.url} was merged",
    )


def _insert_recommendation(kb: str) -> int:
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgarch.audit_runs (run_id, status) VALUES ('00000000-0000-0000-0000-000000000001', 'ok')"
        )
        row = conn.execute(
            "INSERT INTO pgarch.recommendations (run_id, fingerprint, query, type, sql, reasoning, confidence, source,"
            " worth_applying, action, embedding) VALUES ('00000000-0000-0000-0000-000000000001', 'fp', 'SELECT 1',"
            " 'index', 'CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON t (a);', 'r', 0.9, 'advisor', true,"
            " 'pr_merge', array_fill(0.1::real, ARRAY[256])::vector) RETURNING recommendation_id"
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- stuck means stuck ----------------------------------------------------------------------------------------


def test_second_and_third_weekly_audits_on_an_unchanged_database_are_not_stuck_and_report_the_pending(
    shop_template: str, embedded_pg: ServerInfo
) -> None:
    from pg_architect.exporter.target import Target
    from tests.exporter_helpers import Scrape
    from tests.exporter_helpers import config as exporter_config

    dsn = shop_copy(embedded_pg, shop_template, "lc_stuck")
    kb = make_database(embedded_pg, "lc_stuck_kb", ("vector",))
    cfg = config()
    first = audit(cfg, dsn, kb)
    recommended = first["kpis"]["recommended"]
    assert recommended >= 4 and first["stuck"] is False
    for n in (2, 3):
        report = audit(cfg, dsn, kb)
        assert report["stuck"] is False, n
        assert report["kpis"]["recommended"] == 0, n
        waiting = [q for q in report["slow_queries"] if q["handled_by"] is not None]
        assert len(waiting) == recommended and all("is pending review" in q["skip_reason"] for q in waiting)
        lc = report["lifecycle"]
        assert lc["pending_review"] == recommended and lc["oldest_pending_days"] == 0 and lc["reminders"] == [], lc
        assert f"{recommended} pending review, oldest 0 days" in render(report, "text")
    target = Target("lc", dsn, exporter_config(), kb_dsn=kb)
    try:
        scrape = Scrape(target.scrape())
    finally:
        target.close()
    assert scrape.value("pgarch_audit_stuck") == 0
    assert scrape.value("pgarch_recommendations", status="pending") == recommended
    with psycopg.connect(kb) as conn:
        assert conn.execute("SELECT count(*) FILTER (WHERE stuck) FROM pgarch.audit_runs").fetchone() == (0,)

    # A recommendation pending longer than the configured age is a reminder in the weekly report.
    email = rec_id(kb, EMAIL)
    with psycopg.connect(kb, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgarch.recommendations SET created_at = now() - interval '20 days' WHERE recommendation_id = %s",
            (email,),
        )
    k = KnowledgeBase.open(kb, config(**{"auditor.lifecycle.pending_reminder_days": 14}))
    try:
        doc = k.latest_report()
    finally:
        k.close()
    assert doc is not None
    lc = doc["lifecycle"]
    assert [r["recommendation_id"] for r in lc["reminders"]] == [email] and lc["oldest_pending_days"] == 20.0
    text = render(doc, "markdown")
    assert f"{recommended} pending review, oldest 20 days" in text
    assert f"reminder: #{email} has waited 20 days (pending, over 14)" in text, text


def test_stuck_only_when_no_slow_statement_is_handled() -> None:
    from pg_architect.auditor.models import AuditReport, SlowQuery

    def slow(status: str, handled_by: int | None = None) -> SlowQuery:
        return SlowQuery("1", "SELECT 1", 10, 600.0, 6000.0, status, handled_by=handled_by)  # type: ignore[arg-type]

    now = datetime.now(UTC)

    def report(*qs: SlowQuery) -> AuditReport:
        return AuditReport("r", now, now, "ok", None, slow_queries=qs)

    assert report().stuck is False
    assert report(slow("no_recommendation"), slow("error")).stuck is True
    assert report(slow("no_recommendation"), slow("skipped", handled_by=7)).stuck is False
    assert report(slow("no_recommendation"), slow("recommended")).stuck is False
    assert report(slow("skipped")).stuck is True  # skipped for a reason that handles nothing (a utility statement)


# -- regressions week over week ---------------------------------------------------------------------------------


def test_week_over_week_regression_is_reported_below_the_slow_threshold_with_the_plan_change(
    shop_template: str, embedded_pg: ServerInfo
) -> None:
    dsn = shop_copy(embedded_pg, shop_template, "lc_regress")
    kb_dsn = make_database(embedded_pg, "lc_regress_kb", ("vector",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE INDEX orders_customer_fast ON orders (customer_id, created_at DESC)")
    cfg = config()
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    kb = KnowledgeBase.open(kb_dsn, cfg)
    try:
        ident = window.identity(conn)
        target = kb.register_target(ident.system_identifier, ident.datname, ident.server_version_num)
        t0 = datetime.now(UTC)
        window.take(conn, kb, target, ident, kind="daily", now=t0)
        workload(dsn)  # week 1: with the index
        window.take(conn, kb, target, ident, kind="daily", now=t0 + timedelta(days=7))
        fp = safe_text(
            "SELECT id, status, total, created_at FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2"
        ).fingerprint
        kb.store_plan(
            target, fp, t0 + timedelta(days=7), 0.1, "Limit -> Index Scan using orders_customer_fast on orders"
        )
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DROP INDEX orders_customer_fast")
        workload(dsn)  # week 2: without it
        win = window.take(conn, kb, target, ident, kind="audit", now=t0 + timedelta(days=14))
        options = AuditOptions(min_calls=4, min_mean_ms=1e9, limit=20)  # nothing is "slow"
        found = Auditor(cfg, conn, kb, options).regressions(win, target, ident)
    finally:
        kb.close()
        conn.close()
    regressed = [r for r in found if CUSTOMER in r.query]
    assert len(regressed) == 1, found
    r = regressed[0]
    assert r.ratio >= 1.5 and r.mean_ms - r.previous_mean_ms >= 5.0, r
    assert r.plan_change is not None and "Index Scan using orders_customer_fast" in r.plan_change, r
    assert "=>" in r.plan_change and "orders_customer_fast" not in r.plan_change.split("=>")[1], r
    # Statements that did not change are not reported.
    assert not [x for x in found if "WHERE id = $1" in x.query], found


# -- retention ----------------------------------------------------------------------------------------------------


def test_retention_purges_old_snapshots_and_reports_but_keeps_recommendations_and_run_kpis(
    embedded_pg: ServerInfo,
) -> None:
    kb_dsn = make_database(embedded_pg, "lc_retention_kb", ("vector",))
    kb = KnowledgeBase.open(kb_dsn)
    try:
        rid = _insert_recommendation(kb_dsn)
        old = datetime.now(UTC) - timedelta(days=500)
        with psycopg.connect(kb_dsn, autocommit=True) as conn:
            conn.execute("UPDATE pgarch.audit_runs SET started_at = %s, report = '{}', slow_queries = 3", (old,))
            conn.execute("INSERT INTO pgarch.targets (system_identifier, datname, server_version) VALUES ('1','d',18)")
            for taken in (old, datetime.now(UTC)):
                conn.execute(
                    "INSERT INTO pgarch.pgss_snapshots (target_id, kind, taken_at) VALUES (1, 'daily', %s)", (taken,)
                )
                conn.execute(
                    "INSERT INTO pgarch.health_snapshots (target_id, taken_at, metrics) VALUES (1, %s, '{}')", (taken,)
                )
            for taken in (old, old + timedelta(days=1)):
                conn.execute(
                    "INSERT INTO pgarch.statement_plans (target_id, fingerprint, taken_at, plan) "
                    "VALUES (1, 'fp', %s, 'p')",
                    (taken,),
                )
        counts = kb.purge(datetime.now(UTC) - timedelta(days=400))
    finally:
        kb.close()
    assert counts == {"snapshots": 1, "health": 1, "plans": 1, "slow_queries": 0, "reports": 1}, counts
    with psycopg.connect(kb_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgarch.pgss_snapshots").fetchone() == (1,)
        assert conn.execute("SELECT report IS NULL, slow_queries FROM pgarch.audit_runs").fetchone() == (True, 3)
        assert conn.execute("SELECT count(*) FROM pgarch.statement_plans").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM pgarch.recommendations WHERE recommendation_id = %s", (rid,)
        ).fetchone() == (1,)


# -- the similarity look-up ---------------------------------------------------------------------------------------


def test_similarity_look_up_with_filters_returns_the_exact_nearest_of_the_target(embedded_pg: ServerInfo) -> None:
    import random

    kb_dsn = make_database(embedded_pg, "lc_similar_kb", ("vector",))
    kb = KnowledgeBase.open(kb_dsn)
    kb.close()
    rng = random.Random(7)
    with psycopg.connect(kb_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgarch.audit_runs (run_id, status) VALUES ('00000000-0000-0000-0000-000000000002', 'ok')"
        )
        for t in (1, 2):
            conn.execute(
                "INSERT INTO pgarch.targets (system_identifier, datname, server_version) VALUES (%s, 'd', 18)",
                (str(t),),
            )
        with conn.cursor().copy(
            "COPY pgarch.recommendations (run_id, target_id, fingerprint, query, type, sql, reasoning, confidence,"
            " source, action, embedding, embedding_model) FROM STDIN"
        ) as copy:
            for i in range(3000):
                vec = "[" + ",".join(f"{rng.gauss(0, 1):.5f}" for _ in range(256)) + "]"
                copy.write_row(
                    (
                        "00000000-0000-0000-0000-000000000002",
                        1 + (i % 10 == 0),
                        f"fp{i}",
                        "SELECT 1",
                        "index",
                        "CREATE INDEX x ON t (a)",
                        "r",
                        0.5,
                        "advisor",
                        "log",
                        vec,
                        "structure-v1" if i % 3 else "other-model",
                    )
                )
        conn.execute("ANALYZE pgarch.recommendations")
        probe = [rng.gauss(0, 1) for _ in range(256)]
        text = "[" + ",".join(f"{v:.5f}" for v in probe) + "]"
        # Exact: the distance computed for every row of the target and model (OFFSET 0 keeps the index out).
        exact = [
            r[0]
            for r in conn.execute(
                "SELECT recommendation_id FROM (SELECT recommendation_id, embedding <=> %s::vector AS d "
                "FROM pgarch.recommendations WHERE target_id = 2 AND embedding_model = 'structure-v1' "
                "OFFSET 0) s ORDER BY d LIMIT 5",
                (text,),
            ).fetchall()
        ]
    kb = KnowledgeBase.open(kb_dsn)
    try:
        kb.ensure_similarity_index(2, "structure-v1")
        found = kb.similar(probe, "structure-v1", target_id=2, limit=5)
        with db.transaction(kb.conn):  # the plan kb.similar gets: the target's partial HNSW index
            db.execute(kb.conn, "SET LOCAL plan_cache_mode = force_custom_plan")
            plan = "\n".join(
                r[0]
                for r in kb.conn.execute(
                    "EXPLAIN " + str(db.query(kb.conn, QUERIES, "kb_similar")),
                    {"embedding": text, "model": "structure-v1", "target_id": 2, "limit": 5},
                ).fetchall()
            )
    finally:
        kb.close()
    assert re.search(r"Index Scan using recommendations_embedding_t2_\w+_idx", plan), plan
    assert len(found) == 5 and [f.similarity for f in found] == sorted((f.similarity for f in found), reverse=True)
    # HNSW is approximate: most of the exact five, all of the right target and model.
    assert len({f.recommendation_id for f in found} & set(exact)) >= 4, (found, exact)
    rows = [int(f.fingerprint.removeprefix("fp")) for f in found]
    assert all(i % 10 == 0 and i % 3 for i in rows), rows  # target 2, model structure-v1 only


# -- learning from outcomes ----------------------------------------------------------------------------------------


def _outcome(keys: int = 1, predicate: str | None = None, total_bytes: int = 50 << 20) -> Any:
    from pg_architect.auditor.advisor import Candidate, Key
    from pg_architect.auditor.catalog import TableInfo
    from pg_architect.auditor.measure import Outcome
    from pg_architect.auditor.models import Measurement

    table = TableInfo(1, "public", "orders", "r", total_bytes, total_bytes, 1e6, 1000000, 0, 10, 0, ["a", "b"], [])
    cand = Candidate(table, tuple(Key(column=c) for c in ("a", "b")[:keys]), predicate, "filter")
    m = Measurement("rollback_build", 100.0, 10.0, 10.0, 1.0, 90.0, True, True, "Seq Scan", "Index Scan", 2)
    return Outcome(cand, m, used_index=True, consistent=True)


def test_confidence_moves_with_the_measured_accuracy_of_past_recommendations_of_the_kind_and_family() -> None:
    from pg_architect.auditor import confidence
    from pg_architect.auditor.kb import Accuracy

    outcome = _outcome()
    assert confidence.kind_of(outcome.candidate, "rollback_build") == "btree/1key rollback_build 10MB-1GB"
    assert confidence.kind_of(_outcome(2, "b IS NULL", 20 << 30).candidate, "hypothetical") == (
        "btree/2keys/partial hypothetical >10GB"
    )
    plain = confidence.score(outcome)
    good = confidence.score(outcome, history=Accuracy(5, 5, 4, 4))
    bad = confidence.score(outcome, history=Accuracy(0, 5, 0, 2))
    fresh = confidence.score(outcome, history=Accuracy(0, 0, 0, 0))
    assert bad.score < plain.score == fresh.score < good.score, (bad, plain, good)
    assert "past recommendations of this kind: 5 of 5 improved once applied: +0.05" in good.terms
    assert "past recommendations for this statement family: 4 of 4 improved once applied: +0.04" in good.terms
    assert "past recommendations of this kind: 0 of 5 improved once applied: -0.05" in bad.terms


def test_outcome_classes_follow_the_predicted_gain_and_the_noise_band() -> None:
    assert lifecycle.classify(85.0, 90.0) == "improved"
    assert lifecycle.classify(45.0, 90.0) == "improved" and lifecycle.classify(44.0, 90.0) == "improved_less"
    assert lifecycle.classify(9.0, 90.0) == "no_change" and lifecycle.classify(-9.0, 90.0) == "no_change"
    assert lifecycle.classify(-10.0, 90.0) == "regressed"
    assert lifecycle.classify(30.0, None) == "improved"


def test_the_cli_offers_the_lifecycle_statuses() -> None:
    from pg_architect import cli

    assert cli.STATUSES == lifecycle.STATUSES


def test_pull_request_urls_are_parsed_from_html_and_api_forms() -> None:
    assert pullrequests.parse_pr_url("https://github.com/acme/shop/pull/12") == ("acme/shop", 12)
    assert pullrequests.parse_pr_url("https://api.github.com/repos/acme/shop.git-x/pulls/7") == ("acme/shop.git-x", 7)
    assert pullrequests.parse_pr_url("https://github.com/acme/shop/pull/12#issuecomment-1") == ("acme/shop", 12)
    assert pullrequests.parse_pr_url("https://github.com/acme/shop/issues/12") is None


# -- outcomes from stored snapshots: a regression with its plan, a statement that disappeared -------------------


def test_regressed_outcome_is_flagged_with_the_plan_and_a_vanished_statement_makes_its_recommendation_obsolete(
    pg_dsn: str,
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (a integer, b text)")
        conn.execute("INSERT INTO t SELECT g % 1000, 'row ' || g FROM generate_series(1, 20000) g")
        conn.execute("CREATE INDEX t_a_idx ON t (a)")
        conn.execute("ANALYZE t")
    cfg = config()
    audited = db.connect(pg_dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    kb = KnowledgeBase.open(pg_dsn, cfg)
    try:
        target = kb.register_target("lifecycle-test", "db", 180000)
        t0 = kb.clock() - timedelta(days=2)
        regressed = _recommendation(pg_dsn, target, "fp-regress", "SELECT b FROM t WHERE a = $1", t0)
        vanished = _recommendation(pg_dsn, target, "fp-gone", "SELECT b FROM t WHERE b = $1", t0)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgarch.recommendations SET absent_checked_at = %s WHERE recommendation_id = %s",
                (t0 + timedelta(hours=1), regressed),
            )
            # calls and total ms of the statement, cumulative, at each snapshot: 10 ms a call before the index,
            # 30 ms after it
            for hours, calls, total in ((-24, 100, 1000.0), (0, 200, 2000.0), (3, 300, 5000.0), (4, 400, 8000.0)):
                snap = conn.execute(
                    "INSERT INTO pgarch.pgss_snapshots (target_id, kind, taken_at) VALUES (%s, 'daily', %s) "
                    "RETURNING snapshot_id",
                    (target, t0 + timedelta(hours=hours)),
                ).fetchone()
                assert snap is not None
                conn.execute(
                    "INSERT INTO pgarch.pgss_snapshot_rows (snapshot_id, userid, dbid, queryid, toplevel, fingerprint,"
                    " calls, total_exec_ms, stddev_exec_ms, min_exec_ms, max_exec_ms, rows, shared_blks_hit,"
                    " shared_blks_read) VALUES (%s, 10, 1, 42, true, 'fp-regress', %s, %s, 0, 0, 0, %s, 0, 0)",
                    (snap[0], calls, total, calls * 20),
                )
        kb.transition(regressed, "applied", source="catalog", from_statuses=lifecycle.OPEN, at=t0 + timedelta(hours=2))
        kb.mark_applied_index(regressed, "public.t_a_new_idx")
        changes = lifecycle.verify_outcomes(audited, kb, target, 1, kb.clock(), 4)
        assert changes == [f"#{regressed} regressed: 10.00 ms -> 30.00 ms (-200 %)"], changes
        gone = lifecycle.mark_obsolete(kb, kb.tracked(target), {"fp-regress"}, kb.clock())
        assert gone == [f"#{vanished} obsolete: its statement disappeared"], gone
    finally:
        kb.close()
        audited.close()
    s = state(pg_dsn, regressed)
    assert s["result"] == "regressed" and s["time_saved_ms"] == 0 and s["provisional"] is False, s
    assert (s["before_calls"], s["after_calls"]) == (100, 100) and s["after_rows_per_call"] == 20, s
    note = s["plan_note"]
    assert note.startswith("plan now: ") and "t_a_idx" in note, note
    assert "measured with the index: Limit -> Index Scan using t_a_new_idx on t" in note, note
    assert note.endswith("the plan no longer uses the applied index"), note
    assert state(pg_dsn, vanished)["events"][-1][1:3] == ("obsolete", "audit")


def _recommendation(kb: str, target: int, fingerprint: str, query: str, created: datetime) -> int:
    with psycopg.connect(kb, autocommit=True) as conn:
        run = conn.execute(
            "INSERT INTO pgarch.audit_runs (run_id, target_id, status) VALUES (gen_random_uuid(), %s, 'ok') "
            "RETURNING run_id",
            (target,),
        ).fetchone()
        assert run is not None
        row = conn.execute(
            "INSERT INTO pgarch.recommendations (run_id, target_id, fingerprint, query, type, sql, reasoning,"
            " confidence, source, measurement, gain_percent, worth_applying, action, embedding, created_at,"
            " absent_checked_at) VALUES (%s, %s, %s, %s, 'index',"
            " 'CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_new_idx ON public.t (a);', 'r', 0.9, 'advisor',"
            " %s, 80, true, 'pr_merge', array_fill(0.1::real, ARRAY[256])::vector, %s, %s)"
            " RETURNING recommendation_id",
            (
                run[0],
                target,
                fingerprint,
                query,
                json.dumps({"plan_after": "Limit -> Index Scan using t_a_new_idx on t"}),
                created,
                created,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])
