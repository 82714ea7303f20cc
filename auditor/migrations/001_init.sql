-- pg-architect knowledge base, version 1.
-- Everything lives in schema pgarch. The exporter reads audit_runs, recommendations (KPIs);
-- the auditor owns and migrates the schema.
CREATE EXTENSION IF NOT EXISTS vector;

-- CREATE SCHEMA checks the database's CREATE privilege even with IF NOT EXISTS; a role that only owns an
-- existing pgarch (docs/security.md) has none, so create it only when it is missing.
DO $$BEGIN
    IF pg_catalog.to_regnamespace('pgarch') IS NULL THEN
        CREATE SCHEMA pgarch;
    END IF;
END$$;

-- Which server and database a row describes: the knowledge base may serve several.
CREATE TABLE pgarch.targets (
    target_id      bigserial PRIMARY KEY,
    system_identifier text NOT NULL,       -- pg_control_system().system_identifier
    datname        text NOT NULL,
    server_version integer NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (system_identifier, datname)
);

CREATE TABLE pgarch.audit_runs (
    run_id         uuid PRIMARY KEY,
    target_id      bigint REFERENCES pgarch.targets,
    trigger        text NOT NULL DEFAULT 'manual' CHECK (trigger IN ('manual', 'schedule', 'api', 'demo')),
    dry_run        boolean NOT NULL DEFAULT false,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    status         text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    error          text,
    window_from    timestamptz,
    window_to      timestamptz,
    window_source  text CHECK (window_source IN ('snapshot-delta', 'cumulative')),
    slow_queries   integer NOT NULL DEFAULT 0,
    recommended    integer NOT NULL DEFAULT 0,
    prs_created    integer NOT NULL DEFAULT 0,
    manual_review  integer NOT NULL DEFAULT 0,
    avg_confidence double precision NOT NULL DEFAULT 0,
    avg_gain_percent double precision NOT NULL DEFAULT 0,
    stuck          boolean NOT NULL DEFAULT false,
    report         jsonb
);
CREATE INDEX audit_runs_started_idx ON pgarch.audit_runs (started_at DESC);

-- Cumulative pg_stat_statements snapshots: the daily snapshot and each audit take one, so an audit's
-- window is a delta between two of them.
CREATE TABLE pgarch.pgss_snapshots (
    snapshot_id    bigserial PRIMARY KEY,
    target_id      bigint REFERENCES pgarch.targets,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL CHECK (kind IN ('daily', 'audit', 'manual')),
    stats_reset    timestamptz,
    dealloc        bigint
);
CREATE INDEX pgss_snapshots_taken_idx ON pgarch.pgss_snapshots (target_id, taken_at DESC);

CREATE TABLE pgarch.pgss_snapshot_rows (
    snapshot_id    bigint NOT NULL REFERENCES pgarch.pgss_snapshots ON DELETE CASCADE,
    userid         oid NOT NULL,
    dbid           oid NOT NULL,
    queryid        bigint NOT NULL,
    toplevel       boolean NOT NULL,
    fingerprint    text,
    calls          bigint NOT NULL,
    total_exec_ms  double precision NOT NULL,
    stddev_exec_ms double precision NOT NULL,
    min_exec_ms    double precision NOT NULL,
    max_exec_ms    double precision NOT NULL,
    rows           bigint NOT NULL,
    shared_blks_hit  bigint NOT NULL,
    shared_blks_read bigint NOT NULL,
    stats_since    timestamptz,
    query          text,
    PRIMARY KEY (snapshot_id, userid, dbid, queryid, toplevel)
);

CREATE TABLE pgarch.slow_queries (
    slow_query_id  bigserial PRIMARY KEY,
    run_id         uuid NOT NULL REFERENCES pgarch.audit_runs ON DELETE CASCADE,
    fingerprint    text NOT NULL,
    queryids       bigint[] NOT NULL,
    query          text NOT NULL,
    calls          bigint NOT NULL,
    mean_ms        double precision NOT NULL,
    total_ms       double precision NOT NULL,
    status         text NOT NULL CHECK (status IN ('recommended', 'skipped', 'no_recommendation', 'error')),
    skip_reason    text,
    explanation    jsonb
);
CREATE INDEX slow_queries_run_idx ON pgarch.slow_queries (run_id);
CREATE INDEX slow_queries_fingerprint_idx ON pgarch.slow_queries (fingerprint);

-- Every recommendation, accepted or not, with its measurement and an embedding for look-ups.
CREATE TABLE pgarch.recommendations (
    recommendation_id bigserial PRIMARY KEY,
    run_id         uuid NOT NULL REFERENCES pgarch.audit_runs ON DELETE CASCADE,
    slow_query_id  bigint REFERENCES pgarch.slow_queries ON DELETE CASCADE,
    target_id      bigint REFERENCES pgarch.targets,
    fingerprint    text NOT NULL,
    query          text NOT NULL,
    type           text NOT NULL CHECK (type IN ('index', 'rewrite', 'partition', 'cache', 'settings', 'drop_index')),
    sql            text NOT NULL,
    rollback_sql   text,
    reasoning      text NOT NULL,
    confidence     double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    source         text NOT NULL CHECK (source IN ('advisor', 'llm')),
    measurement    jsonb,
    gain_percent   double precision,
    worth_applying boolean NOT NULL DEFAULT false,
    action         text NOT NULL CHECK (action IN ('pr_merge', 'pr_review', 'log', 'flag')),
    pr_url         text,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'applied', 'rejected', 'superseded', 'not_worth')),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    embedding      vector(256) NOT NULL,
    embedding_model text NOT NULL DEFAULT 'structure-v1'
);
CREATE INDEX recommendations_embedding_idx ON pgarch.recommendations USING hnsw (embedding vector_cosine_ops);
CREATE INDEX recommendations_fingerprint_idx ON pgarch.recommendations (fingerprint);
CREATE INDEX recommendations_run_idx ON pgarch.recommendations (run_id);

CREATE TABLE pgarch.health_snapshots (
    health_snapshot_id bigserial PRIMARY KEY,
    target_id      bigint REFERENCES pgarch.targets,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    metrics        jsonb NOT NULL
);
CREATE INDEX health_snapshots_taken_idx ON pgarch.health_snapshots (target_id, taken_at DESC);
