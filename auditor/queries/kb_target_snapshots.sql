-- A target's stored pg_stat_statements snapshots since a time, oldest first (outcome windows use them).
SELECT s.snapshot_id, s.taken_at, s.stats_reset
FROM pgarch.pgss_snapshots s
WHERE s.target_id = %(target_id)s AND s.taken_at >= %(since)s
ORDER BY s.taken_at, s.snapshot_id
