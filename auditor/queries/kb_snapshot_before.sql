-- The newest snapshot of a target taken at or before a time.
SELECT s.snapshot_id, s.taken_at, s.stats_reset FROM pgarch.pgss_snapshots s
WHERE s.target_id = %(target_id)s AND s.taken_at <= %(at)s
ORDER BY s.taken_at DESC, s.snapshot_id DESC LIMIT 1
