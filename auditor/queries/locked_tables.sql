-- Tables of this database that another session holds an ACCESS EXCLUSIVE lock on: reading their size would
-- wait for the lock, so the health checks leave them out (and the report says so).
SELECT DISTINCT n.nspname || '.' || c.relname AS qualified
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_class c ON c.oid = l.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  AND l.mode = 'AccessExclusiveLock' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
  AND c.relkind IN ('r', 'p', 'm', 'i')
ORDER BY 1
