-- Several targets in one knowledge base, and several auditor replicas sharing the work: a scheduled job of a
-- target claims its slot here first; the replica whose INSERT wins runs it, the others skip it.
CREATE TABLE pgarch.job_claims (
    target_name text NOT NULL,
    job         text NOT NULL,
    slot        timestamptz NOT NULL,
    claimed_by  text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_name, job, slot)
);
