"""The title, body and commit message of a recommendation's pull request (also the local commit's message)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pg_architect.auditor.delivery.migrations import IndexDdl, Migration, measurement_summary, verdict
from pg_architect.auditor.kb import PrRecommendation


def title(rec: PrRecommendation, ddl: IndexDdl) -> str:
    gain = f", {rec.gain_percent:.0f} % faster" if rec.gain_percent is not None else ""
    table = f"{ddl.schema}.{ddl.table}" if ddl.schema else ddl.table
    return f"pg-architect: add index {ddl.name} on {table}{gain}"


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "not timed"
    return f"{value:,.1f} ms" if value >= 10 else f"{value:.3g} ms"


def body(
    rec: PrRecommendation, ddl: IndexDdl, migration: Migration, run_url: str | None, model_notes: Sequence[str] = ()
) -> str:
    """The design's pull-request body: confidence, gain, the statement, the SQL, reasoning, EXPLAIN ANALYZE
    before/after, and the reviewer's checklist."""
    m: dict[str, Any] = json.loads(rec.measurement) if isinstance(rec.measurement, str) else (rec.measurement or {})
    method, timing = measurement_summary(m)
    gain = f"{rec.gain_percent:.0f} %" if rec.gain_percent is not None else "unknown"
    decision = (
        "**Recommend merge**: confidence is at or above 0.90."
        if rec.action == "pr_merge"
        else "**Review requested**: confidence is between 0.80 and 0.89; a person should decide."
    )
    calls = (
        f"{rec.calls:,} calls, mean {_ms(rec.mean_ms)}, total {_ms(rec.total_ms)} in the audited window"
        if rec.calls is not None
        else "numbers not recorded"
    )
    timed = "EXPLAIN ANALYZE" if m.get("before_ms") is not None else "EXPLAIN (planner estimates; not executed)"
    lines = [
        f"## {title(rec, ddl)}",
        "",
        decision,
        "",
        "| | |",
        "|---|---|",
        f"| confidence | {rec.confidence:.2f} ({rec.action}: {verdict(rec.action)}) |",
        f"| expected gain | {gain} faster ({timing}) |",
        f"| measurement | {method}, {m.get('samples', 0)} parameter sample(s) |",
        f"| statement | {calls} |",
        f"| recommendation | #{rec.recommendation_id} of audit run `{rec.run_id}` |",
        "",
        "### Query before (normalised by pg_stat_statements: no literal values)",
        "```sql",
        rec.query.strip(),
        "```",
        "",
        "### Recommendation",
        "```sql",
        ddl.forward,
        "```",
        "Rollback:",
        "```sql",
        ddl.rollback,
        "```",
        f"Migration: `{migration.forward.path}` (rollback `{migration.rollback.path}`).",
        "",
        "### Reasoning",
        rec.reasoning,
        "",
        *(
            ["### The language model's view (model output, not evidence: the measurement decides)", *model_notes, ""]
            if model_notes
            else []
        ),
        f"### {timed}",
        "| | time | cost | plan |",
        "|---|---:|---:|---|",
        f"| before | {_ms(m.get('before_ms'))} | {m.get('before_cost', 0):,.0f} | {m.get('plan_before') or '-'} |",
        f"| after | {_ms(m.get('after_ms'))} | {m.get('after_cost', 0):,.0f} | {m.get('plan_after') or '-'} |",
        f"| gain | {gain} | | |",
        "",
        "### Review checklist",
        "- [ ] The table's write rate can afford one more index (each INSERT/UPDATE maintains it).",
        "- [ ] There is disk for the index, and the build's I/O fits the chosen time.",
        "- [ ] No existing index already serves this statement (check the schema as it is today).",
        "- [ ] The migration runs outside a transaction block (CREATE INDEX CONCURRENTLY), with a lock timeout.",
        "- [ ] After applying, the index is VALID (`\\d` shows no INVALID); otherwise run the rollback and retry.",
        "- [ ] The rollback has been read and is safe to run.",
    ]
    if run_url:
        lines += ["", f"Full audit report: {run_url}"]
    lines += ["", "_Opened by pg-architect. Query text is normalised: no value ever left pg_stat_statements._"]
    return "\n".join(lines) + "\n"


def commit_message(rec: PrRecommendation, ddl: IndexDdl) -> str:
    gain = f"{rec.gain_percent:.0f} %" if rec.gain_percent is not None else "unknown"
    return (
        f"{title(rec, ddl)}\n\n"
        f"Recommendation #{rec.recommendation_id} of audit run {rec.run_id}: confidence {rec.confidence:.2f} "
        f"({verdict(rec.action)}), expected gain {gain}.\n\n{ddl.forward}\n"
    )
