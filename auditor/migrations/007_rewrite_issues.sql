-- pg-architect knowledge base, version 7: a rewrite is delivered as a GitHub issue, never as a migration
-- (auditor.delivery.issues). Its delivery row: channel github_issue, branch = the issue's marker key
-- (rewrite/<fingerprint>), migration_path = the call site found in the repository (or ''), state issue_open.
ALTER TABLE pgarch.deliveries DROP CONSTRAINT deliveries_channel_check;
ALTER TABLE pgarch.deliveries ADD CONSTRAINT deliveries_channel_check
    CHECK (channel IN ('github', 'local_git', 'github_issue'));
ALTER TABLE pgarch.deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE pgarch.deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('committed', 'pr_open', 'merged', 'closed', 'issue_open'));
