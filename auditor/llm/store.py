"""The model's part of an audit in the knowledge base (schema from migration 005_llm.sql).

Written inside the audit's one closing transaction (KnowledgeBase.finish_run calls :func:`write`): the
usage the exporter turns into ``pgarch_llm_*`` counters, every proposal with its verdict, and the
recommendations' embeddings from the embedding model. Also the reads of the embedding option: the
recommendations still missing an embedding of a model, and similarity search in one model's space.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pg_architect.auditor.kb import SimilarRecommendation
from pg_architect.auditor.models import AuditReport
from pg_architect.auditor.queries import QUERIES
from pg_architect.core import db


@dataclasses.dataclass(frozen=True, slots=True)
class Missing:
    recommendation_id: int
    query: str


def _vector(values: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def write(
    conn: db.Connection,
    report: AuditReport,
    target_id: int,
    recommendation_ids: Mapping[str, int],
    *,
    model: str,
    embedding_model: str | None,
    vectors: Mapping[str, Sequence[float]],
) -> None:
    """Store the audit's model usage, proposals and model embeddings (in the caller's transaction)."""
    usage: dict[str, Any] = report.llm_usage or {}
    if usage:
        db.execute(
            conn,
            db.query(conn, QUERIES, "kb_llm_usage_insert"),
            {
                "run_id": report.run_id,
                "target_id": target_id,
                "model": model,
                "requests": json.dumps(usage.get("requests", {})),
                "tokens": json.dumps(usage.get("tokens", {})),
                "latency_seconds_sum": usage.get("latency_seconds_sum", 0.0),
                "latency_seconds_count": usage.get("latency_seconds_count", 0),
            },
        )
    for q in report.slow_queries:
        p = q.llm.proposal if q.llm is not None else None
        if p is None or p.type == "none":
            continue
        db.execute(
            conn,
            db.query(conn, QUERIES, "kb_llm_proposal_insert"),
            {
                "run_id": report.run_id,
                "target_id": target_id,
                "fingerprint": q.fingerprint,
                "model": p.model,
                "type": p.type[:40],
                "sql": p.sql,
                "status": p.status,
                "reason": p.reason[:2000],
                "model_confidence": p.model_confidence,
            },
        )
    if embedding_model:
        for fingerprint, recommendation_id in recommendation_ids.items():
            vector = vectors.get(fingerprint)
            if vector:
                store_embedding(conn, recommendation_id, embedding_model, vector)


def store_embedding(conn: db.Connection, recommendation_id: int, model: str, vector: Sequence[float]) -> None:
    db.execute(
        conn,
        db.query(conn, QUERIES, "kb_model_embedding_insert"),
        {"recommendation_id": recommendation_id, "model": model, "dim": len(vector), "embedding": _vector(vector)},
    )


def missing_embeddings(conn: db.Connection, model: str, limit: int) -> list[Missing]:
    """Recommendations that have no embedding of ``model`` yet (newest first)."""
    return db.fetch(
        conn, db.query(conn, QUERIES, "kb_model_embedding_missing"), {"model": model, "limit": limit}, Missing
    )


def similar(
    conn: db.Connection, vector: Sequence[float], model: str, *, target_id: int | None, limit: int = 5
) -> list[SimilarRecommendation]:
    """Nearest recommendations in ``model``'s space, of ``vector``'s dimension only."""
    return db.fetch(
        conn,
        db.query(conn, QUERIES, "kb_similar_model"),
        {"embedding": _vector(vector), "model": model, "dim": len(vector), "target_id": target_id, "limit": limit},
        SimilarRecommendation,
    )
