-- A run's recommendations that reach the pull-request threshold (pr_merge, pr_review), with their statement.
SELECT r.recommendation_id, r.run_id::text AS run_id, r.target_id, r.fingerprint, r.query, r.type, r.sql,
       r.rollback_sql, r.reasoning, r.confidence, r.action, r.gain_percent, r.measurement,
       s.calls, s.mean_ms, s.total_ms
FROM pgarch.recommendations r
LEFT JOIN pgarch.slow_queries s ON s.slow_query_id = r.slow_query_id
WHERE r.run_id = %(run_id)s::uuid AND r.worth_applying AND r.action IN ('pr_merge', 'pr_review')
ORDER BY r.confidence DESC, r.recommendation_id
