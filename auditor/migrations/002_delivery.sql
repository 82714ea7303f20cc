-- pg-architect knowledge base, version 2: where each recommendation was delivered, and failed deliveries.

-- A recommendation's migration, committed to a branch: of a GitHub repository (with its pull request) or of
-- a local git repository (github.local_repo, when GitHub is not configured). One per recommendation and
-- channel: a rerun finds it here (and on the remote) and opens nothing twice.
CREATE TABLE pgarch.deliveries (
    delivery_id       bigserial PRIMARY KEY,
    recommendation_id bigint NOT NULL REFERENCES pgarch.recommendations ON DELETE CASCADE,
    channel           text NOT NULL CHECK (channel IN ('github', 'local_git')),
    repo              text NOT NULL,          -- owner/name, or the local repository's path
    base_branch       text NOT NULL,
    branch            text NOT NULL,
    commit_sha        text,
    migration_format  text NOT NULL,
    migration_path    text NOT NULL,          -- the forward migration's path inside the repository
    pr_number         integer,
    pr_url            text,
    -- committed: on a branch, no pull request (local); pr_open; merged; closed: closed without merge.
    state             text NOT NULL CHECK (state IN ('committed', 'pr_open', 'merged', 'closed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (recommendation_id, channel)
);
CREATE INDEX deliveries_state_idx ON pgarch.deliveries (state);

-- A failed delivery (GitHub, git, Slack, Grafana, Pushgateway, LLM): logged, counted here, never failing an
-- audit. The exporter serves the counts as pgarch_integration_failures_total{integration}.
CREATE TABLE pgarch.integration_failures (
    failure_id   bigserial PRIMARY KEY,
    target_id    bigint REFERENCES pgarch.targets,
    run_id       uuid REFERENCES pgarch.audit_runs ON DELETE SET NULL,
    integration  text NOT NULL CHECK (integration IN ('github', 'git', 'slack', 'grafana', 'pushgateway', 'llm')),
    error        text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integration_failures_target_idx ON pgarch.integration_failures (target_id, integration);
