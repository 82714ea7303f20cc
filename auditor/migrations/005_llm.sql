-- pg-architect knowledge base: the LLM architect (issue 19).
-- What each audit spent on the model (the exporter sums these into pgarch_llm_* counters), every model
-- proposal with what the checks made of it, and embeddings from an embedding model: one row per
-- (recommendation, model), with the dimension, so vectors of different models are never compared.

CREATE TABLE IF NOT EXISTS pgarch.llm_usage (
    run_id         uuid PRIMARY KEY REFERENCES pgarch.audit_runs ON DELETE CASCADE,
    target_id      bigint REFERENCES pgarch.targets,
    model          text NOT NULL,
    requests       jsonb NOT NULL,   -- {"ok": n, "timeout": n, ...}
    tokens         jsonb NOT NULL,   -- {"prompt": n, "completion": n, "embedding": n}
    latency_seconds_sum   double precision NOT NULL DEFAULT 0,
    latency_seconds_count bigint NOT NULL DEFAULT 0,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS llm_usage_target_idx ON pgarch.llm_usage (target_id);

CREATE TABLE IF NOT EXISTS pgarch.llm_proposals (
    proposal_id    bigserial PRIMARY KEY,
    run_id         uuid NOT NULL REFERENCES pgarch.audit_runs ON DELETE CASCADE,
    target_id      bigint REFERENCES pgarch.targets,
    fingerprint    text NOT NULL,
    model          text NOT NULL,
    type           text NOT NULL,
    sql            text,
    status         text NOT NULL CHECK (status IN ('verified', 'not_better', 'refused')),
    reason         text NOT NULL,
    model_confidence double precision,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS llm_proposals_run_idx ON pgarch.llm_proposals (run_id);

CREATE TABLE IF NOT EXISTS pgarch.model_embeddings (
    recommendation_id bigint NOT NULL REFERENCES pgarch.recommendations ON DELETE CASCADE,
    model          text NOT NULL,
    dim            integer NOT NULL CHECK (dim > 0),
    embedding      vector NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recommendation_id, model),
    CHECK (vector_dims(embedding) = dim)
);
CREATE INDEX IF NOT EXISTS model_embeddings_model_idx ON pgarch.model_embeddings (model, dim);
