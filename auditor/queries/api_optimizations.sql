-- The admin API's list of recommendations, newest first (GET /admin/database/optimizations).
SELECT r.recommendation_id, r.run_id::text AS run_id, r.created_at, r.type, r.sql, r.rollback_sql, r.reasoning,
       r.confidence, r.source, r.gain_percent, r.worth_applying, r.action, r.pr_url, r.status, r.query,
       r.fingerprint
FROM pgarch.recommendations AS r
ORDER BY r.created_at DESC, r.recommendation_id DESC
LIMIT %(limit)s OFFSET %(offset)s
