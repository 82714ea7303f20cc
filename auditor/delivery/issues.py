"""A verified rewrite at the pull-request threshold becomes a GitHub issue, never a migration.

A rewrite changes application code, which pg-architect does not write: the issue shows the original and the
rewritten statement, the evidence that they return the same rows (sets compared, rows, both plans) and the
measured gain, and points to the call site when the statement's text is found in the repository: a distinctive
fragment of its normalised text (the longest pieces between placeholders) is searched for on the base branch,
with ``git grep`` in ``github.local_repo`` or through GitHub's tree and blobs. Idempotent: an issue is looked up
by the marker in its body before one is opened, and recorded in ``pgarch.deliveries`` (channel
``github_issue``). Without GitHub, a local repository still gets its call site said in the delivery notes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pg_architect.auditor.delivery.git import GitError, LocalRepository
from pg_architect.auditor.delivery.github import GitHubRepository
from pg_architect.auditor.delivery.pulls import PullResult, channel
from pg_architect.auditor.kb import KnowledgeBase, NewDelivery, PrRecommendation
from pg_architect.auditor.models import AuditReport, DeliveryRecord, SlowQuery
from pg_architect.auditor.report import rewrite_lines
from pg_architect.core.config import Config

MIN_FRAGMENT = 16
MAX_FRAGMENTS = 6
MAX_SITES = 3
_PLACEHOLDER = re.compile(r"\$\d+")
_CLAUSE = re.compile(r"\s+(?=(?:FROM|WHERE|JOIN|LEFT JOIN|GROUP BY|ORDER BY|HAVING|LIMIT|UNION)\b)", re.IGNORECASE)


def fragments(query: str) -> list[str]:
    """Distinctive pieces of a normalised statement to look for in source code, longest first: the text
    between its placeholders, whole and cut at its clauses (application code writes its own placeholders,
    and often breaks lines at a clause)."""
    found: list[str] = []
    for piece in _PLACEHOLDER.split(query):
        candidates = [piece, *_CLAUSE.split(piece)]
        candidates = [" ".join(c.split()).rstrip(" ,=<>!(").lstrip(" ,=<>!)") for c in candidates]
        found += [c for c in candidates if len(c) >= MIN_FRAGMENT and "'" not in c]
    return sorted(dict.fromkeys(found), key=len, reverse=True)[:MAX_FRAGMENTS]


def _search(files: Mapping[str, str], fragment: str) -> list[str]:
    needle = fragment.lower()
    sites = []
    for path, text in sorted(files.items()):
        for n, line in enumerate(text.splitlines(), 1):
            if needle in " ".join(line.split()).lower():
                sites.append(f"{path}:{n}")
    return sites


def github_call_sites(gh: GitHubRepository, branch: str, query: str) -> tuple[list[str], str]:
    """(``path:line`` of the statement's text on ``branch``, the fragment that found it or what was searched)."""
    files, cut = gh.source_files(branch)
    wanted = fragments(query)
    for fragment in wanted:
        sites = _search(files, fragment)
        if sites:
            return sites[:MAX_SITES], fragment
    return [], _searched(wanted) + (" (the first source files only)" if cut else "")


def local_call_sites(local: LocalRepository, branch: str, query: str) -> tuple[list[str], str]:
    """The same with ``git grep`` on ``branch`` of a local repository."""
    wanted = fragments(query)
    if local.branch_sha(branch) is None:
        return [], f"{local.path} has no branch {branch}"
    for fragment in wanted:
        try:
            out = local.git("grep", "-n", "-I", "-F", "-i", "-e", fragment, branch, "--")
        except GitError:  # exit status 1: no line matches
            continue
        sites = [":".join(line.split(":")[1:3]) for line in out.splitlines() if line.count(":") >= 3]
        if sites:
            return sites[:MAX_SITES], fragment
    return [], _searched(wanted)


def _searched(wanted: Sequence[str]) -> str:
    return "searched for " + (", ".join(f"`{w}`" for w in wanted[:3]) if wanted else "nothing distinctive enough")


def marker(fingerprint: str) -> str:
    return f"<!-- pg-architect rewrite {fingerprint} -->"


def title(q: SlowQuery) -> str:
    rec = q.recommendation
    assert rec is not None and rec.equivalence is not None
    gain = rec.measurement.gain_percent if rec.measurement else 0.0
    return f"pg-architect: rewrite a slow statement ({rec.equivalence.rule or 'model'}, {gain:.0f} % faster)"


def body(
    doc: dict[str, Any], q: SlowQuery, sites: Sequence[str], searched: str, branch: str, run_url: str | None
) -> str:
    rec = q.recommendation
    assert rec is not None and rec.equivalence is not None
    eq = rec.equivalence
    where = (
        "Call site" + ("s" if len(sites) > 1 else "") + f" on `{branch}`: " + ", ".join(f"`{s}`" for s in sites)
        + f" (found by its text: `{searched}`)"
        if sites
        else f"The statement's text was not found on `{branch}` ({searched}); it may be built at run time."
    )
    entry: dict[str, Any] = next(
        (x for x in doc.get("slow_queries") or [] if x.get("fingerprint") == q.fingerprint), {}
    )
    evidence = [
        line
        for line in rewrite_lines(doc, entry)
        if line.startswith(("rewrite (", "why:", "measured", "plan before", "plan after"))
    ]
    lines = [
        marker(q.fingerprint),
        "## A slow statement, and a rewrite verified to return the same rows",
        "",
        f"Statement `{q.queryid}`: {q.calls} calls, mean {q.mean_ms:.1f} ms, total {q.total_ms:.0f} ms in the "
        "audit's window. This is not a migration: change the statement where the application sends it.",
        "",
        where,
        "",
        "### Original",
        "```sql",
        eq.original_sql,
        "```",
        "### Rewritten",
        "```sql",
        rec.sql,
        "```",
        "### Evidence",
        *[f"- {line}" for line in evidence],
        f"- confidence {rec.confidence:.2f} ({rec.action})",
    ]
    if run_url:
        lines += ["", f"The audit run: {run_url}"]
    return "\n".join(lines)


def deliver(
    cfg: Config, kb: KnowledgeBase, report: AuditReport, recs: Sequence[PrRecommendation], run_url: str | None
) -> PullResult:
    """Issues (GitHub) or call-site notes (a local repository) for the run's rewrites at the PR threshold."""
    result = PullResult()
    by_fingerprint = {q.fingerprint: q for q in report.slow_queries}
    rewrites = [
        (r, q)
        for r in recs
        if r.type == "rewrite"
        and (q := by_fingerprint.get(r.fingerprint)) is not None
        and q.recommendation is not None
        and q.recommendation.equivalence is not None
    ]
    if not rewrites:
        return result
    kind = channel(cfg)
    base = cfg.github.base_branch
    if kind is None:  # the report is the delivery; the PR threshold's note (auditor.delivery.pulls) says the rest
        return result
    if kind == "local_git":
        assert cfg.github.local_repo is not None
        local = LocalRepository(cfg.github.local_repo)
        for _, q in rewrites:
            sites, searched = local_call_sites(local, base, q.query)
            found = f"call site {', '.join(sites)} on {base} of {local.path}" if sites else (
                f"its text is not on {base} of {local.path} ({searched})"
            )
            result.notes.append(
                f"rewrite for statement {q.queryid}: {found}; no issue: GitHub not configured (a rewrite is never a "
                "migration)"
            )
        return result
    assert cfg.github.repo is not None
    gh = GitHubRepository(cfg.github.repo, cfg.secret("github_token") or "", cfg.github.api_url)
    doc = report.as_json()
    try:
        for rec, q in rewrites:
            key = f"rewrite/{q.fingerprint}"
            try:
                sites, searched = github_call_sites(gh, base, q.query)
                issue = gh.open_issue(
                    marker(q.fingerprint), title(q), body(doc, q, sites, searched, base, run_url), cfg.github.labels
                )
            except Exception as exc:
                result.failures.append(("github", str(exc)))
                result.notes.append(f"recommendation #{rec.recommendation_id}: github failed: {exc}")
                break  # the next ones would fail the same way (token, network, rate limit)
            delivery = NewDelivery(
                rec.recommendation_id, "github_issue", gh.full_name, base, key, None, "issue",
                sites[0] if sites else "", issue.number, issue.url, "issue_open",
            )
            kb.record_delivery(delivery)
            verb = "opened" if issue.created else "already exists"
            at = f", call site {', '.join(sites)}" if sites else ", call site not found"
            result.notes.append(
                f"issue #{issue.number} {verb} for the rewrite of statement {q.queryid}{at}: {issue.url}"
            )
            result.records.append(
                DeliveryRecord(
                    recommendation_id=rec.recommendation_id,
                    fingerprint=q.fingerprint,
                    channel="github_issue",
                    repo=gh.full_name,
                    branch=key,
                    commit_sha=None,
                    migration_path=delivery.migration_path,
                    pr_number=issue.number,
                    pr_url=issue.url,
                    state="issue_open",
                    created=issue.created,
                )
            )
    finally:
        gh.close()
    return result
