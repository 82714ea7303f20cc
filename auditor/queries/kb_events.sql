SELECT e.at, e.from_status, e.to_status, e.source, e.actor, e.reason
FROM pgarch.recommendation_events e
WHERE e.recommendation_id = %(recommendation_id)s
ORDER BY e.at, e.event_id
