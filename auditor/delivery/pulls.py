"""Every recommendation at the pull-request threshold becomes a migration on its own branch.

With GitHub configured (``github.repo`` and a token), a branch, a commit and a pull request on GitHub; else,
with ``github.local_repo``, the same branch and commit in that local git repository; else nothing is
written, and the audit says so. Each delivery is recorded in the knowledge base (``pgarch.deliveries``), and
a branch that already exists, here or in the knowledge base, is never written twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pg_architect.auditor.delivery import migrations, pull_request
from pg_architect.auditor.delivery.git import LocalRepository
from pg_architect.auditor.delivery.github import GitHubRepository
from pg_architect.auditor.kb import KnowledgeBase, NewDelivery, PrRecommendation
from pg_architect.auditor.models import DeliveryRecord
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db
from pg_architect.core.config import Config

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Relation:
    schema: str
    name: str


@dataclasses.dataclass
class PullResult:
    records: list[DeliveryRecord] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (integration, error)


def channel(cfg: Config) -> str | None:
    """``github``, ``local_git`` or None (nothing configured)."""
    if cfg.github.repo and cfg.secret("github_token"):
        return "github"
    if cfg.github.local_repo:
        return "local_git"
    return None


def not_configured_note(cfg: Config, count: int) -> str:
    missing = (
        "github.repo is set but no token (GITHUB_TOKEN or github.token_file)"
        if cfg.github.repo
        else "set github.repo and a token, or github.local_repo"
    )
    return f"PR threshold reached by {count} recommendation(s), GitHub not configured ({missing}): nothing written"


def deliver(
    cfg: Config,
    conn: db.Connection,
    kb: KnowledgeBase,
    run_id: str,
    run_url: str | None = None,
    model_notes: Mapping[str, Sequence[str]] | None = None,
) -> PullResult:
    """Write the run's PR-level recommendations as migrations (GitHub or local git), once each. ``model_notes``:
    a language model's explanation per statement fingerprint (already made inert), shown in the pull request."""
    result = PullResult()
    # Only an index is a migration; a rewrite becomes an issue (auditor.delivery.issues).
    recs = [r for r in kb.pr_recommendations(run_id) if r.type == "index"]
    if not recs:
        return result
    kind = channel(cfg)
    if kind is None:
        result.notes.append(not_configured_note(cfg, len(recs)))
        return result
    gh: GitHubRepository | None = None
    local: LocalRepository | None = None
    try:
        if kind == "github":
            assert cfg.github.repo is not None
            gh = GitHubRepository(cfg.github.repo, cfg.secret("github_token") or "", cfg.github.api_url)
        else:
            assert cfg.github.local_repo is not None
            local = LocalRepository(cfg.github.local_repo)
            local.ensure(cfg.github.base_branch)
        for rec in recs:
            try:
                notes = (model_notes or {}).get(rec.fingerprint, ())
                record = _deliver_one(cfg, conn, kb, rec, gh, local, run_url, result, notes)
            except migrations.MigrationError as exc:
                result.notes.append(f"recommendation #{rec.recommendation_id}: no migration written: {exc}")
                continue
            except Exception as exc:
                integration = "github" if kind == "github" else "git"
                result.failures.append((integration, str(exc)))
                result.notes.append(f"recommendation #{rec.recommendation_id}: {integration} failed: {exc}")
                if kind == "github":  # the next ones would fail the same way (token, network, rate limit)
                    break
                continue
            if record is not None:
                result.records.append(record)
    except Exception as exc:  # the repository itself: a bad token, a missing base branch
        integration = "github" if kind == "github" else "git"
        result.failures.append((integration, str(exc)))
        result.notes.append(f"{integration} failed: {exc}")
    finally:
        if gh is not None:
            gh.close()
    return result


def _name_taken(conn: db.Connection, ddl: migrations.IndexDdl) -> bool:
    schema = ddl.schema or "public"
    rows = db.fetch(
        conn,
        db.query(conn, QUERIES, "relation_names_taken"),
        {"schemas": [schema], "names": [ddl.name]},
        _Relation,
    )
    return bool(rows)


def _deliver_one(
    cfg: Config,
    conn: db.Connection,
    kb: KnowledgeBase,
    rec: PrRecommendation,
    gh: GitHubRepository | None,
    local: LocalRepository | None,
    run_url: str | None,
    result: PullResult,
    model_notes: Sequence[str] = (),
) -> DeliveryRecord | None:
    ddl = migrations.index_ddl(rec.sql, rec.rollback_sql)
    branch = migrations.branch_name(ddl)
    repo_name = gh.full_name if gh is not None else str(local.path if local else "")
    kind = "github" if gh is not None else "local_git"
    known = kb.delivery_on_branch(kind, repo_name, branch)
    if known is not None and known.recommendation_id != rec.recommendation_id:
        result.notes.append(
            f"recommendation #{rec.recommendation_id}: branch {branch} was already written for recommendation "
            f"#{known.recommendation_id} ({known.state}); nothing new written"
        )
        return None
    if _name_taken(conn, ddl):
        # Checked again at delivery: the index may have been created since the audit measured it.
        result.notes.append(
            f"recommendation #{rec.recommendation_id}: a relation named {ddl.name} exists now; no migration written"
        )
        return None
    fmt, path = cfg.github.migrations.format, cfg.github.migrations.path
    migration = migrations.build(rec, fmt, path, datetime.now(UTC), cfg.measurement.lock_timeout_ms)
    message = pull_request.commit_message(rec, ddl)
    if gh is not None:
        pr = gh.open_pull_request(
            branch,
            cfg.github.base_branch,
            migration.files,
            message,
            pull_request.title(rec, ddl),
            pull_request.body(rec, ddl, migration, run_url, model_notes),
            cfg.github.labels,
        )
        delivery = NewDelivery(
            rec.recommendation_id,
            kind,
            repo_name,
            cfg.github.base_branch,
            branch,
            pr.sha,
            fmt,
            migration.forward.path,
            pr.number,
            pr.url,
            pr.state,
        )
        kb.record_delivery(delivery)
        verb = "opened" if pr.created else f"already exists ({pr.state})"
        result.notes.append(
            f"pull request #{pr.number} {verb} for {ddl.name} ({migrations.verdict(rec.action)}): {pr.url}"
        )
        return _record(rec, delivery, pr.created)
    assert local is not None
    commit = local.commit_files(branch, cfg.github.base_branch, migration.files, message)
    delivery = NewDelivery(
        rec.recommendation_id,
        kind,
        repo_name,
        cfg.github.base_branch,
        branch,
        commit.sha,
        fmt,
        migration.forward.path,
        None,
        None,
        "committed",
    )
    kb.record_delivery(delivery)
    if commit.created:
        result.notes.append(
            f"migration written to branch {branch} of {local.path} (commit {commit.sha[:12]}, "
            f"{migrations.verdict(rec.action)}; no pull request: GitHub not configured)"
        )
    else:
        result.notes.append(f"branch {branch} of {local.path} exists already (commit {commit.sha[:12]}); unchanged")
    return _record(rec, delivery, commit.created)


def _record(rec: PrRecommendation, d: NewDelivery, created: bool) -> DeliveryRecord:
    return DeliveryRecord(
        recommendation_id=rec.recommendation_id,
        fingerprint=rec.fingerprint,
        channel=d.channel,
        repo=d.repo,
        branch=d.branch,
        commit_sha=d.commit_sha,
        migration_path=d.migration_path,
        pr_number=d.pr_number,
        pr_url=d.pr_url,
        state=d.state,
        created=created,
    )


def refresh_pull_requests(cfg: Config, kb: KnowledgeBase) -> list[str]:
    """Ask GitHub for the state of every open pull request the knowledge base knows; record merged and closed
    ones (a pull request closed without merge is a person's "no"). Returns what changed."""
    if channel(cfg) != "github" or cfg.github.repo is None:
        return []
    open_ones = [d for d in kb.deliveries(states=["pr_open"], limit=500) if d.channel == "github"]
    open_ones = [d for d in open_ones if d.repo == cfg.github.repo and d.pr_number is not None]
    if not open_ones:
        return []
    gh = GitHubRepository(cfg.github.repo, cfg.secret("github_token") or "", cfg.github.api_url)
    changes = []
    try:
        for d in open_ones:
            assert d.pr_number is not None
            state = gh.pull_state(d.pr_number)
            if state != d.state:
                kb.set_delivery_state(d.delivery_id, state)
                what = "merged" if state == "merged" else "closed without merge"
                changes.append(f"pull request #{d.pr_number} ({d.branch}) was {what}")
    finally:
        gh.close()
    return changes
