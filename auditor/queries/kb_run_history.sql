-- Finished audit runs of the last weeks, oldest first: the report page's trends.
SELECT r.run_id::text AS run_id, r.started_at, r.finished_at, r.status, r.slow_queries, r.recommended,
       r.prs_created, r.manual_review, r.avg_confidence, r.avg_gain_percent, t.datname
FROM pgarch.audit_runs r
LEFT JOIN pgarch.targets t ON t.target_id = r.target_id
WHERE r.status <> 'running' AND r.started_at >= now() - make_interval(days => %(days)s)
ORDER BY r.started_at
