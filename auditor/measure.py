"""Measuring a candidate index without changing the audited database.

Three methods, one chosen per statement and reported with the result:

- ``hypothetical`` (hypopg): plain EXPLAIN with and without a hypothetical index; no lock, nothing built.
  If hypopg is available but not created, it is created inside a transaction that is rolled back.
- ``rollback_build``: BEGIN; EXPLAIN ANALYZE; CREATE INDEX (in a savepoint); ANALYZE when the index has
  expressions; EXPLAIN ANALYZE; ROLLBACK, under lock_timeout and statement_timeout, only for SELECT
  statements on tables below ``measurement.max_table_bytes``.
- ``staging``: the same against ``measurement.staging_dsn``, without the size limit.

DML is never executed: UPDATE/DELETE/INSERT are compared by plain EXPLAIN costs only.
Every statement we EXPLAIN ANALYZE (it came from pg_stat_statements, so it is untrusted) passes the
read-only allow-list first, and every index we build passes the index allow-list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pg_architect.auditor import advisor, catalog, safety
from pg_architect.auditor.advisor import Candidate
from pg_architect.auditor.catalog import TableInfo
from pg_architect.auditor.models import Measurement, MeasurementMethod
from pg_architect.core import db
from pg_architect.core.config import MeasurementConfig
from pg_architect.core.errors import DatabaseError, PgArchitectError, UnsafeSQLError
from pg_architect.core.sqlfiles import mark

log = logging.getLogger(__name__)

#: Real timings: repeat each sample and keep the fastest, so a cold cache does not count as "before" gain.
REPEATS = 2
MAX_BUILDS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    cost: float
    ms: float | None
    rows: float
    nodes: tuple[str, ...]
    index_names: frozenset[str]
    text: str

    @classmethod
    def from_json(cls, doc: Any) -> Plan:
        top = doc[0] if isinstance(doc, list) else doc
        root = top["Plan"]
        nodes: list[str] = []
        names: set[str] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            label = node.get("Node Type", "?")
            if "Index Name" in node:
                names.add(node["Index Name"])
                label += f" using {node['Index Name']}"
            if "Relation Name" in node:
                label += f" on {node['Relation Name']}"
            nodes.append(label)
            stack.extend(reversed(node.get("Plans", [])))
        # A DML statement's root returns nothing: the rows it touches are its input's.
        output = root["Plans"][0] if root.get("Node Type") == "ModifyTable" and root.get("Plans") else root
        return cls(
            cost=float(root.get("Total Cost", 0.0)),
            ms=top.get("Execution Time"),
            rows=float(output.get("Plan Rows", 0.0)),
            nodes=tuple(nodes),
            index_names=frozenset(names),
            text=" -> ".join(nodes),
        )

    def shape(self) -> tuple[str, ...]:
        return tuple(n.split(" using ")[0] for n in self.nodes)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One candidate's measurement, or why it could not be measured."""

    candidate: Candidate
    measurement: Measurement | None
    used_index: bool = False
    consistent: bool = False
    error: str | None = None
    expression_estimate_only: bool = False


class CannotMeasure(PgArchitectError):
    """No safe measurement method applies to this statement here."""


def explain(conn: db.Connection, sql: str, *, analyze: bool) -> Plan:
    """The plan of ``sql`` (an allow-listed workload statement), always inside a READ ONLY (sub)transaction
    that is rolled back: whatever planning or execution would try to write fails instead."""
    options = "ANALYZE, TIMING OFF, FORMAT JSON" if analyze else "FORMAT JSON"
    with rolled_back(conn):
        db.execute(conn, "SET LOCAL transaction_read_only = on")
        doc = db.fetch_value(conn, mark(f"EXPLAIN ({options}) {sql}"))
    return Plan.from_json(doc if not isinstance(doc, str) else json.loads(doc))


def representative(conn: db.Connection, samples: Sequence[str], rows_per_call: float | None, keep: int) -> list[str]:
    """The ``keep`` samples whose planned rows are closest to what each call really returned.

    Parameter values come from statistics, not from the application: a range sampled to be selective makes
    an index look good for a statement whose real calls read most of the table. pg_stat_statements records
    the rows each call returns (or touches), comparable to the plan's row estimate; samples far from it are
    not what the workload runs.
    """
    if rows_per_call is None or rows_per_call <= 0 or len(samples) <= keep:
        return list(samples[:keep])
    planned = [
        (abs(math.log((explain(conn, s, analyze=False).rows + 1) / (rows_per_call + 1))), i)
        for i, s in enumerate(samples)
    ]
    return [samples[i] for _, i in sorted(planned)[:keep]]


# How fast a plain CREATE INDEX reads its table, for the expected lock time of a rolled-back build: measured
# on the reference machine (2 vCPU, a 354 MB table held INSERTs for 3.7 s, about 96 MB/s), halved for margin.
BUILD_BYTES_PER_S = 48 * 1024 * 1024


def expected_lock_ms(table: TableInfo) -> float:
    """How long a plain CREATE INDEX on ``table`` is expected to block its writers (SHARE lock)."""
    return table.heap_bytes / BUILD_BYTES_PER_S * 1000.0


def _without_locks_fix(tables: Sequence[TableInfo], major: int | None) -> str:
    return (
        f"install hypopg on this server (Debian: apt-get install postgresql-{major or '<major>'}-hypopg, then "
        "CREATE EXTENSION hypopg) or set measurement.staging_dsn; to build on this server anyway, which blocks "
        "writes to "
        + ", ".join(t.qualified for t in tables)
        + " while each index builds, set measurement.allow_blocking_builds: true"
    )


def choose_method(
    cfg: MeasurementConfig,
    *,
    kind: str,
    tables: Sequence[TableInfo],
    hypopg: bool,
    staging: bool,
    server_major: int | None = None,
) -> MeasurementMethod:
    """The method for one statement; raise CannotMeasure with the reason (and the fix) when none is safe.

    ``auto`` never blocks writes unless the user opted in: a staging server first (real timings, production
    untouched), then hypothetical indexes (hypopg: planner costs, no lock), then, with
    ``allow_blocking_builds``, a real build in a rolled-back transaction when its expected lock is short.
    """
    if cfg.mode == "hypothetical":
        if not hypopg:
            raise CannotMeasure("measurement.mode is hypothetical but hypopg is not available on this server")
        return "hypothetical"
    if cfg.mode == "staging":
        if not staging:
            raise CannotMeasure("measurement.mode is staging but measurement.staging_dsn is not set")
        return "staging"
    if cfg.mode == "auto":
        if staging:
            return "staging"
        if hypopg:
            return "hypothetical"
        if not cfg.allow_blocking_builds:
            raise CannotMeasure(
                f"cannot measure safely without hypopg or a staging server: {_without_locks_fix(tables, server_major)}"
            )
    # A rolled-back build here: opted in, or mode rollback_build chosen explicitly.
    largest = max(tables, key=lambda t: t.heap_bytes, default=None)
    if largest is not None:
        expected = expected_lock_ms(largest)
        if expected > cfg.max_blocking_ms:
            raise CannotMeasure(
                f"building an index on {largest.qualified} ({largest.heap_bytes / 1e6:.0f} MB) is expected to block "
                f"its writes for about {expected / 1000:.1f} s, over measurement.max_blocking_ms "
                f"({cfg.max_blocking_ms} ms); use hypopg or a staging server"
            )
        if largest.total_bytes > cfg.max_table_bytes:
            raise CannotMeasure(
                f"table {largest.qualified} is {largest.total_bytes} bytes, over measurement.max_table_bytes; "
                "use hypopg or a staging server"
            )
    return "rollback_build"


class Measurer:
    """Measures candidates for one statement on the audited (or staging) server."""

    def __init__(
        self,
        conn: db.Connection,
        cfg: MeasurementConfig,
        *,
        hypopg_installed: bool,
        hypopg_available: bool,
        staging: db.Connection | None = None,
        min_gain_percent: float = 20.0,
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.hypopg_installed = hypopg_installed
        self.hypopg_available = hypopg_available
        self.staging = staging
        self.min_gain_percent = min_gain_percent

    @property
    def hypopg(self) -> bool:
        return self.hypopg_installed or self.hypopg_available

    def measure(
        self, kind: str, samples: Sequence[str], candidates: Sequence[Candidate], tables: Sequence[TableInfo]
    ) -> tuple[MeasurementMethod, list[Outcome]]:
        if not samples:
            raise CannotMeasure("no executable form of the statement (parameters could not be sampled)")
        method = choose_method(
            self.cfg,
            kind=kind,
            tables=tables,
            hypopg=self.hypopg,
            staging=self.staging is not None,
            server_major=db.server_facts(self.conn).version_num // 10000,
        )
        executes = kind == "select" and method != "hypothetical"
        for sql in samples:
            if kind == "select":
                safety.check_readonly_select(sql, self.conn)
            else:
                safety.check_explain_only_dml(sql, self.conn)
        if method == "hypothetical":
            return method, self._hypothetical(samples, candidates, timed=kind == "select")
        conn = self.staging if method == "staging" and self.staging is not None else self.conn
        return method, self._build(conn, method, samples, candidates, analyze=executes)

    # -- hypothetical -----------------------------------------------------------------------------------
    def _hypothetical(self, samples: Sequence[str], candidates: Sequence[Candidate], *, timed: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._transaction(self.conn):
            if not self.hypopg_installed:
                db.execute(self.conn, mark("CREATE EXTENSION IF NOT EXISTS hypopg"))
            try:
                with db.transaction(self.conn):  # a savepoint: if the statement cannot be planned, say why
                    # What can be measured for real without a lock: the statement's time now (SELECTs,
                    # read-only); the hypothetical index itself only has planner costs.
                    before = [self._timed(self.conn, s, timed) for s in samples]
                for cand in candidates:
                    try:
                        with rolled_back(self.conn):  # one candidate's error must not abort the others
                            outcomes.append(self._hypothetical_one(cand, samples, before))
                    except (UnsafeSQLError, DatabaseError) as exc:
                        outcomes.append(Outcome(cand, None, error=str(exc)))
            finally:
                db.fetch_value(self.conn, mark("SELECT hypopg_reset()"))
        return outcomes

    def _hypothetical_one(self, cand: Candidate, samples: Sequence[str], before: list[Plan]) -> Outcome:
        ddl = cand.ddl(self.conn, concurrently=False)
        safety.check_index_target(self.conn, safety.check_index_ddl(ddl))
        oid = db.fetch_value(self.conn, mark("SELECT indexrelid FROM hypopg_create_index(%s)"), (ddl,))
        try:
            after = [explain(self.conn, s, analyze=False) for s in samples]
        finally:
            db.fetch_value(self.conn, mark("SELECT hypopg_drop_index(%s)"), (oid,))
        return self._outcome(cand, "hypothetical", before, after)

    # -- real builds, rolled back -------------------------------------------------------------------
    def _build(
        self,
        conn: db.Connection,
        method: MeasurementMethod,
        samples: Sequence[str],
        candidates: Sequence[Candidate],
        *,
        analyze: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._transaction(conn):
            before = [self._timed(conn, s, analyze) for s in samples]
            for cand in candidates[:MAX_BUILDS] if analyze else candidates:
                try:
                    with rolled_back(conn):  # a savepoint: the index and its locks go at its end
                        outcomes.append(self._build_one(conn, method, cand, samples, before, analyze))
                except (UnsafeSQLError, DatabaseError) as exc:
                    outcomes.append(Outcome(cand, None, error=str(exc)))
        return outcomes

    def _build_one(
        self,
        conn: db.Connection,
        method: MeasurementMethod,
        cand: Candidate,
        samples: Sequence[str],
        before: list[Plan],
        analyze: bool,
    ) -> Outcome:
        ddl = cand.ddl(conn, concurrently=False)
        safety.check_index_target(conn, safety.check_index_ddl(ddl))
        started = time.monotonic()
        db.execute(conn, mark(ddl))
        log.debug("built %s in %.2fs", cand.describe(), time.monotonic() - started)
        # ``conn`` may be the staging server: the table is found there by name, not by the audited oid.
        table_oid = db.fetch_value(
            conn, mark("SELECT pg_catalog.to_regclass(%s)::oid::bigint"), (cand.qualified_table(conn),)
        )
        found_indexes = catalog.indexes(conn, [table_oid]) if table_oid is not None else []
        built = next((i for i in found_indexes if i.name == cand.name()), None)
        if built is None or not advisor.matches_definition(cand, built, table_oid=table_oid):
            # IF NOT EXISTS met an index of that name with another definition: measuring now would time it.
            found = built.definition if built is not None else "no index"
            return Outcome(cand, None, error=f"index name {cand.name()} is taken ({found}); not measured")
        if any(k.column is None for k in cand.keys):
            # An expression index has no statistics until ANALYZE; without them the plan guesses.
            db.execute(conn, db.SQL(mark("ANALYZE {}")).format(db.Identifier(cand.table.schema, cand.table.name)))
        if self._needs_xmin_wait(conn, cand):
            return Outcome(
                cand,
                None,
                error="the table has HOT-updated rows, so an index built in this "
                "transaction is invisible to its plans; measure with hypopg or a staging server",
            )
        if analyze:
            # Timing costs seconds on a large table: only when some sample's plan uses the new index at all.
            planned = [explain(conn, s, analyze=False) for s in samples]
            if not any(cand.name() in p.index_names for p in planned):
                return self._outcome(cand, method, [_untimed(p) for p in before], planned)
        after = [self._timed(conn, s, analyze) for s in samples]
        return self._outcome(cand, method, before, after)

    def _needs_xmin_wait(self, conn: db.Connection, cand: Candidate) -> bool:
        return bool(
            db.fetch_value(
                conn,
                mark(
                    "SELECT i.indcheckxmin FROM pg_catalog.pg_index i JOIN "
                    "pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                ),
                (cand.table.schema, cand.name()),
            )
        )

    def _timed(self, conn: db.Connection, sql: str, analyze: bool) -> Plan:
        if not analyze:
            return explain(conn, sql, analyze=False)
        # Executed statements run read-only too (explain() sees to it): a second guard behind the allow-list.
        plans = [explain(conn, sql, analyze=True) for _ in range(REPEATS)]
        return min(plans, key=lambda p: p.ms if p.ms is not None else float("inf"))

    @contextmanager
    def _transaction(self, conn: db.Connection) -> Iterator[None]:
        """A transaction that always rolls back, under the configured lock and statement timeouts."""
        with rolled_back(conn):
            db.execute(
                conn,
                "SELECT pg_catalog.set_config('lock_timeout', %s, true),"
                " pg_catalog.set_config('statement_timeout', %s, true)",
                (str(self.cfg.lock_timeout_ms), str(self.cfg.statement_timeout_ms)),
            )
            yield

    def _outcome(self, cand: Candidate, method: MeasurementMethod, before: list[Plan], after: list[Plan]) -> Outcome:
        before_cost = sum(p.cost for p in before)
        after_cost = sum(p.cost for p in after)
        before_ms = sum(p.ms or 0.0 for p in before) if all(p.ms is not None for p in before) else None
        after_ms = sum(p.ms or 0.0 for p in after) if all(p.ms is not None for p in after) else None
        if before_ms is not None and after_ms is not None and before_ms > 0:
            gain = (before_ms - after_ms) / before_ms * 100.0
            per_sample = [(b.ms or 0) > (a.ms or 0) for b, a in zip(before, after, strict=True)]
        else:
            gain = (before_cost - after_cost) / before_cost * 100.0 if before_cost > 0 else 0.0
            per_sample = [b.cost > a.cost for b, a in zip(before, after, strict=True)]
        used = any(a.index_names - b.index_names for b, a in zip(before, after, strict=True))
        changed = any(a.shape() != b.shape() for b, a in zip(before, after, strict=True)) or used
        measurement = Measurement(
            method=method,
            before_cost=before_cost,
            after_cost=after_cost,
            before_ms=before_ms,
            after_ms=after_ms,
            gain_percent=gain,
            worth_applying=used and gain > self.min_gain_percent,
            plan_changed=changed,
            plan_before=before[0].text,
            plan_after=after[0].text,
            samples=len(before),
        )
        return Outcome(
            cand,
            measurement,
            used_index=used,
            consistent=all(per_sample),
            expression_estimate_only=method == "hypothetical" and any(k.column is None for k in cand.keys),
        )


def _untimed(plan: Plan) -> Plan:
    return dataclasses.replace(plan, ms=None)


class _Rollback(Exception):
    """Raised inside a transaction block to leave it by rolling back."""


@contextmanager
def rolled_back(conn: db.Connection) -> Iterator[None]:
    """A transaction (a savepoint when nested) that always ends in ROLLBACK, whatever the block did."""
    try:
        with db.transaction(conn):
            yield
            raise _Rollback
    except _Rollback:
        pass
