-- pg_stat_statements snapshots older than the retention (outcomes keep their own figures).
WITH gone AS (
    DELETE FROM pgarch.pgss_snapshots s WHERE s.taken_at < %(before)s RETURNING 1
) SELECT count(*)::integer FROM gone
