-- Statements of this database that spill sorts and hashes to temporary files (cumulative since the
-- statistics began), the heaviest first.
SELECT s.queryid AS queryid, sum(s.calls)::bigint AS calls, sum(s.temp_blks_written)::bigint AS temp_blks_written,
       min(s.query) AS query
FROM {pgss}.pg_stat_statements s
WHERE s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  AND s.toplevel AND s.queryid IS NOT NULL AND s.temp_blks_written > 0 AND s.calls > 0
GROUP BY s.queryid
ORDER BY sum(s.temp_blks_written) DESC
LIMIT 20
