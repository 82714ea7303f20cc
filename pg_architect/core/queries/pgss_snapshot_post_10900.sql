-- pg_stat_statements of the connected database only, top-level statements (1.9-1.10).
-- The text goes to the knowledge base only after the auditor re-deparses it without literals.
SELECT s.userid::bigint AS userid, s.dbid::bigint AS dbid, s.queryid AS queryid, s.toplevel AS toplevel,
       s.calls AS calls, s.total_exec_time AS total_ms, s.stddev_exec_time AS stddev_ms,
       s.min_exec_time AS min_ms, s.max_exec_time AS max_ms, s.rows AS rows,
       s.shared_blks_hit AS shared_blks_hit, s.shared_blks_read AS shared_blks_read,
       NULL::timestamptz AS stats_since, s.query AS query
FROM {pgss}.pg_stat_statements(true) s
WHERE s.queryid IS NOT NULL AND s.calls > 0 AND s.toplevel
  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
