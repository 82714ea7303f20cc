INSERT INTO pgarch.audit_runs (run_id, target_id, trigger, dry_run, status)
VALUES (%(run_id)s, %(target_id)s, %(trigger)s, %(dry_run)s, 'running')
RETURNING started_at
