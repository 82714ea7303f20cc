-- Daily health records of every target of the last days, oldest first: the report page's trends.
SELECT h.taken_at, h.metrics, t.datname
FROM pgarch.health_snapshots h
LEFT JOIN pgarch.targets t ON t.target_id = h.target_id
WHERE h.taken_at >= now() - make_interval(days => %(days)s)
ORDER BY h.taken_at
