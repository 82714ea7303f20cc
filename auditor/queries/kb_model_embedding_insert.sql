-- A recommendation's embedding from an embedding model; the dimension is stored with it.
INSERT INTO pgarch.model_embeddings (recommendation_id, model, dim, embedding)
VALUES (%(recommendation_id)s, %(model)s, %(dim)s, %(embedding)s::vector)
ON CONFLICT (recommendation_id, model) DO UPDATE SET dim = EXCLUDED.dim, embedding = EXCLUDED.embedding,
    created_at = now()
