-- pg-architect knowledge base, version 3: the recommendation lifecycle and verified outcomes.
--
-- pending -> pr_open -> merged -> applied, or rejected / superseded / obsolete; every transition is an
-- event with its time, source (github, git, catalog, person, audit), who and why. An applied
-- recommendation gets an outcome: the statement's figures before and after, measured from the stored
-- pg_stat_statements snapshots, against the gain that was predicted.

ALTER TABLE pgarch.recommendations DROP CONSTRAINT IF EXISTS recommendations_status_check;
ALTER TABLE pgarch.recommendations ADD CONSTRAINT recommendations_status_check CHECK (status IN
    ('pending', 'pr_open', 'merged', 'applied', 'rejected', 'superseded', 'obsolete', 'not_worth'));

ALTER TABLE pgarch.recommendations
    -- What the index is, name aside: "<schema>.<table> USING <method> (<keys>) [WHERE ...]", as
    -- pg_get_indexdef prints it for the audited server (filled the first time the catalog is checked).
    ADD COLUMN index_signature text,
    -- The recommendation's kind, for learning from outcomes: index shape, measurement method, table size band.
    ADD COLUMN kind text,
    -- The statement's family: its kind of statement and the tables it reads.
    ADD COLUMN family text,
    -- The last time the catalog was seen without the index (the "before" window ends there).
    ADD COLUMN absent_checked_at timestamptz,
    ADD COLUMN applied_at timestamptz,
    ADD COLUMN applied_index text,
    -- A person's decision (CLI or admin API), besides the status it leads to.
    ADD COLUMN decision text CHECK (decision IN ('accepted', 'rejected')),
    ADD COLUMN decided_by text,
    ADD COLUMN decided_at timestamptz,
    ADD COLUMN decision_reason text;

UPDATE pgarch.recommendations SET absent_checked_at = created_at WHERE absent_checked_at IS NULL;

CREATE INDEX recommendations_open_idx ON pgarch.recommendations (target_id, status)
    WHERE status IN ('pending', 'pr_open', 'merged', 'applied');

CREATE TABLE pgarch.recommendation_events (
    event_id          bigserial PRIMARY KEY,
    recommendation_id bigint NOT NULL REFERENCES pgarch.recommendations ON DELETE CASCADE,
    at                timestamptz NOT NULL DEFAULT now(),
    from_status       text,
    to_status         text NOT NULL,
    source            text NOT NULL CHECK (source IN ('github', 'git', 'catalog', 'person', 'audit')),
    actor             text,
    reason            text
);
CREATE INDEX recommendation_events_rec_idx ON pgarch.recommendation_events (recommendation_id, at);

CREATE TABLE pgarch.recommendation_outcomes (
    recommendation_id bigint PRIMARY KEY REFERENCES pgarch.recommendations ON DELETE CASCADE,
    result            text NOT NULL CHECK (result IN ('improved', 'improved_less', 'no_change', 'regressed')),
    before_from       timestamptz,
    before_to         timestamptz NOT NULL,
    before_calls      bigint NOT NULL,
    before_mean_ms    double precision NOT NULL,
    before_rows_per_call double precision,
    after_from        timestamptz NOT NULL,
    after_to          timestamptz NOT NULL,
    after_calls       bigint NOT NULL,
    after_mean_ms     double precision NOT NULL,
    after_rows_per_call double precision,
    -- The after window began before the index was seen (it holds some calls from before): the gain is a
    -- lower bound until a snapshot taken after the detection gives a clean window.
    provisional       boolean NOT NULL DEFAULT false,
    predicted_gain_percent double precision,
    measured_gain_percent  double precision NOT NULL,
    time_saved_ms     double precision NOT NULL DEFAULT 0,
    plan_note         text,
    verified_at       timestamptz NOT NULL DEFAULT now(),
    dropped_at        timestamptz
);

-- Plans seen for slow statements (the measurement's plan before), so a regression can say what changed.
CREATE TABLE pgarch.statement_plans (
    target_id      bigint REFERENCES pgarch.targets,
    fingerprint    text NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    mean_ms        double precision,
    plan           text NOT NULL
);
CREATE INDEX statement_plans_fp_idx ON pgarch.statement_plans (target_id, fingerprint, taken_at DESC);

-- The similarity look-up filters on model and target; those filters would make the planner leave the
-- HNSW index (a filtered scan returned too few rows), so kb_similar.sql runs with pgvector's iterative
-- index scan, which keeps reading the graph until enough rows pass the filters.
