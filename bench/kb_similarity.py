"""The knowledge base's similarity look-up at scale: median latency with the model and target filters.

Starts the embedded PostgreSQL, creates the knowledge base (the auditor's migrations), fills it with
``--rows`` recommendations (256-dimensional hashed structural embeddings like auditor.fingerprint's, of
statements drawn as skewed feature sets; 90 % of them of the current embedding model, spread over
``--targets`` audited databases), then times ``--probes`` look-ups of the 5 nearest to a statement like a
stored one, for one target and model, two ways, interleaved:

- ``filtered``: the look-up as it was before (model and target in the WHERE clause of one prepared
  ORDER BY ... LIMIT, planned once for any target, over the one HNSW index of the table): the scan yields
  ef_search candidates, then the filters drop the other targets' rows, so it returns fewer than five (low
  recall), or the planner sorts the table;
- ``kb.similar``: ``KnowledgeBase.similar`` as the auditor runs it, after ``ensure_similarity_index`` built
  the partial HNSW index of each target and model (the auditor does it when it registers a target).

Recall is against the exact nearest five (a scan computing every distance). Run from the repository root:

    python bench/kb_similarity.py [--rows 100000] [--targets 5] [--probes 50] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg_architect.auditor.fingerprint import EMBEDDING_MODEL
from pg_architect.auditor.kb import KnowledgeBase
from pg_architect.core.embedded import EmbeddedPostgres

RUN_ID = "00000000-0000-0000-0000-0000000000b1"
BEFORE = """
SELECT r.recommendation_id, (1 - (r.embedding <=> %(embedding)s::vector))::float8 AS similarity
FROM pgarch.recommendations r
WHERE r.embedding_model = %(model)s AND (%(target_id)s::bigint IS NULL OR r.target_id = %(target_id)s::bigint)
ORDER BY r.embedding <=> %(embedding)s::vector
LIMIT %(limit)s
"""
EXACT = """
SELECT recommendation_id FROM (
    SELECT recommendation_id, embedding <=> %(embedding)s::vector AS d FROM pgarch.recommendations
    WHERE embedding_model = %(model)s AND target_id = %(target_id)s OFFSET 0) s
ORDER BY d LIMIT %(limit)s
"""


FEATURES = 3000


def statement(rng: random.Random) -> list[int]:
    """A statement as structural features, like auditor.fingerprint's: a few frequent ones (node types,
    common columns), more rare ones (table and column names), drawn with a Zipf-like skew."""
    return [min(int(rng.paretovariate(0.8)) - 1, FEATURES - 1) for _ in range(rng.randint(8, 30))]


def near(rng: random.Random, features: list[int]) -> list[int]:
    """A similar statement: the same with a few features changed."""
    out = list(features)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] = rng.randrange(FEATURES)
    return out


def vector(rng: random.Random, features: list[int] | None = None) -> list[float]:
    """The hashed, signed, L2-normalised embedding of the features (256 dimensions)."""
    values = [0.0] * 256
    for f in features if features is not None else statement(rng):
        slot = (f * 2654435761) % 2**32
        values[slot % 256] += 1.0 if (slot >> 8) & 1 else -1.0
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def text(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.5f}" for v in values) + "]"


def fill(dsn: str, rows: int, targets: int, rng: random.Random) -> list[list[int]]:
    kept: list[list[int]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgarch.audit_runs (run_id, status) VALUES (%s, 'ok')", (RUN_ID,))
        for t in range(targets):
            conn.execute(
                "INSERT INTO pgarch.targets (system_identifier, datname, server_version) VALUES (%s, 'db', 180000)",
                (str(t),),
            )
        conn.execute("DROP INDEX pgarch.recommendations_embedding_idx")  # built once after the load: faster
        with conn.cursor().copy(
            "COPY pgarch.recommendations (run_id, target_id, fingerprint, query, type, sql, reasoning, confidence,"
            " source, action, status, worth_applying, embedding, embedding_model) FROM STDIN"
        ) as copy:
            for i in range(rows):
                features = statement(rng)
                if i < 1000:
                    kept.append(features)
                copy.write_row(
                    (
                        RUN_ID,
                        1 + i % targets,
                        f"fp{i}",
                        "SELECT 1",
                        "index",
                        "CREATE INDEX x ON t (a)",
                        "bench",
                        0.5,
                        "advisor",
                        "log",
                        "pending",
                        True,
                        text(vector(rng, features)),
                        EMBEDDING_MODEL if rng.random() < 0.9 else "other-model",
                    )
                )
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            "CREATE INDEX recommendations_embedding_idx ON pgarch.recommendations USING hnsw "
            "(embedding vector_cosine_ops)"
        )
        conn.execute("VACUUM ANALYZE pgarch.recommendations")
    return kept


def params(probe: list[float], target: int) -> dict[str, object]:
    return {"embedding": text(probe), "model": EMBEDDING_MODEL, "target_id": target, "limit": 5}


def run(
    kb: KnowledgeBase, before: psycopg.Connection, probes: list[tuple[list[float], int]]
) -> dict[str, tuple[list[float], list[float]]]:
    """Time each look-up both ways, interleaved (the first three warm up); recall against the exact nearest."""
    results: dict[str, tuple[list[float], list[float]]] = {"filtered": ([], []), "kb.similar": ([], [])}
    for n, (probe, target) in enumerate(probes):
        exact = {r[0] for r in kb.conn.execute(EXACT, params(probe, target)).fetchall()}
        for way in ("filtered", "kb.similar") if n % 2 else ("kb.similar", "filtered"):
            started = time.perf_counter()
            if way == "filtered":
                found = {r[0] for r in before.execute(BEFORE, params(probe, target), prepare=True).fetchall()}
            else:
                found = {s.recommendation_id for s in kb.similar(probe, EMBEDDING_MODEL, target_id=target, limit=5)}
            elapsed = time.perf_counter() - started
            if n >= 3:
                results[way][0].append(elapsed * 1000.0)
                results[way][1].append(len(found & exact) / max(len(exact), 1))
    return results


def _short_plan(plan: str) -> str:
    """The plan without the 256 numbers of the probe."""
    return re.sub(r"'\[[^\]]*\]'", "'[...]'", plan).replace("\n", "\n  ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="pgarch-kb-bench-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    try:
        dsn = server.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        KnowledgeBase.open(dsn).close()  # the migrations
        started = time.monotonic()
        stored = fill(dsn, args.rows, args.targets, rng)
        print(f"loaded {args.rows:,} recommendations and built the HNSW index in {time.monotonic() - started:.0f} s")
        kb = KnowledgeBase.open(dsn, migrate=False)
        # The look-up as it was: one prepared statement, planned once for any target (a generic plan), so only
        # the whole table's HNSW index can serve it.
        before = psycopg.connect(dsn, autocommit=True)
        before.execute("SET plan_cache_mode = force_generic_plan")
        try:
            started = time.monotonic()
            for target in range(1, args.targets + 1):
                kb.ensure_similarity_index(target, EMBEDDING_MODEL)
            print(f"built {args.targets} partial HNSW index(es), one per target, in {time.monotonic() - started:.0f} s")
            probes = [
                (vector(rng, near(rng, rng.choice(stored))), 1 + n % args.targets) for n in range(args.probes + 3)
            ]
            results = run(kb, before, probes)
            generic = (
                BEFORE.replace("%(embedding)s", "$1")
                .replace("%(model)s", "$2")
                .replace("%(target_id)s", "$3")
                .replace("%(limit)s", "$4")
            )
            plan = "\n".join(r[0] for r in before.execute("EXPLAIN (GENERIC_PLAN) " + generic).fetchall())
        finally:
            before.close()
            kb.close()
        before_results, after_results = results["filtered"], results["kb.similar"]
        print(
            f"{args.probes} look-ups of the 5 nearest for one of {args.targets} target(s), one model, "
            f"{args.rows:,} rows:"
        )
        for way, (timings, recall) in (("filtered", before_results), ("kb.similar", after_results)):
            t = sorted(timings)
            print(
                f"  {way:<11} median {statistics.median(t):7.2f} ms  p90 {t[int(0.9 * (len(t) - 1))]:7.2f} ms  "
                f"recall@5 {statistics.mean(recall):.2f}"
            )
        ratio = statistics.median(before_results[0]) / statistics.median(after_results[0])
        print(f"  kb.similar / filtered: {1 / ratio:.2f}x the median time")
        print("plan of the filtered look-up (before):\n  " + _short_plan(plan))
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
