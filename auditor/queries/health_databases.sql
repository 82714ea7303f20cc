-- The daily health record's databases: size and cache counters.
SELECT d.datname AS datname, pg_catalog.pg_database_size(d.oid)::bigint AS size_bytes,
       COALESCE(s.blks_hit, 0)::bigint AS blks_hit, COALESCE(s.blks_read, 0)::bigint AS blks_read
FROM pg_catalog.pg_database d
LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
WHERE d.datallowconn AND NOT d.datistemplate
ORDER BY d.datname
