SELECT r.userid AS userid, r.dbid AS dbid, r.queryid AS queryid, r.toplevel AS toplevel, r.calls AS calls,
       r.total_exec_ms AS total_ms, r.stddev_exec_ms AS stddev_ms, r.min_exec_ms AS min_ms,
       r.max_exec_ms AS max_ms, extract(epoch FROM r.stats_since)::float8 AS stats_since
FROM pgarch.pgss_snapshot_rows r
WHERE r.snapshot_id = %(snapshot_id)s
