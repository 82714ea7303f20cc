"""Index health (indexes to drop) and table growth forecasts, for the weekly report."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pg_architect.auditor.kb import HealthPoint
from pg_architect.auditor.models import Forecast, IndexHealth
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db

MIN_UNUSED_BYTES = 1024 * 1024
FORECAST_DAYS = 90


@dataclasses.dataclass(frozen=True, slots=True)
class _IndexRow:
    schema: str
    name: str
    reason: str
    definition: str
    size_bytes: int
    scans: int
    evidence: str


@dataclasses.dataclass(frozen=True, slots=True)
class TableSize:
    schema: str
    name: str
    size_bytes: int
    rows: float
    writes: int = 0  # rows inserted, updated and deleted since statistics began (caching reads the deltas)


def index_health(conn: db.Connection) -> list[IndexHealth]:
    rows = db.fetch(
        conn,
        db.query(conn, QUERIES, "index_health"),
        {"min_unused_bytes": MIN_UNUSED_BYTES},
        _IndexRow,
    )
    out: list[IndexHealth] = []
    seen: set[str] = set()
    for r in rows:  # an index is reported once, for its strongest reason (invalid < duplicate < redundant)
        qualified = db.Identifier(r.schema, r.name).as_string(conn)
        if qualified in seen:
            continue
        seen.add(qualified)
        out.append(
            IndexHealth(
                type="drop_index",
                index=f"{r.schema}.{r.name}",
                reason=r.reason,  # type: ignore[arg-type]
                sql=f"DROP INDEX CONCURRENTLY IF EXISTS {qualified};",
                rollback_sql=r.definition.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1).replace(
                    "CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1
                )
                + ";",
                evidence=f"{r.evidence}; {r.size_bytes} bytes, {r.scans} scans",
            )
        )
    return out


def table_sizes(conn: db.Connection) -> list[TableSize]:
    return db.fetch(conn, db.query(conn, QUERIES, "table_sizes"), None, TableSize)


def forecasts(
    history: Sequence[HealthPoint], current: Sequence[TableSize], limit: int = 10
) -> list[Forecast]:
    """Least-squares growth per table over the daily snapshots; needs two points a day apart or more."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in history:
        for table in point.metrics.get("tables", []):
            series.setdefault(table["table"], []).append((point.taken_at.timestamp(), float(table["size_bytes"])))
    out: list[Forecast] = []
    for t in current:
        name = f"{t.schema}.{t.name}"
        points = series.get(name, [])
        if len(points) < 2 or max(p[0] for p in points) - min(p[0] for p in points) < 86400:
            continue
        slope = _slope(points)  # bytes per second
        projected = int(max(t.size_bytes + slope * FORECAST_DAYS * 86400, 0))
        note = None
        if slope > 0 and projected > 2 * t.size_bytes and t.size_bytes > 1024**3:
            note = f"{name} doubles within {FORECAST_DAYS} days"
        out.append(Forecast(table=name, size_bytes=t.size_bytes, projected_bytes_90d=projected, note=note))
    out.sort(key=lambda f: -(f.projected_bytes_90d - f.size_bytes))
    return out[:limit]


def _slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Connections:
    client_backends: int
    usable_connections: int


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseHealth:
    datname: str
    size_bytes: int
    blks_hit: int
    blks_read: int


def health_metrics(conn: db.Connection) -> dict[str, Any]:
    """The daily health record: connections, each database's size and cache counters, each table's size."""
    connections = db.fetch_one(conn, db.query(conn, QUERIES, "health_connections"), None, Connections)
    assert connections is not None  # a single-row SELECT without FROM
    databases = db.fetch(conn, db.query(conn, QUERIES, "health_databases"), None, DatabaseHealth)
    return {
        "client_backends": connections.client_backends,
        "usable_connections": connections.usable_connections,
        "databases": [dataclasses.asdict(d) for d in databases],
        "tables": [
            {"table": f"{t.schema}.{t.name}", "size_bytes": t.size_bytes, "rows": t.rows, "writes": t.writes}
            for t in table_sizes(conn)
        ],
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Locked:
    qualified: str


def locked_tables(conn: db.Connection) -> list[str]:
    """Tables another session holds an ACCESS EXCLUSIVE lock on: the health queries leave them out."""
    return [row.qualified for row in db.fetch(conn, db.query(conn, QUERIES, "locked_tables"), None, _Locked)]
