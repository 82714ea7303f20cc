-- Tables whose dead rows pile up: many dead tuples against the live ones, and no autovacuum for a while.
SELECT n.nspname || '.' || c.relname AS qualified, s.n_live_tup::bigint AS live, s.n_dead_tup::bigint AS dead,
       GREATEST(s.last_autovacuum, s.last_vacuum) AS last_vacuum,
       (s.n_tup_upd + s.n_tup_del)::bigint AS changes
FROM pg_catalog.pg_stat_user_tables s
JOIN pg_catalog.pg_class c ON c.oid = s.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE s.n_dead_tup >= %(min_dead)s
  AND s.n_dead_tup > %(ratio)s * GREATEST(s.n_live_tup, 1)
  AND COALESCE(GREATEST(s.last_autovacuum, s.last_vacuum), '-infinity') < now() - %(stale)s * interval '1 hour'
  AND n.nspname NOT IN ('pgarch', 'pg_catalog', 'information_schema')
ORDER BY s.n_dead_tup DESC
LIMIT 10
