-- Applied recommendations with their measured gain, newest first: the report's "applied optimisations".
SELECT r.recommendation_id, r.sql, r.gain_percent, r.status_changed_at AS applied_at, r.query
FROM pgarch.recommendations r
WHERE r.status = 'applied' AND r.status_changed_at >= now() - make_interval(days => %(days)s)
ORDER BY r.status_changed_at DESC
