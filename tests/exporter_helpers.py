"""Helpers for the exporter tests: scrape a target into a fresh registry, read samples, run statements."""

from __future__ import annotations

import csv
import math
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from pg_architect.core.config import Config, load_config
from pg_architect.exporter.target import Target


class Scrape:
    """One scrape's families in a fresh CollectorRegistry."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    def collect(self) -> list[Metric]:
        return self.families

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def one(self, name: str, **labels: str) -> float | None:
        """The value of the only ``name`` sample whose labels include ``labels`` (None when there is none)."""
        found = [v for lbl, v in self.samples(name) if labels.items() <= lbl.items()]
        assert len(found) <= 1, f"{len(found)} {name} samples match {labels}"
        return found[0] if found else None

    def names(self) -> set[str]:
        return {s.name for f in self.families for s in f.samples}

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for f in self.families for s in f.samples if s.name == name]


def config(**env: str) -> Config:
    return load_config(env={f"PG_ARCHITECT_{k.upper()}": v for k, v in env.items()})


def target(dsn: str, **env: str) -> Target:
    return Target("test", dsn, config(**env))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs, +Inf last."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_bound, prev_count = bound, count
    return buckets[-2][0]


def bucket_delta(before: Scrape, after: Scrape, datname: str) -> list[tuple[float, float]]:
    def read(s: Scrape) -> dict[float, float]:
        return {
            float(lbl["le"]): v
            for lbl, v in s.samples("pgarch_query_duration_seconds_bucket")
            if lbl["datname"] == datname
        }

    a, b = read(before), read(after)
    return [(le, b[le] - a.get(le, 0.0)) for le in b]


def run_concurrently(
    dsn: str,
    statements: list[tuple[str, tuple[object, ...]]],
    threads: int = 2,
    session_sql: str | None = None,
    application_name: str = "",
    simple: bool = False,
) -> None:
    """Run ``statements`` split over ``threads`` connections (``simple``: the simple query protocol)."""
    chunks = [statements[i::threads] for i in range(threads)]
    errors: list[BaseException] = []

    def work(chunk: list[tuple[str, tuple[object, ...]]]) -> None:
        try:
            factory = psycopg.ClientCursor if simple else psycopg.Cursor
            with psycopg.connect(
                dsn, autocommit=True, application_name=application_name, cursor_factory=factory
            ) as conn:
                if session_sql:
                    conn.execute(session_sql)
                for sql, params in chunk:
                    conn.execute(sql, params)  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*)")


def logged_durations(log_file: Path, marker: str, offset: int) -> list[float]:
    """Durations (seconds) the server logged, from byte ``offset``, of statements containing ``marker``."""
    with log_file.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        m = _DURATION.search(line)
        if m and marker in m.group(2):
            out.append(float(m.group(1)) / 1000.0)
    return out


def logged_csv_durations(log_dir: Path, datname: str, application_name: str) -> list[float]:
    """Every duration (seconds) the server's csvlog holds for this database and application: with
    log_duration on and the simple protocol, one line per statement (bare below the threshold)."""
    out = []
    for path in sorted(log_dir.glob("*.csv")):
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.reader(fh):
                if len(row) > 22 and row[2] == datname and row[22] == application_name:
                    m = re.match(r"duration: ([0-9.]+) ms", row[13])
                    if m:
                        out.append(float(m.group(1)) / 1000.0)
    return out
