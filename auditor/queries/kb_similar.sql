-- Nearest past recommendations by cosine similarity of their structural embeddings. Runs with pgvector's
-- iterative HNSW scan (set by the caller), so the model and target filters do not starve the index scan.
SELECT r.recommendation_id AS recommendation_id, r.fingerprint AS fingerprint, r.query AS query, r.type AS type,
       r.sql AS sql, r.status AS status, r.action AS action, r.confidence AS confidence,
       r.gain_percent AS gain_percent, r.worth_applying AS worth_applying, r.created_at AS created_at,
       r.run_id::text AS run_id, (1 - (r.embedding <=> %(embedding)s::vector))::float8 AS similarity,
       r.decision AS decision, r.decided_at AS decided_at, r.decision_reason AS decision_reason,
       q.mean_ms AS mean_ms, q.calls AS calls, r.kind AS kind
FROM (
    SELECT c.* FROM pgarch.recommendations c
    WHERE c.embedding_model = %(model)s
      AND (%(target_id)s::bigint IS NULL OR c.target_id = %(target_id)s::bigint)
    ORDER BY c.embedding <=> %(embedding)s::vector
    LIMIT %(limit)s
) r
LEFT JOIN pgarch.slow_queries q ON q.slow_query_id = r.slow_query_id
ORDER BY r.embedding <=> %(embedding)s::vector
