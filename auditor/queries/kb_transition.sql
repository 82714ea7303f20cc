-- One lifecycle transition: the status changes only from one of the expected statuses, and the event
-- (time, source, who, why) is written with it. Returns the previous status (no row: nothing changed).
WITH old AS (
    SELECT r.recommendation_id, r.status FROM pgarch.recommendations r
    WHERE r.recommendation_id = %(recommendation_id)s AND r.status = ANY(%(from_statuses)s::text[])
    FOR UPDATE
), changed AS (
    UPDATE pgarch.recommendations r
    SET status = %(to_status)s, status_changed_at = %(at)s,
        applied_at = CASE WHEN %(to_status)s = 'applied' THEN %(at)s ELSE r.applied_at END
    FROM old WHERE r.recommendation_id = old.recommendation_id
    RETURNING r.recommendation_id
)
INSERT INTO pgarch.recommendation_events (recommendation_id, at, from_status, to_status, source, actor, reason)
SELECT old.recommendation_id, %(at)s, old.status, %(to_status)s, %(source)s, %(actor)s, %(reason)s
FROM old JOIN changed USING (recommendation_id)
RETURNING from_status
