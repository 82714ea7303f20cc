-- pg_stat_statements 1.11+ (PostgreSQL 17+): stats_since tells when a row was (re)created.
SELECT
    s.userid::bigint AS userid, s.dbid::bigint AS dbid, s.queryid AS queryid, s.toplevel AS toplevel,
    s.calls AS calls, s.total_exec_time AS total_ms, s.stddev_exec_time AS stddev_ms,
    s.min_exec_time AS min_ms, s.max_exec_time AS max_ms,
    extract(epoch FROM s.stats_since)::float8 AS stats_since
FROM {pgss}.pg_stat_statements(false) s
WHERE s.queryid IS NOT NULL AND s.calls > 0 AND s.toplevel
