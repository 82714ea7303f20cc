-- What `pg-architect check` verifies for audits on the audited server: hypothetical indexes, read access to
-- the tables, and whether the server accepts writes (a rolled-back build needs them; hypopg does not).
SELECT
    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'hypopg') AS hypopg_available,
    (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'hypopg') AS hypopg_version,
    pg_catalog.pg_has_role(current_user, 'pg_read_all_data', 'USAGE') AS reads_all_data,
    (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgarch')
        AND n.nspname NOT LIKE 'pg\_%%') AS tables,
    (SELECT array_agg(n.nspname || '.' || c.relname ORDER BY 1) FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgarch')
        AND n.nspname NOT LIKE 'pg\_%%' AND NOT pg_catalog.has_table_privilege(c.oid, 'SELECT')) AS unreadable,
    pg_catalog.pg_is_in_recovery() OR pg_catalog.current_setting('default_transaction_read_only')::boolean
        AS read_only,
    current_user AS role_name
