-- Table sizes for the daily health snapshot (forecasts fit these over time).
SELECT n.nspname AS schema, c.relname AS name, pg_catalog.pg_total_relation_size(c.oid)::bigint AS size_bytes,
       GREATEST(c.reltuples, 0)::float8 AS rows,
       COALESCE(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)::bigint AS writes
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgarch')
  AND n.nspname NOT LIKE 'pg\_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.relation = c.oid AND l.mode = 'AccessExclusiveLock'
                  AND l.granted AND l.pid <> pg_catalog.pg_backend_pid())
ORDER BY size_bytes DESC
LIMIT 200
