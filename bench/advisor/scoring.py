"""Scoring a tool's recommended indexes against the truth table.

Matching rule (documented in BENCHMARKS.md): an index is read back from the catalog after it is built
(``pg_get_indexdef(index, k, true)`` per key, ``pg_get_expr(indpred)``), sort direction dropped. It
*serves* a shape exactly when it matches one of the shape's ``good`` patterns: same table, leading keys
consumed group by group (keys within a group in any order, e.g. two equality columns), extra trailing
keys allowed, and the same partial-index predicate (or none). It serves *partly* when it matches a
``partial`` pattern instead (e.g. the equality column without the sort column), or when it is built on one
partition of a partitioned table (a good or partial pattern of the partitioned table). A recommendation is
*false* when it is already indexed (an index that existed when the tool ran, including one created after
the statistics were collected, has the same leading keys and no narrower predicate) or when it serves
no shape of the workload, exactly or partly. The same index recommended twice counts once, and the
duplicate is reported; an index whose keys another of the same tool's indexes starts with is reported
as redundant (it costs writes and space for no extra read path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from bench.advisor.workload import Pattern, Shape


@dataclasses.dataclass(frozen=True, slots=True)
class IndexDef:
    """An index as the catalog spells it."""

    name: str
    table: str
    keys: tuple[str, ...]
    where: str | None
    method: str
    size_bytes: int = 0
    sql: str = ""
    partition_of: str | None = None  # an index on one partition: the partitioned table

    def signature(self) -> tuple[str, tuple[str, ...], str | None, str]:
        return (self.table, self.keys, self.where, self.method)

    def describe(self) -> str:
        using = "" if self.method == "btree" else f" USING {self.method}"
        return f"{self.table}{using}({', '.join(self.keys)})" + (f" WHERE {self.where}" if self.where else "")


def strip_direction(key: str) -> str:
    for suffix in (" NULLS FIRST", " NULLS LAST", " DESC", " ASC"):
        key = key.removesuffix(suffix)
    return key


def matches(index: IndexDef, pattern: Pattern) -> bool:
    if (index.partition_of or index.table) != pattern.table or index.method != "btree":
        return False
    if not pattern.any_where and index.where != pattern.where:
        return False
    keys = [strip_direction(k) for k in index.keys]
    pos = 0
    for group in pattern.groups:
        chunk = keys[pos : pos + len(group)]
        if sorted(chunk) != sorted(group):
            return False
        pos += len(group)
    return True


def covered_by(index: IndexDef, existing: Iterable[IndexDef]) -> IndexDef | None:
    """An existing index whose leading keys are this index's keys (and whose predicate is no narrower)."""
    want = [strip_direction(k) for k in index.keys]
    for e in existing:
        if e.table != index.table or e.method != index.method:
            continue
        have = [strip_direction(k) for k in e.keys]
        if have[: len(want)] == want and (e.where is None or e.where == index.where):
            return e
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    index: IndexDef
    serves: tuple[str, ...]  # shapes served exactly
    serves_partly: tuple[str, ...]
    already: IndexDef | None
    duplicate_of: IndexDef | None
    redundant_with: IndexDef | None = None  # another of the tool's own indexes starts with these keys

    @property
    def false(self) -> bool:
        return self.duplicate_of is None and (self.already is not None or not (self.serves or self.serves_partly))

    def label(self) -> str:
        if self.duplicate_of is not None:
            return "duplicate"
        if self.already is not None:
            return f"FALSE: already indexed by {self.already.name}"
        if self.serves:
            return "serves " + ", ".join(self.serves) + self._redundant()
        if self.serves_partly:
            return "partly serves " + ", ".join(self.serves_partly) + self._redundant()
        return "FALSE: serves no statement of the workload"

    def _redundant(self) -> str:
        return f" (redundant: {self.redundant_with.describe()} starts with it)" if self.redundant_with else ""


@dataclasses.dataclass(frozen=True, slots=True)
class Score:
    tool: str
    verdicts: tuple[Verdict, ...]
    per_shape: dict[str, str]  # shape -> "exact" | "partial" | "miss" (missing-index shapes only)

    @property
    def recall(self) -> tuple[int, int]:
        hit = sum(1 for v in self.per_shape.values() if v == "exact")
        return hit, len(self.per_shape)

    @property
    def partial(self) -> int:
        return sum(1 for v in self.per_shape.values() if v == "partial")

    @property
    def false(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.false]

    @property
    def duplicates(self) -> int:
        return sum(1 for v in self.verdicts if v.duplicate_of is not None)

    @property
    def redundant(self) -> int:
        return sum(1 for v in self.verdicts if v.duplicate_of is None and v.redundant_with is not None)

    @property
    def distinct(self) -> int:
        return sum(1 for v in self.verdicts if v.duplicate_of is None)


def score(tool: str, recommended: Sequence[IndexDef], existing: Sequence[IndexDef], shapes: Sequence[Shape]) -> Score:
    verdicts: list[Verdict] = []
    seen: dict[tuple[str, tuple[str, ...], str | None, str], IndexDef] = {}
    for index in recommended:
        sig = (index.table, tuple(strip_direction(k) for k in index.keys), index.where, index.method)
        dup = seen.get(sig)
        seen.setdefault(sig, index)
        verdicts.append(
            Verdict(
                index=index,
                # An index on one partition serves only the statements' rows in that partition: partly at most.
                serves=tuple(
                    s.name for s in shapes if index.partition_of is None and any(matches(index, p) for p in s.good)
                ),
                serves_partly=tuple(
                    s.name
                    for s in shapes
                    if (index.partition_of is not None or not any(matches(index, p) for p in s.good))
                    and any(matches(index, p) for p in (*s.good, *s.partial))
                ),
                already=covered_by(index, existing),
                duplicate_of=dup,
                redundant_with=next(
                    (
                        other
                        for other in recommended
                        if other is not index
                        and len(other.keys) > len(index.keys)
                        and covered_by(index, [other]) is not None
                    ),
                    None,
                ),
            )
        )
    per_shape: dict[str, str] = {}
    for s in shapes:
        if s.kind != "missing":
            continue
        useful = [v for v in verdicts if v.already is None]
        if any(s.name in v.serves for v in useful):
            per_shape[s.name] = "exact"
        elif any(s.name in v.serves_partly for v in useful):
            per_shape[s.name] = "partial"
        else:
            per_shape[s.name] = "miss"
    return Score(tool, tuple(verdicts), per_shape)
