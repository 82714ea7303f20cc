SELECT run_id::text AS run_id, status, started_at, finished_at, error, report, target_id
FROM pgarch.audit_runs WHERE run_id::text = %s
