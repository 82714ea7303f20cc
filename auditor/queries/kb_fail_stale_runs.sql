-- Runs of this target still "running" while we hold its audit lock belong to an auditor that died: mark them
-- failed. (Other targets' runs may be live in other replicas: never touched here.)
UPDATE pgarch.audit_runs
SET status = 'failed', finished_at = now(),
    error = 'interrupted: the auditor stopped before finishing (killed or crashed)'
WHERE status = 'running' AND target_id = %(target_id)s
RETURNING run_id::text AS run_id
