-- Applied recommendations of the last days with their measured gain and their statement's numbers in the
-- audit that found them, newest first: the report's "applied optimisations" and the time they save.
SELECT r.recommendation_id, r.sql, r.gain_percent, r.status_changed_at AS applied_at, r.query,
       s.calls, s.mean_ms
FROM pgarch.recommendations r
LEFT JOIN pgarch.slow_queries s ON s.slow_query_id = r.slow_query_id
WHERE r.status = 'applied' AND r.status_changed_at >= now() - make_interval(days => %(days)s)
ORDER BY r.status_changed_at DESC
