-- Who and where the audited database is.
SELECT (SELECT c.system_identifier::text FROM pg_catalog.pg_control_system() c) AS system_identifier,
       pg_catalog.current_database() AS datname,
       (SELECT d.oid::bigint FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) AS dbid,
       pg_catalog.current_setting('server_version_num')::integer AS server_version_num,
       (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements') AS pgss_schema,
       (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') AS pgss_version,
       (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'hypopg') AS hypopg_version,
       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'hypopg') AS hypopg_available
