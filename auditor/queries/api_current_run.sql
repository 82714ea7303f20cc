-- The run an audit started by the admin API created: the daemon starts one audit at a time, so the first
-- run with this trigger since the request (clock of the knowledge base, not ours) is it.
SELECT run_id::text FROM pgarch.audit_runs
WHERE trigger = %(trigger)s AND started_at >= %(since)s
ORDER BY started_at LIMIT 1
