-- Deliveries, newest first, optionally only those in the given states, with what they deliver.
SELECT d.delivery_id, d.recommendation_id, d.channel, d.repo, d.base_branch, d.branch, d.commit_sha,
       d.migration_format, d.migration_path, d.pr_number, d.pr_url, d.state, d.created_at, d.updated_at,
       r.run_id::text AS run_id, r.sql, r.confidence, r.action, r.gain_percent, r.query
FROM pgarch.deliveries d
JOIN pgarch.recommendations r ON r.recommendation_id = d.recommendation_id
WHERE (%(states)s::text[] IS NULL OR d.state = ANY(%(states)s::text[]))
  AND (%(run_id)s::uuid IS NULL OR r.run_id = %(run_id)s::uuid)
ORDER BY d.created_at DESC, d.delivery_id DESC
LIMIT %(limit)s
