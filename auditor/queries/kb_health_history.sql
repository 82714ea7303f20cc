-- Daily health records of one target over the last N days, oldest first (growth forecasts fit them).
SELECT taken_at, metrics FROM pgarch.health_snapshots
WHERE target_id = %s AND taken_at > now() - %s * interval '1 day'
ORDER BY taken_at
