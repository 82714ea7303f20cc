"""Pull requests on GitHub with PyGithub: one branch and one commit per recommendation, then the PR.

Idempotent: before writing, the pull requests of the branch (any state) and the branch itself are looked up,
so a rerun, or a run after a crash between two calls, never opens a second branch or pull request. The commit
is made with the Git Data API (tree from the base branch's tree plus the migration files, one commit), and
the branch is created pointing at it, so a branch never exists without its migration.

Transient failures (5xx) are retried a bounded number of times with backoff, and a primary rate limit is
waited out when its reset is near (``GithubRetry``); anything else is one ``GitHubError`` with GitHub's message.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Sequence

from github import Auth, Github, GithubException, GithubRetry, InputGitTreeElement
from github.PullRequest import PullRequest
from github.Repository import Repository

from pg_architect.auditor.delivery.migrations import MigrationFile
from pg_architect.core.errors import PgArchitectError

log = logging.getLogger(__name__)

RETRIES = 3
TIMEOUT_S = 15
MAX_RATE_LIMIT_WAIT_S = 60.0


class GitHubError(PgArchitectError):
    """A GitHub call failed for good (after the bounded retries)."""


@dataclasses.dataclass(frozen=True, slots=True)
class IssueRef:
    number: int
    url: str
    created: bool  # False: an issue with the same marker existed already


#: Files read when looking for a statement's call site in a repository (through the Git Data API).
SOURCE_SUFFIXES = (
    ".py", ".rb", ".js", ".ts", ".tsx", ".jsx", ".go", ".java", ".kt", ".scala", ".cs", ".php", ".rs", ".ex",
    ".exs", ".sql", ".prisma", ".erb", ".clj", ".swift", ".dart", ".cpp", ".c", ".h",
)
MAX_BLOB_BYTES = 512 * 1024
MAX_BLOBS = 400
MAX_ISSUES_SCANNED = 300


@dataclasses.dataclass(frozen=True, slots=True)
class PullRequestRef:
    number: int
    url: str
    branch: str
    sha: str | None
    state: str  # pr_open | merged | closed
    created: bool  # False: it existed already


def state_of(pr: PullRequest) -> str:
    if pr.merged:
        return "merged"
    return "pr_open" if pr.state == "open" else "closed"


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    detail = str(data.get("message") or exc)
    errors = data.get("errors")
    if isinstance(errors, list):
        detail += "; " + "; ".join(str(e.get("message") or e) if isinstance(e, dict) else str(e) for e in errors)
    return f"GitHub answered {exc.status}: {detail}"


class GitHubRepository:
    """One repository, through one authenticated client."""

    def __init__(self, full_name: str, token: str, api_url: str = "https://api.github.com") -> None:
        self.full_name = full_name
        self.owner = full_name.split("/")[0]
        retry = GithubRetry(total=RETRIES, backoff_factor=0.2, max_rate_limit_wait=MAX_RATE_LIMIT_WAIT_S)
        self.client = Github(
            auth=Auth.Token(token),
            base_url=api_url.rstrip("/"),
            retry=retry,
            timeout=TIMEOUT_S,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._repo: Repository | None = None

    def close(self) -> None:
        self.client.close()

    def repo(self) -> Repository:
        if self._repo is None:
            try:
                self._repo = self.client.get_repo(self.full_name)
            except GithubException as exc:
                raise GitHubError(f"repository {self.full_name}: {_message(exc)}") from exc
        return self._repo

    def find_pull(self, branch: str) -> PullRequest | None:
        """The newest pull request whose head is ``branch``, open, closed or merged."""
        pulls = list(self.repo().get_pulls(state="all", head=f"{self.owner}:{branch}"))
        return max(pulls, key=lambda p: p.number) if pulls else None

    def branch_sha(self, branch: str) -> str | None:
        try:
            return str(self.repo().get_git_ref(f"heads/{branch}").object.sha)
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise

    def open_pull_request(
        self,
        branch: str,
        base_branch: str,
        files: Sequence[MigrationFile],
        message: str,
        title: str,
        body: str,
        labels: Sequence[str],
    ) -> PullRequestRef:
        try:
            return self._open(branch, base_branch, files, message, title, body, labels)
        except GithubException as exc:
            raise GitHubError(_message(exc)) from exc

    def _open(
        self,
        branch: str,
        base_branch: str,
        files: Sequence[MigrationFile],
        message: str,
        title: str,
        body: str,
        labels: Sequence[str],
    ) -> PullRequestRef:
        existing = self.find_pull(branch)
        if existing is not None:
            return PullRequestRef(
                existing.number, existing.html_url, branch, existing.head.sha, state_of(existing), created=False
            )
        repo = self.repo()
        sha = self.branch_sha(branch)
        if sha is None:
            sha = self._commit_branch(repo, branch, base_branch, files, message)
        else:
            log.info("GitHub: branch %s of %s exists already; opening its pull request", branch, self.full_name)
        pr = repo.create_pull(title=title, body=body, base=base_branch, head=branch)
        if labels:
            pr.add_to_labels(*labels)
        return PullRequestRef(pr.number, pr.html_url, branch, sha, "pr_open", created=True)

    def _commit_branch(
        self, repo: Repository, branch: str, base_branch: str, files: Sequence[MigrationFile], message: str
    ) -> str:
        base = repo.get_branch(base_branch).commit.sha
        parent = repo.get_git_commit(base)
        elements = [InputGitTreeElement(f.path, "100644", "blob", content=f.content) for f in files]
        tree = repo.create_git_tree(elements, base_tree=parent.tree)
        commit = repo.create_git_commit(message, tree, [parent])
        try:
            repo.create_git_ref(f"refs/heads/{branch}", commit.sha)
        except GithubException as exc:
            if exc.status != 422:
                raise
            # 422: the branch appeared meanwhile (another auditor, or a retried request that had succeeded).
            sha = self.branch_sha(branch)
            if sha is None:
                raise
            log.info("GitHub: branch %s was created meanwhile; using it", branch)
            return sha
        return str(commit.sha)

    def pull_state(self, number: int) -> str:
        try:
            return state_of(self.repo().get_pull(number))
        except GithubException as exc:
            raise GitHubError(f"pull request #{number}: {_message(exc)}") from exc

    # -- issues: a rewrite is delivered as an issue, never as a migration ------------------------------
    def source_files(self, branch: str) -> tuple[dict[str, str], bool]:
        """The text of the source files on ``branch`` (tree and blobs of the Git Data API), and whether the
        listing was cut at MAX_BLOBS."""
        try:
            repo = self.repo()
            head = repo.get_branch(branch).commit.sha
            tree = repo.get_git_tree(repo.get_git_commit(head).tree.sha, recursive=True)
            wanted = [
                e
                for e in tree.tree
                if e.type == "blob" and e.path.endswith(SOURCE_SUFFIXES) and (e.size or 0) <= MAX_BLOB_BYTES
            ]
            found: dict[str, str] = {}
            for entry in wanted[:MAX_BLOBS]:
                blob = repo.get_git_blob(entry.sha)
                raw = base64.b64decode(blob.content) if blob.encoding == "base64" else blob.content.encode()
                found[entry.path] = raw.decode("utf-8", errors="replace")
        except GithubException as exc:
            raise GitHubError(f"reading {self.full_name}@{branch}: {_message(exc)}") from exc
        return found, len(wanted) > MAX_BLOBS

    def open_issue(self, marker: str, title: str, body: str, labels: Sequence[str]) -> IssueRef:
        """The issue whose body carries ``marker`` (looked up first, so a rerun opens none twice), or a new one."""
        try:
            repo = self.repo()
            for n, issue in enumerate(repo.get_issues(state="all")):
                if n >= MAX_ISSUES_SCANNED:
                    break
                # The body first: reading pull_request of a listed issue costs one more request.
                if marker in (issue.body or "") and issue.pull_request is None:
                    return IssueRef(issue.number, issue.html_url, created=False)
            made = repo.create_issue(title=title, body=body, labels=list(labels))
        except GithubException as exc:
            raise GitHubError(_message(exc)) from exc
        return IssueRef(made.number, made.html_url, created=True)
