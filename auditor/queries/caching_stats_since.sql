-- Since when this database's table statistics count (cumulative write rates are over this span).
SELECT COALESCE(d.stats_reset, pg_catalog.pg_postmaster_start_time()) AS since
FROM pg_catalog.pg_stat_database d
WHERE d.datname = pg_catalog.current_database()
