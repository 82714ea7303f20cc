SELECT run_id::text FROM pgarch.audit_runs
WHERE %(status)s::text IS NULL OR status = %(status)s
ORDER BY started_at DESC LIMIT 1
