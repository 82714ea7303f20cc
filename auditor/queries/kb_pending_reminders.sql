-- Recommendations waiting for a decision for longer than the configured age, oldest first.
SELECT r.recommendation_id, r.status, r.created_at, r.sql, r.action,
       (extract(epoch FROM %(now)s::timestamptz - r.created_at) / 86400)::float8 AS age_days
FROM pgarch.recommendations r
WHERE r.target_id = %(target_id)s AND r.worth_applying AND r.status IN ('pending', 'pr_open')
  AND r.decision IS DISTINCT FROM 'accepted'
  AND r.created_at <= %(now)s::timestamptz - %(older_than)s::interval
ORDER BY r.created_at
