"""A verified rewrite through the whole audit, delivered as what it is: never a migration, a GitHub issue (the
local GitHub stand-in, over the network) that points to the statement's call site, opened once; with a local
repository only, the call site found by ``git grep``. The audited database is unchanged."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_architect.auditor.audit import AuditOptions, run_audit
from pg_architect.auditor.delivery import html, issues, slack, weekly
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import AuditReport, SlowQuery
from pg_architect.core.config import Config, load_config
from tests.conftest import ServerInfo, make_database
from tests.fakes.github_api import GitHubApi
from tests.test_audit import fingerprint_of_database

STATEMENT = "SELECT id, name, email FROM customers WHERE date(created_at) = %s"
APP = '''import db


def signups(day):
    return db.query(
        "SELECT id, name, email FROM customers WHERE date(created_at) = %s", (day,)
    )
'''
OPTIONS = AuditOptions(min_calls=4, min_mean_ms=1.0, limit=10)


@pytest.fixture(scope="module")
def shop(embedded_pg: ServerInfo) -> Iterator[tuple[str, dict[str, Any]]]:
    dsn = make_database(embedded_pg, "rewrite_issues_shop", ("pg_stat_statements",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL,"
            " created_at timestamptz NOT NULL);"
            "INSERT INTO customers SELECT g, 'Customer ' || g, 'user' || g || '@example.com',"
            " timestamptz '2026-01-01' + (g % 400) * interval '1 day' + (g % 997) * interval '1 minute'"
            " FROM generate_series(1, 60000) g;"
            "CREATE INDEX customers_created_at ON customers (created_at);"
            "ANALYZE"
        )
        conn.execute("SELECT pg_stat_statements_reset()")
        for n in range(6):
            conn.execute(STATEMENT, (datetime.date(2026, 1, 1) + datetime.timedelta(days=17 * n),))
    yield dsn, fingerprint_of_database(dsn)


def config(**env: str) -> Config:
    return load_config(None, env=env)


def the_rewrite(report: AuditReport) -> SlowQuery:
    q = next(q for q in report.slow_queries if "date(created_at)" in q.query)
    rec = q.recommendation
    assert q.status == "recommended" and rec is not None and rec.type == "rewrite", (q.status, q.skip_reason, rec)
    assert rec.action in ("pr_merge", "pr_review"), rec
    return q


def test_a_rewrite_becomes_one_issue_pointing_to_its_call_site_and_never_a_migration(
    shop: tuple[str, dict[str, Any]], embedded_pg: ServerInfo
) -> None:
    dsn, loaded = shop
    kb_dsn = make_database(embedded_pg, "rewrite_issues_kb", ("vector",))
    with GitHubApi(token="test-token") as api:
        api.add_repo("acme/shop", files={"app/reports.py": APP, "README.md": "a shop"})
        cfg = config(
            PG_ARCHITECT_GITHUB_REPO="acme/shop", PG_ARCHITECT_GITHUB_API_URL=api.url, GITHUB_TOKEN="test-token"
        )
        report = run_audit(cfg, dsn, kb_dsn, OPTIONS)
        q = the_rewrite(report)
        repo = api.repos["acme/shop"]
        assert len(repo.issues) == 1 and not repo.pulls, (repo.issues, repo.pulls, report.delivery_notes)
        assert set(repo.branches) == {"main"}, "a rewrite writes no branch"
        issue = repo.issues[0]
        body = issue["body"]
        assert body.startswith(issues.marker(q.fingerprint)), body[:200]
        assert "`app/reports.py:6`" in body, body
        assert "SELECT id, name, email FROM customers WHERE date(created_at) = $1" in body
        assert "created_at >= CAST($1 AS date) AND created_at < CAST($1 AS date) + 1" in body
        assert "the same rows on all" in body and "plan before: Seq Scan on customers" in body, body
        assert repo.labels[issue["number"]] == list(cfg.github.labels)
        note = next(n for n in report.delivery_notes if n.startswith(f"issue #{issue['number']} opened"))
        assert "call site app/reports.py:6" in note, report.delivery_notes
        assert report.kpis.prs_created == 0
        rec = q.recommendation
        assert rec is not None and rec.pr_url is None, "an issue is not the recommendation's pull request"
        record = next(d for d in report.deliveries if d.fingerprint == q.fingerprint)
        assert record.channel == "github_issue" and record.state == "issue_open" and record.created
        assert record.migration_path == "app/reports.py:6"

        # Delivered again (a rerun, a crash between two calls): the issue is found by its marker, not reopened.
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            recs = [r for r in kb.pr_recommendations(report.run_id) if r.type == "rewrite"]
            again = issues.deliver(cfg, kb, report, recs, None)
            week = weekly.build(kb, "https://architect.example/admin/database/report")
        finally:
            kb.close()
        # The weekly report (Slack, markdown, HTML) lists the issue among what waits for a person.
        shown = f"issue #{issue['number']} https://github.example/acme/shop/issues/{issue['number']}"
        assert shown in json.dumps(slack.blocks(week)), slack.blocks(week)
        assert shown in weekly.markdown(week) and shown in html.weekly_page(week)
        assert len(repo.issues) == 1 and [r.created for r in again.records] == [False], again
        assert api.count("POST", r"/issues$") == 1
    with psycopg.connect(kb_dsn) as conn:
        rows = conn.execute(
            "SELECT channel, state, pr_number, migration_path FROM pgarch.deliveries d"
            " JOIN pgarch.recommendations r USING (recommendation_id) WHERE r.type = 'rewrite'"
        ).fetchall()
    assert rows == [("github_issue", "issue_open", issue["number"], "app/reports.py:6")], rows
    assert fingerprint_of_database(dsn) == loaded, "the audited database changed"


def test_with_a_local_repository_the_call_site_is_found_by_git_grep(
    shop: tuple[str, dict[str, Any]], embedded_pg: ServerInfo, tmp_path: Path
) -> None:
    dsn, loaded = shop
    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "reports.py").write_text(APP, encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "app"]):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args], check=True
        )
    kb_dsn = make_database(embedded_pg, "rewrite_issues_kb_local", ("vector",))
    report = run_audit(config(PG_ARCHITECT_GITHUB_LOCAL_REPO=str(repo)), dsn, kb_dsn, OPTIONS)
    q = the_rewrite(report)
    note = next(n for n in report.delivery_notes if n.startswith(f"rewrite for statement {q.queryid}"))
    assert f"call site reports.py:6 on main of {repo}" in note and "no issue" in note, report.delivery_notes
    assert not [d for d in report.deliveries if d.fingerprint == q.fingerprint], "a rewrite is never a branch"
    assert fingerprint_of_database(dsn) == loaded


def test_fragments_are_the_statement_between_its_placeholders_longest_first() -> None:
    found = issues.fragments("SELECT id, name FROM customers WHERE date(created_at) = $1 AND region = $2")
    assert found[0] == "SELECT id, name FROM customers WHERE date(created_at)", found
    assert "WHERE date(created_at)" in found and all("$" not in f for f in found), found
