"""The newcomer's demo, run twice: the first ends with real branches and commits in a local repository under
the demo's directory and the report page written; the second reuses data and knowledge base, writes no new
branch and shows what is pending review. No output claims an action that was not taken."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pg_architect.core.embedded import free_port


def demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_") and k != "GITHUB_TOKEN"}
    env["PG_ARCHITECT_DATABASE_EMBEDDED_DATA_DIR"] = str(data_dir)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg_architect",
            "demo",
            "--once",
            "--scale",
            "0.2",
            "--config",
            "/dev/null",
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def branches(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/pg-architect/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def test_demo_twice_shows_where_migrations_and_report_are_and_remembers(tmp_path: Path) -> None:
    first = demo(tmp_path / "pg")
    out = first.stdout
    match = re.search(r"^migrations: git -C (\S+) log --oneline --all\s+then\s+git -C \S+ show (\S+)$", out, re.M)
    assert match, out[-3000:]
    repo = Path(match.group(1))
    assert repo.is_relative_to(tmp_path) and (repo / ".git").is_dir()
    made = branches(repo)
    assert len(made) >= 3 and any(b.startswith(match.group(2) + " ") for b in made), made
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", match.group(2)], capture_output=True, text=True, check=True
    ).stdout
    assert "migration.sql" in shown and "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in shown
    page = Path(re.search(r"^report page \(self-contained HTML\): (\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    assert page.is_relative_to(tmp_path) and "<svg" in page.read_text(encoding="utf-8")
    assert "thresholds lowered for the demo: min_calls 5 (configured 100), min_mean_ms 2 (configured 500)" in (
        first.stderr
    )
    assert "try it on your own database: pg-architect check --dsn" in out
    # The statement only a rewrite fixes (date() hides an indexed column): verified and shown, never a branch.
    assert "rewrite (sargable_predicate), verified: the same rows on all" in out, out[-3000:]
    assert "rewritten: SELECT id, name, email FROM customers WHERE created_at >= CAST($1 AS date)" in out
    assert out.count("migration written to branch pg-architect/") == len(made)
    # Nothing claims a pull request: GitHub is not configured in the demo.
    assert not re.search(r"pull request #\d+|PR opened|opened a pull request", first.stdout + first.stderr)
    assert f"pending review ({len(made)})" in out

    second = demo(tmp_path / "pg")
    assert "reusing the demo database pgarch_demo and its knowledge base" in second.stderr
    assert "loaded " not in second.stderr, "the data must not be reloaded"
    # Nothing already delivered is written again: the first run's branches are untouched. A statement that
    # only now crossed the demo's thresholds may get its own new branch, and then the output says so.
    after = branches(repo)
    assert set(made) <= set(after), "a branch of the first run was changed"
    new = len(after) - len(made)
    assert second.stdout.count("migration written to branch pg-architect/") == new, second.stdout[-3000:]
    assert f"pending review ({len(after)}), kept in the knowledge base across runs:" in second.stdout
    if new == 0:
        assert "no new branch this time" in second.stdout
