-- Nearest past recommendations by cosine similarity in one embedding model's space (model and dimension
-- both match: vectors of different models are never compared).
SELECT r.recommendation_id AS recommendation_id, r.fingerprint AS fingerprint, r.query AS query, r.type AS type,
       r.sql AS sql, r.status AS status, r.action AS action, r.confidence AS confidence,
       r.gain_percent AS gain_percent, r.worth_applying AS worth_applying, r.created_at AS created_at,
       r.run_id::text AS run_id, (1 - (e.embedding <=> %(embedding)s::vector))::float8 AS similarity
FROM pgarch.model_embeddings e
JOIN pgarch.recommendations r ON r.recommendation_id = e.recommendation_id
WHERE e.model = %(model)s AND e.dim = %(dim)s
  AND (%(target_id)s::bigint IS NULL OR r.target_id = %(target_id)s::bigint)
ORDER BY e.embedding <=> %(embedding)s::vector
LIMIT %(limit)s
