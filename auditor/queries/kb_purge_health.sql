WITH gone AS (
    DELETE FROM pgarch.health_snapshots h WHERE h.taken_at < %(before)s RETURNING 1
) SELECT count(*)::integer FROM gone
