-- Recommendations without an embedding of this model (after a switch of models): to be re-embedded.
SELECT r.recommendation_id AS recommendation_id, r.query AS query
FROM pgarch.recommendations r
WHERE NOT EXISTS (SELECT 1 FROM pgarch.model_embeddings e
                  WHERE e.recommendation_id = r.recommendation_id AND e.model = %(model)s)
ORDER BY r.recommendation_id DESC
LIMIT %(limit)s
