-- What the reports say about the lifecycle of one target's recommendations: waiting for review, applied
-- this month, verified outcomes, accuracy and time saved.
WITH recs AS (
    SELECT r.* FROM pgarch.recommendations r WHERE r.target_id = %(target_id)s AND r.worth_applying
), waiting AS (
    SELECT * FROM recs WHERE status IN ('pending', 'pr_open') AND decision IS DISTINCT FROM 'accepted'
), outcomes AS (
    SELECT o.* FROM pgarch.recommendation_outcomes o JOIN recs USING (recommendation_id)
)
SELECT (SELECT count(*) FROM waiting)::integer AS pending_review,
       (SELECT extract(epoch FROM %(now)s::timestamptz - min(created_at)) / 86400 FROM waiting)::float8
           AS oldest_pending_days,
       (SELECT count(*) FROM recs WHERE status IN ('pending', 'pr_open', 'merged')
                                    AND decision = 'accepted')::integer AS accepted_waiting,
       (SELECT count(*) FROM recs
        WHERE applied_at >= date_trunc('month', %(now)s::timestamptz)
          AND status = 'applied')::integer AS applied_this_month,
       (SELECT count(*) FROM recs WHERE status = 'applied')::integer AS applied_total,
       (SELECT count(*) FROM outcomes)::integer AS verified,
       (SELECT count(*) FROM outcomes WHERE result = 'improved')::integer AS improved,
       (SELECT count(*) FROM outcomes WHERE result = 'regressed')::integer AS regressed,
       (SELECT avg(measured_gain_percent) FROM outcomes)::float8 AS average_gain_percent,
       COALESCE((SELECT sum(time_saved_ms) FROM outcomes), 0)::float8 / 1000.0 AS time_saved_seconds
