"""A migration committed to a branch of a local git repository (``github.local_repo``), with real git.

The branch is built with plumbing (a temporary index, ``commit-tree``, ``update-ref``), so the repository's
working tree, its checked-out branch and its index are never touched: people may be working in it. A missing
repository is created (``git init``, one empty commit on the base branch) so the demo and offline use work.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pg_architect.auditor.delivery.migrations import MigrationFile
from pg_architect.core.errors import PgArchitectError

GIT_TIMEOUT_S = 60
AUTHOR = ("pg-architect", "pg-architect@localhost")


class GitError(PgArchitectError):
    """A git command failed (its stderr is in the message)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    branch: str
    sha: str
    created: bool  # False: the branch was there already, nothing was written


class LocalRepository:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        full_env = {
            **os.environ,
            "GIT_AUTHOR_NAME": AUTHOR[0],
            "GIT_AUTHOR_EMAIL": AUTHOR[1],
            "GIT_COMMITTER_NAME": AUTHOR[0],
            "GIT_COMMITTER_EMAIL": AUTHOR[1],
            "GIT_TERMINAL_PROMPT": "0",
            **(env or {}),
        }
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.path), *args],
                input=input,
                capture_output=True,
                env=full_env,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"git {args[0]} did not finish in {GIT_TIMEOUT_S} s") from exc
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} in {self.path}: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode(errors="replace").strip()

    def ensure(self, base_branch: str) -> None:
        """Create the repository with an empty first commit on ``base_branch`` when it does not exist."""
        if (self.path / ".git").exists() or self._is_bare():
            if self.branch_sha(base_branch) is None:
                raise GitError(f"{self.path} has no branch {base_branch} (github.base_branch)")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", f"--initial-branch={base_branch}")
        self.git("commit", "--quiet", "--allow-empty", "-m", "Initial commit (created by pg-architect)")

    def _is_bare(self) -> bool:
        return (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    def branch_sha(self, branch: str) -> str | None:
        try:
            return self.git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
        except GitError:
            return None

    def commit_files(self, branch: str, base_branch: str, files: Sequence[MigrationFile], message: str) -> Commit:
        """Commit ``files`` on a new ``branch`` from ``base_branch``; an existing branch is left as it is."""
        existing = self.branch_sha(branch)
        if existing is not None:
            return Commit(branch, existing, created=False)
        base = self.branch_sha(base_branch)
        if base is None:
            raise GitError(f"{self.path} has no branch {base_branch} (github.base_branch)")
        with tempfile.TemporaryDirectory(prefix="pgarch-git-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", base, env=env)
            for f in files:
                blob = self.git("hash-object", "-w", "--stdin", input=f.content.encode())
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{f.path}", env=env)
            tree = self.git("write-tree", env=env)
        sha = self.git("commit-tree", tree, "-p", base, "-F", "-", input=message.encode())
        # The empty old value makes update-ref refuse if another process created the branch meanwhile.
        self.git("update-ref", f"refs/heads/{branch}", sha, "")
        return Commit(branch, sha, created=True)

    def show_command(self, branch: str) -> str:
        return f"git -C {self.path} log --stat -1 {branch}   # or: git -C {self.path} show {branch}"
