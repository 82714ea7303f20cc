-- A new recommendation for a statement replaces the ones still waiting for it.
WITH old AS (
    SELECT r.recommendation_id, r.status FROM pgarch.recommendations r
    WHERE r.target_id = %(target_id)s AND r.fingerprint = %(fingerprint)s
      AND r.recommendation_id <> %(new_id)s AND r.status IN ('pending', 'pr_open')
    FOR UPDATE
), changed AS (
    UPDATE pgarch.recommendations r SET status = 'superseded', status_changed_at = now()
    FROM old WHERE r.recommendation_id = old.recommendation_id
    RETURNING r.recommendation_id
)
INSERT INTO pgarch.recommendation_events (recommendation_id, at, from_status, to_status, source, actor, reason)
SELECT old.recommendation_id, now(), old.status, 'superseded', 'audit', NULL,
       'recommendation #' || %(new_id)s::text || ' replaces it'
FROM old JOIN changed USING (recommendation_id)
