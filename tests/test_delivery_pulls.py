"""Recommendations become migrations on branches: a local git repository without GitHub, pull requests with
the GitHub API (a local server speaking it, tests/fakes/github_api.py), once each, and failures that are
counted while the audit stands. The migrations are applied the way Prisma Migrate applies them, on a real
server, then rolled back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pglast
import psycopg
import pytest

from pg_architect import demo
from pg_architect.auditor.audit import AuditOptions, run_audit
from pg_architect.auditor.delivery import pulls
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.auditor.models import AuditReport
from pg_architect.core import db
from pg_architect.core.config import Config, load_config
from tests.conftest import ServerInfo, make_database
from tests.fakes.github_api import GitHubApi

SCALE = {"customers": 40_000, "orders": 200_000, "jobs": 60_000}
OPTIONS = AuditOptions(min_calls=4, min_mean_ms=1.0, limit=20)


@pytest.fixture(scope="module")
def shop(embedded_pg: ServerInfo) -> Iterator[str]:
    dsn = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="delivery_shop",
        progress=lambda m: None,
        reset_statements=False,
        **SCALE,
    )
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))
    yield dsn


# The embedded server has no hypopg: measuring means real builds in rolled-back transactions, which block the
# table's writes while they run; these tests own their database and opt in.
BLOCKING_BUILDS = {"PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true"}


def config(**env: str) -> Config:
    return load_config(None, env={**BLOCKING_BUILDS, **env})


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def pr_level(report: AuditReport) -> list[str]:
    return [
        q.fingerprint
        for q in report.slow_queries
        if q.status == "recommended"
        and q.recommendation
        and q.recommendation.type == "index"  # a rewrite is never a migration (auditor.delivery.issues)
        and q.recommendation.action in ("pr_merge", "pr_review")
    ]


def apply_as_prisma(dsn: str, sql_text: str) -> None:
    """What Prisma Migrate's schema engine does with a migration.sql: the whole file as one simple query on an
    autocommit connection (a file of several statements becomes one implicit transaction)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = conn.pgconn.exec_(sql_text.encode())
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            state = result.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
            message = result.error_message.decode()
            raise psycopg.errors.lookup((state or b"XX000").decode())(message)


def failures(kb_dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(kb_dsn) as conn:
        return [
            (r[0], r[1]) for r in conn.execute("SELECT integration, error FROM pgarch.integration_failures ORDER BY 1")
        ]


def test_audit_without_github_commits_one_branch_per_pr_recommendation_once_and_prisma_applies_it(
    shop: str, embedded_pg: ServerInfo, tmp_path: Path
) -> None:
    kb_dsn = make_database(embedded_pg, "delivery_kb_local", ("vector",))
    repo = tmp_path / "repo"
    cfg = config(PG_ARCHITECT_GITHUB_LOCAL_REPO=str(repo))
    report = run_audit(cfg, shop, kb_dsn, OPTIONS)
    expected = pr_level(report)
    assert report.status == "ok" and len(expected) >= 3, report.as_json()["slow_queries"]
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/pg-architect/").splitlines()
    assert len(branches) == len(expected), (branches, report.delivery_notes)
    assert {d.fingerprint for d in report.deliveries} == set(expected)
    assert all(d.channel == "local_git" and d.pr_url is None and d.state == "committed" for d in report.deliveries)
    notes = "\n".join(report.delivery_notes)
    assert notes.count("migration written to branch pg-architect/") == len(expected), notes
    assert "pull request" not in notes.replace("no pull request", ""), notes

    # Each branch: one commit on main with migration.sql + down.sql in the Prisma layout; main untouched.
    assert git(repo, "rev-list", "--count", "main") == "1"
    for branch in branches:
        assert git(repo, "rev-list", "--count", f"main..{branch}") == "1"
        files = git(repo, "diff", "--name-only", f"main..{branch}").splitlines()
        assert len(files) == 2 and files[0].startswith("prisma/migrations/") and files[0].endswith("/down.sql")
        assert files[1].endswith("/migration.sql") and Path(files[0]).parent == Path(files[1]).parent
        forward = git(repo, "show", f"{branch}:{files[1]}")
        statements = pglast.parse_sql(forward)
        assert len(statements) == 1, forward
        for field in (
            "-- confidence: 0.",
            "-- expected gain: ",
            "-- measurement method: rollback_build",
            "-- statement (normalised",
            "-- reasoning:",
            "transaction block",
            "lock_timeout",
        ):
            assert field in forward, f"{field!r} missing in\n{forward}"
        assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in forward.splitlines()[-1]

    # The stored report says what happened.
    with psycopg.connect(kb_dsn) as conn:
        stored = conn.execute("SELECT report FROM pgarch.audit_runs WHERE run_id = %s", (report.run_id,)).fetchone()
        count = conn.execute("SELECT count(*) FROM pgarch.deliveries WHERE state = 'committed'").fetchone()
    assert stored is not None and len(stored[0]["deliveries"]) == len(expected)
    assert count == (len(expected),)

    # A second audit adds no branch (the pending recommendations are known); delivering the first run again
    # writes nothing either.
    second = run_audit(cfg, shop, kb_dsn, OPTIONS)
    assert second.status == "ok" and not second.deliveries, second.delivery_notes
    again = _deliver_again(cfg, shop, kb_dsn, report.run_id)
    assert all(not r.created for r in again.records) and len(again.records) == len(expected)
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/pg-architect/").splitlines() == branches

    # Apply each migration as Prisma does, check the index is there and valid, then the rollback.
    for branch in branches:
        folder = Path(git(repo, "diff", "--name-only", f"main..{branch}").splitlines()[0]).parent
        forward = git(repo, "show", f"{branch}:{folder}/migration.sql")
        name = pglast.parse_sql(forward)[0].stmt.idxname
        apply_as_prisma(shop, forward)
        with psycopg.connect(shop) as conn:
            valid = conn.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
                (name,),
            ).fetchall()
        assert valid == [(True,)], f"{name}: {valid}"
        apply_as_prisma(shop, git(repo, "show", f"{branch}:{folder}/down.sql"))
        with psycopg.connect(shop) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f"public.{name}",)).fetchone() == (None,)
    # The control: the same statement behind a SET, in one file, is what migration tools cannot run.
    with pytest.raises(psycopg.errors.ActiveSqlTransaction):
        apply_as_prisma(shop, "SET lock_timeout = 2000;\n" + forward.splitlines()[-1])


def _deliver_again(cfg: Config, dsn: str, kb_dsn: str, run_id: str) -> pulls.PullResult:
    kb = KnowledgeBase.open(kb_dsn, cfg)
    conn = db.connect(dsn, db.Role.AUDITOR, db.policy(cfg, db.Role.AUDITOR))
    try:
        return pulls.deliver(cfg, conn, kb, run_id)
    finally:
        conn.close()
        kb.close()


@pytest.fixture(scope="module")
def stored_run(shop: str, embedded_pg: ServerInfo) -> tuple[str, str, int]:
    """One audit with no delivery configured: (kb dsn, run id, PR-level recommendations)."""
    kb_dsn = make_database(embedded_pg, "delivery_kb_github", ("vector",))
    report = run_audit(config(), shop, kb_dsn, OPTIONS)
    count = len(pr_level(report))
    assert count >= 3
    assert report.delivery_notes == (
        f"PR threshold reached by {count} recommendation(s), GitHub not configured "
        "(set github.repo and a token, or github.local_repo): nothing written",
    )
    return kb_dsn, report.run_id, count


def github_config(api: GitHubApi, token: str = "test-token", **env: str) -> Config:
    return config(
        PG_ARCHITECT_GITHUB_REPO="acme/shop",
        PG_ARCHITECT_GITHUB_API_URL=api.url,
        GITHUB_TOKEN=token,
        PG_ARCHITECT_GITHUB_MIGRATIONS_FORMAT="sql",
        PG_ARCHITECT_GITHUB_MIGRATIONS_PATH="db/migrations",
        **env,
    )


def _reset_deliveries(kb_dsn: str) -> None:
    with psycopg.connect(kb_dsn) as conn:
        conn.execute("DELETE FROM pgarch.deliveries")
        conn.execute("DELETE FROM pgarch.integration_failures")
        conn.execute("UPDATE pgarch.recommendations SET pr_url = NULL")


def test_github_pull_requests_opened_once_with_body_and_labels_and_closed_one_recorded(
    shop: str, stored_run: tuple[str, str, int]
) -> None:
    kb_dsn, run_id, count = stored_run
    _reset_deliveries(kb_dsn)
    with GitHubApi(token="test-token") as api:
        api.add_repo("acme/shop", files={"README.md": "shop"})
        cfg = github_config(api)
        first = _deliver_again(cfg, shop, kb_dsn, run_id)
        assert not first.failures, first.notes
        assert len(first.records) == count and all(r.created and r.state == "pr_open" for r in first.records)
        repo = api.repos["acme/shop"]
        assert len(repo.pulls) == count
        for pr in repo.pulls:
            assert repo.labels[pr["number"]] == ["database", "ai-generated", "optimization"]
            body: str = pr["body"]
            for section in (
                "confidence",
                "expected gain",
                "### Query before",
                "### Recommendation",
                "Rollback:",
                "### Reasoning",
                "### EXPLAIN ANALYZE",
                "| before |",
                "| after |",
                "### Review checklist",
            ):
                assert section in body, f"{section!r} missing in the PR body:\n{body}"
            assert ("Recommend merge" in body) or ("Review requested" in body)
            files = api.files_on("acme/shop", pr["head"]["ref"])
            migration = [f for f in files if f.endswith(".up.sql")]
            assert len(migration) == 1 and migration[0].startswith("db/migrations/"), files
            assert f"{migration[0].removesuffix('.up.sql')}.down.sql" in files
            assert len(pglast.parse_sql(files[migration[0]])) == 1
        assert all(n.startswith("pull request #") and " opened for " in n for n in first.notes), first.notes

        # A rerun looks the pull requests up and opens none.
        posts = api.count("POST", r"/pulls$")
        rerun = _deliver_again(cfg, shop, kb_dsn, run_id)
        assert api.count("POST", r"/pulls$") == posts and api.count("POST", "/git/refs") == count
        assert all(not r.created for r in rerun.records) and len(rerun.records) == count

        # A pull request closed without merge is recorded; a merged one too.
        api.close_pull("acme/shop", 1)
        api.merge_pull("acme/shop", 2)
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            changes = pulls.refresh_pull_requests(cfg, kb)
            states = {d.pr_number: d.state for d in kb.deliveries()}
        finally:
            kb.close()
        assert states[1] == "closed" and states[2] == "merged", states
        assert any("#1" in c and "closed without merge" in c for c in changes), changes
    with psycopg.connect(kb_dsn) as conn:
        urls = conn.execute("SELECT count(*) FROM pgarch.recommendations WHERE pr_url LIKE 'https://%'").fetchone()
    assert urls == (count,)


def test_github_existing_branch_is_used_and_422_branch_exists_is_not_a_failure(
    shop: str, stored_run: tuple[str, str, int]
) -> None:
    kb_dsn, run_id, count = stored_run
    _reset_deliveries(kb_dsn)
    with GitHubApi() as api:
        repo = api.add_repo("acme/shop")
        first = _deliver_again(github_config(api), shop, kb_dsn, run_id)
        assert len(first.records) == count
        # As if an earlier run had crashed after pushing the branches, before opening the pull requests.
        branches = {pr["head"]["ref"] for pr in repo.pulls}
        repo.pulls.clear()
        _reset_deliveries(kb_dsn)
        refs = api.count("POST", "/git/refs")
        # The first branch lookup misses (a race): creating the branch then answers 422 "Reference already
        # exists", and the branch found on the second lookup is used.
        api.fail_next("GET", "/git/ref/heads/", 404, times=1, message="Not Found")
        second = _deliver_again(github_config(api), shop, kb_dsn, run_id)
        assert not second.failures, second.notes
        assert api.count("POST", "/git/refs") == refs + 1, "only the raced branch may be tried, and answered 422"
        assert {pr["head"]["ref"] for pr in repo.pulls} == branches and len(second.records) == count


def test_github_failures_are_bounded_counted_and_never_fail_the_audit(
    shop: str, embedded_pg: ServerInfo, stored_run: tuple[str, str, int]
) -> None:
    kb_dsn, run_id, count = stored_run
    # 5xx twice: retried within the bound, delivered.
    _reset_deliveries(kb_dsn)
    with GitHubApi() as api:
        api.add_repo("acme/shop")
        api.fail_next("POST", r"/git/trees$", 502, times=2)
        api.rate_limit_next("GET", r"/pulls$", reset_in_s=1)
        result = _deliver_again(github_config(api), shop, kb_dsn, run_id)
        assert not result.failures and len(api.repos["acme/shop"].pulls) == count, result.notes
    # 5xx for good: three retries, then one failure recorded, nothing half-made recorded as delivered.
    _reset_deliveries(kb_dsn)
    with GitHubApi() as api:
        api.add_repo("acme/shop")
        api.fail_next("POST", r"/git/trees$", 503, times=100)
        result = _deliver_again(github_config(api), shop, kb_dsn, run_id)
        assert api.count("POST", r"/git/trees$") == 4, "expected 1 try + 3 retries"
        assert [i for i, _ in result.failures] == ["github"] and "503" in result.failures[0][1]
        assert not api.repos["acme/shop"].pulls
    # 401: a wrong token, through a whole audit: the audit is ok, the failure is counted and said.
    _reset_deliveries(kb_dsn)
    kb2 = make_database(embedded_pg, "delivery_kb_401", ("vector",))
    with GitHubApi(token="right") as api:
        api.add_repo("acme/shop")
        report = run_audit(github_config(api, token="wrong"), shop, kb2, OPTIONS)
    assert report.status == "ok" and not report.deliveries
    assert any("github failed" in n and "401" in n and "Bad credentials" in n for n in report.delivery_notes), (
        report.delivery_notes
    )
    recorded = failures(kb2)
    assert [i for i, _ in recorded] == ["github"] and "wrong" not in recorded[0][1]
    with psycopg.connect(kb2) as conn:
        assert conn.execute("SELECT status FROM pgarch.audit_runs").fetchall() == [("ok",)]


def test_dry_run_writes_nothing_and_says_so(shop: str, embedded_pg: ServerInfo, tmp_path: Path) -> None:
    kb_dsn = make_database(embedded_pg, "delivery_kb_dry", ("vector",))
    cfg = config(PG_ARCHITECT_GITHUB_LOCAL_REPO=str(tmp_path / "repo"))
    report = run_audit(cfg, shop, kb_dsn, AuditOptions(min_calls=4, min_mean_ms=1.0, limit=20, dry_run=True))
    assert not (tmp_path / "repo").exists()
    assert len(report.delivery_notes) == 1 and report.delivery_notes[0].startswith("dry run: ")
    assert "nothing written" in report.delivery_notes[0]


def test_local_repository_failure_is_counted_not_fatal(
    shop: str, stored_run: tuple[str, str, int], tmp_path: Path
) -> None:
    kb_dsn, run_id, _ = stored_run
    _reset_deliveries(kb_dsn)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = _deliver_again(config(PG_ARCHITECT_GITHUB_LOCAL_REPO=str(not_a_dir / "repo")), shop, kb_dsn, run_id)
    assert not result.records and [i for i, _ in result.failures] == ["git"], result.notes
    assert "git failed" in result.notes[0]


def test_a_local_branch_merged_into_the_base_branch_makes_its_recommendation_merged(
    shop: str, embedded_pg: ServerInfo, tmp_path: Path
) -> None:
    """The loop closes without GitHub: the audit commits a branch, a person merges it in the local repository, and
    the next snapshot records the recommendation `merged` (source git)."""
    from pg_architect.auditor.snapshot import take_snapshot

    kb_dsn = make_database(embedded_pg, "delivery_kb_local_merge", ("vector",))
    repo = tmp_path / "repo"
    cfg = config(PG_ARCHITECT_GITHUB_LOCAL_REPO=str(repo))
    report = run_audit(cfg, shop, kb_dsn, OPTIONS)
    delivered = [d for d in report.deliveries if d.channel == "local_git"]
    assert delivered, report.delivery_notes
    chosen = delivered[0]
    git(repo, "-c", "user.name=dba", "-c", "user.email=dba@example.org", "merge", "--no-edit", chosen.branch)
    take_snapshot(cfg, shop, kb_dsn)
    with psycopg.connect(kb_dsn) as conn:
        rows = conn.execute(
            "SELECT r.status, e.source, e.reason FROM pgarch.recommendations r"
            " JOIN pgarch.deliveries d ON d.recommendation_id = r.recommendation_id"
            " LEFT JOIN pgarch.recommendation_events e"
            " ON e.recommendation_id = r.recommendation_id AND e.to_status = r.status"
            " WHERE d.branch = %s",
            (chosen.branch,),
        ).fetchall()
        others = conn.execute(
            "SELECT count(*) FROM pgarch.recommendations r JOIN pgarch.deliveries d USING (recommendation_id)"
            " WHERE d.branch <> %s AND r.status = 'merged'",
            (chosen.branch,),
        ).fetchone()
    assert rows and rows[0][0] == "merged" and rows[0][1] == "git", rows
    assert chosen.branch in (rows[0][2] or ""), rows
    assert others == (0,), "only the merged branch's recommendation moved"
