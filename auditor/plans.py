"""The plan a statement gets now, for regressions: bound with sampled values, EXPLAIN without ANALYZE."""

from __future__ import annotations

from pg_architect.auditor import analysis
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import explain
from pg_architect.auditor.parsing import UnparseableQuery, parse_query
from pg_architect.core.errors import UnsafeSQLError


def current_plan(catalog: Snapshot, query: str) -> str | None:
    """The plan's node list (``Limit -> Index Scan using x on t``), or None when the statement cannot be
    planned with sampled values (a utility statement, no sample that binds, refused by the allow-list).
    The statement goes through the same analysis as the audit's own, allow-list included, before EXPLAIN."""
    try:
        shape = parse_query(query)
    except UnparseableQuery:
        return None
    if shape.is_utility:
        return None
    resolved, tables = analysis.resolve(catalog, shape)
    try:
        facts = analysis.analyse(catalog, resolved, tables, 1)
    except (analysis.NotMeasurable, UnsafeSQLError):
        return None
    return explain(catalog.conn, facts.samples[0], analyze=False).text


def plan_change(before: str | None, now: str | None) -> str | None:
    """One line saying how the plan changed, or None when it did not (or one side is unknown)."""
    if before is None or now is None or before == now:
        return None
    return f"plan changed: {before}  =>  {now}"
