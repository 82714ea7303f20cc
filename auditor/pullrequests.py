"""A recommendation's pull request, followed to its end: GitHub's answer, or the local repository's branches.

GitHub (``GET /repos/{owner}/{repo}/pulls/{number}`` through PyGithub): open -> ``pr_open``, merged ->
``merged``, closed without merging -> ``rejected``. The local repository (``github.local_repo``): a branch
that is an ancestor of the base branch (``git merge-base --is-ancestor``) was merged -> ``merged``.
The catalog, not the merge, makes a recommendation ``applied`` (lifecycle.check_catalog).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core.config import Config
from pg_architect.core.errors import PgArchitectError, redact

log = logging.getLogger(__name__)

_PR_URL = re.compile(r"/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)/pulls?/(?P<number>\d+)/?$")
GIT_TIMEOUT_S = 30
GITHUB_TIMEOUT_S = 15

PullStatus = Literal["open", "merged", "closed"]


class PullRequestError(PgArchitectError):
    """GitHub or git could not tell the pull request's state (logged; the next refresh tries again)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PullRequestRef:
    """What the lifecycle needs to know about a recommendation's pull request."""

    recommendation_id: int
    repo: str  # owner/name
    number: int
    url: str
    branch: str | None = None  # the head branch, for the local repository's answer


@dataclasses.dataclass(frozen=True, slots=True)
class PullState:
    status: PullStatus
    actor: str | None = None  # who merged it, when GitHub says
    at: datetime | None = None


def parse_pr_url(url: str) -> tuple[str, int] | None:
    """``(owner/name, number)`` from a pull request's URL (html or API form, any host), or None."""
    match = _PR_URL.search(url.split("?")[0].split("#")[0])
    if match is None:
        return None
    return f"{match['owner']}/{match['repo']}", int(match["number"])


def github_state(ref: PullRequestRef, token: str | None, api_url: str) -> PullState:
    """The pull request's state from GitHub's REST API."""
    from github import Auth, Github, GithubException

    gh = Github(
        base_url=api_url.rstrip("/"),
        auth=Auth.Token(token) if token else None,
        timeout=GITHUB_TIMEOUT_S,
        retry=None,
        lazy=True,  # no GET /repos/{owner}/{repo} first: only the pull request is read
    )
    try:
        pull = gh.get_repo(ref.repo).get_pull(ref.number)
        if pull.merged:
            merged_by = pull.merged_by.login if pull.merged_by is not None else None
            return PullState("merged", merged_by, pull.merged_at)
        if pull.state == "closed":
            return PullState("closed", None, pull.closed_at)
        return PullState("open")
    except GithubException as exc:
        raise PullRequestError(f"GitHub: pull request {ref.repo}#{ref.number}: {exc.status} {exc.data}") from exc
    except OSError as exc:  # connection refused, timeouts
        raise PullRequestError(f"GitHub: pull request {ref.repo}#{ref.number}: {exc}") from exc
    finally:
        gh.close()


def git_merged(local_repo: str, base_branch: str, branch: str) -> bool:
    """Whether ``branch`` is merged into ``base_branch`` in the local repository (its commits are ancestors)."""
    proc = subprocess.run(
        ["git", "-C", local_repo, "merge-base", "--is-ancestor", branch, base_branch],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
    )
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise PullRequestError(f"git merge-base in {local_repo}: {proc.stderr.strip() or proc.returncode}")


def apply_state(kb: KnowledgeBase, ref: PullRequestRef, state: PullState, source: str, now: datetime) -> str | None:
    """Move the recommendation as the pull request's state says; returns a line when it moved."""
    if state.status == "open":
        moved = kb.transition(
            ref.recommendation_id,
            "pr_open",
            source=source,
            from_statuses=("pending",),
            reason=f"pull request {ref.url} is open",
            at=now,
        )
        return f"#{ref.recommendation_id} pr_open: {ref.url}" if moved else None
    if state.status == "merged":
        moved = kb.transition(
            ref.recommendation_id,
            "merged",
            source=source,
            from_statuses=("pending", "pr_open"),
            actor=state.actor,
            reason=f"pull request {ref.url} was merged" if ref.url else f"branch {ref.branch} was merged",
            at=now,
        )
        return f"#{ref.recommendation_id} merged: {ref.url or ref.branch}" if moved else None
    moved = kb.transition(
        ref.recommendation_id,
        "rejected",
        source=source,
        from_statuses=("pending", "pr_open"),
        actor=state.actor,
        reason=f"pull request {ref.url} was closed without merging",
        at=now,
    )
    return f"#{ref.recommendation_id} rejected: {ref.url} closed unmerged" if moved else None


def sync(
    kb: KnowledgeBase,
    refs: Iterable[PullRequestRef],
    now: datetime,
    *,
    github: Callable[[PullRequestRef], PullState] | None = None,
    local_repo: str | None = None,
    base_branch: str = "main",
) -> list[str]:
    """Follow each pull request: the local repository first (no network), then GitHub. A failure is logged and
    leaves that recommendation as it was."""
    changes = []
    for ref in refs:
        try:
            if local_repo and ref.branch and git_merged(local_repo, base_branch, ref.branch):
                line = apply_state(kb, ref, PullState("merged"), "git", now)
            elif github is not None and ref.number > 0:  # a local branch has no pull request to ask about
                line = apply_state(kb, ref, github(ref), "github", now)
            else:
                continue
        except (PullRequestError, subprocess.TimeoutExpired) as exc:
            log.warning("pull request of recommendation #%d: %s", ref.recommendation_id, redact(str(exc)))
            continue
        if line:
            changes.append(line)
    return changes


def refs_of(kb: KnowledgeBase, target_id: int) -> list[PullRequestRef]:
    """The open recommendations' pull requests (from their ``pr_url``) and branches (from their deliveries: a
    branch of the local repository has no pull request, only its merge into the base branch)."""
    open_recs = {r.recommendation_id: r for r in kb.tracked(target_id) if r.status in ("pending", "pr_open")}
    if not open_recs:
        return []
    delivered = {
        d.recommendation_id: d
        for d in kb.deliveries(states=("committed", "pr_open"), limit=10_000)
        if d.recommendation_id in open_recs
    }
    refs = []
    for rid, rec in open_recs.items():
        delivery = delivered.get(rid)
        parsed = parse_pr_url(rec.pr_url) if rec.pr_url else None
        if parsed is not None:
            branch = delivery.branch if delivery is not None else None
            refs.append(PullRequestRef(rid, parsed[0], parsed[1], rec.pr_url or "", branch))
        elif delivery is not None and delivery.channel == "local_git":
            refs.append(PullRequestRef(rid, delivery.repo, 0, "", delivery.branch))
    return refs


def sync_configured(cfg: Config, kb: KnowledgeBase, target_id: int, now: datetime) -> list[str]:
    """``sync`` with the configured GitHub (``github.repo`` set) and local repository."""
    refs = refs_of(kb, target_id)
    if not refs:
        return []
    token = cfg.secret("github_token")
    api_url = cfg.github.api_url

    def from_github(ref: PullRequestRef) -> PullState:
        return github_state(ref, token, api_url)

    return sync(
        kb,
        refs,
        now,
        github=from_github if cfg.github.repo else None,
        local_repo=cfg.github.local_repo,
        base_branch=cfg.github.base_branch,
    )
