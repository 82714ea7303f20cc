-- Runs still "running" while we hold the audit lock belong to an auditor that died: mark them failed.
UPDATE pgarch.audit_runs
SET status = 'failed', finished_at = now(),
    error = 'interrupted: the auditor stopped before finishing (killed or crashed)'
WHERE status = 'running'
RETURNING run_id::text AS run_id
