-- pg_stat_statements 1.9-1.10 (PostgreSQL 14-16): toplevel rows only, so nested statements count once.
SELECT
    s.userid::bigint AS userid, s.dbid::bigint AS dbid, s.queryid AS queryid, s.toplevel AS toplevel,
    s.calls AS calls, s.total_exec_time AS total_ms, s.stddev_exec_time AS stddev_ms,
    s.min_exec_time AS min_ms, s.max_exec_time AS max_ms,
    NULL::float8 AS stats_since
FROM {pgss}.pg_stat_statements(false) s
WHERE s.queryid IS NOT NULL AND s.calls > 0 AND s.toplevel
