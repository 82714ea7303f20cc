-- The admin API's and the CLI's list of recommendations, newest first, optionally of one status
-- (GET /admin/database/optimizations?status=, pg-architect recommendations list), with their outcome.
SELECT r.recommendation_id, r.run_id::text AS run_id, r.created_at, r.type, r.sql, r.rollback_sql, r.reasoning,
       r.confidence, r.source, r.gain_percent, r.worth_applying, r.action, r.pr_url, r.status, r.query,
       r.fingerprint, r.status_changed_at, r.applied_at, r.applied_index, r.decision, r.decided_by, r.decided_at,
       r.decision_reason, o.result AS outcome, o.before_mean_ms, o.after_mean_ms, o.measured_gain_percent,
       o.time_saved_ms, o.provisional, o.verified_at, o.dropped_at, o.plan_note
FROM pgarch.recommendations AS r
LEFT JOIN pgarch.recommendation_outcomes AS o USING (recommendation_id)
WHERE (%(status)s::text IS NULL OR r.status = %(status)s)
  AND (%(recommendation_id)s::bigint IS NULL OR r.recommendation_id = %(recommendation_id)s)
  AND (%(run_id)s::uuid IS NULL OR r.run_id = %(run_id)s::uuid)
ORDER BY r.created_at DESC, r.recommendation_id DESC
LIMIT %(limit)s OFFSET %(offset)s
