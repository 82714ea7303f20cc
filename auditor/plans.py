"""The plan a statement gets now, for regressions: bound with sampled values, EXPLAIN without ANALYZE."""

from __future__ import annotations

from pg_architect.auditor import params
from pg_architect.auditor.measure import explain
from pg_architect.auditor.parsing import UnparseableQuery, parse_query
from pg_architect.core import db


def current_plan(conn: db.Connection, query: str) -> str | None:
    """The plan's node list (``Limit -> Index Scan using x on t``), or None when the statement cannot be
    planned with sampled values (a utility statement, no sample that binds)."""
    try:
        shape = parse_query(query)
    except UnparseableQuery:
        return None
    if shape.is_utility:
        return None
    samples = params.executable_samples(conn, shape, 1)
    if not samples:
        return None
    return explain(conn, samples[0], analyze=False).text


def plan_change(before: str | None, now: str | None) -> str | None:
    """One line saying how the plan changed, or None when it did not (or one side is unknown)."""
    if before is None or now is None or before == now:
        return None
    return f"plan changed: {before}  =>  {now}"
