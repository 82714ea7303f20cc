-- The snapshot that opens the audit window: the newest one at least a week old, else the oldest one
-- at least min_age old; only snapshots taken after the last pg_stat_statements reset qualify.
SELECT s.snapshot_id AS snapshot_id, s.taken_at AS taken_at, s.kind AS kind
FROM pgarch.pgss_snapshots s
WHERE s.target_id = %(target_id)s
  AND s.taken_at <= %(now)s - %(min_age)s::interval
  AND (%(stats_reset)s::timestamptz IS NULL OR s.taken_at >= %(stats_reset)s::timestamptz)
ORDER BY (s.taken_at <= %(now)s - %(window)s::interval) DESC,
         CASE WHEN s.taken_at <= %(now)s - %(window)s::interval THEN s.taken_at END DESC,
         s.taken_at ASC
LIMIT 1
