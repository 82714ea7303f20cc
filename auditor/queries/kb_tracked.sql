-- Recommendations whose lifecycle is still moving for one target (the catalog, PRs and outcomes follow them).
SELECT r.recommendation_id, r.target_id, r.status, r.type, r.sql, r.fingerprint, r.query, r.pr_url, r.gain_percent,
       r.index_signature, r.absent_checked_at, r.applied_at, r.applied_index, r.created_at, r.kind, r.family,
       r.measurement ->> 'plan_after' AS plan_after
FROM pgarch.recommendations r
WHERE r.target_id = %(target_id)s AND r.worth_applying
  AND r.status IN ('pending', 'pr_open', 'merged', 'applied')
ORDER BY r.recommendation_id
