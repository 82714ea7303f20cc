-- Per database (14+: active_time): pg_stat_database and pg_stat_database_conflicts, every scrape. Cluster-wide views, read once
-- per server. Columns as postgres_exporter's stat_database collector reads them (times in ms).
SELECT
    d.oid::bigint AS dbid,
    d.datname AS datname,
    d.datconnlimit AS connection_limit,
    COALESCE(s.numbackends, 0)::bigint AS numbackends,
    COALESCE(s.xact_commit, 0)::bigint AS xact_commit,
    COALESCE(s.xact_rollback, 0)::bigint AS xact_rollback,
    COALESCE(s.blks_read, 0)::bigint AS blks_read,
    COALESCE(s.blks_hit, 0)::bigint AS blks_hit,
    COALESCE(s.tup_returned, 0)::bigint AS tup_returned,
    COALESCE(s.tup_fetched, 0)::bigint AS tup_fetched,
    COALESCE(s.tup_inserted, 0)::bigint AS tup_inserted,
    COALESCE(s.tup_updated, 0)::bigint AS tup_updated,
    COALESCE(s.tup_deleted, 0)::bigint AS tup_deleted,
    COALESCE(s.conflicts, 0)::bigint AS conflicts,
    COALESCE(s.temp_files, 0)::bigint AS temp_files,
    COALESCE(s.temp_bytes, 0)::bigint AS temp_bytes,
    COALESCE(s.deadlocks, 0)::bigint AS deadlocks,
    COALESCE(s.blk_read_time, 0)::float8 AS blk_read_time,
    COALESCE(s.blk_write_time, 0)::float8 AS blk_write_time,
    extract(epoch FROM s.stats_reset)::float8 AS stats_reset,
    COALESCE(s.active_time, 0)::float8 AS active_time,
    COALESCE(c.confl_tablespace, 0)::bigint AS confl_tablespace,
    COALESCE(c.confl_lock, 0)::bigint AS confl_lock,
    COALESCE(c.confl_snapshot, 0)::bigint AS confl_snapshot,
    COALESCE(c.confl_bufferpin, 0)::bigint AS confl_bufferpin,
    COALESCE(c.confl_deadlock, 0)::bigint AS confl_deadlock
FROM pg_catalog.pg_database d
LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
LEFT JOIN pg_catalog.pg_stat_database_conflicts c ON c.datid = d.oid
WHERE d.datallowconn AND NOT d.datistemplate
ORDER BY d.datname
