-- One row: the server's identity and the settings the exporter reads (reserved_connections is 16+).
SELECT
    pg_catalog.current_setting('server_version_num')::integer AS server_version_num,
    pg_catalog.current_setting('max_connections')::integer AS max_connections,
    pg_catalog.current_setting('superuser_reserved_connections')::integer AS superuser_reserved_connections,
    pg_catalog.current_setting('reserved_connections')::integer AS reserved_connections,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'data_directory') AS data_directory,
    pg_catalog.current_database() AS current_datname,
    (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'pg_stat_statements') AS pgss_schema,
    (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') AS pgss_version,
    -- pg_settings hides what the role may not see (no pg_monitor): NULL then, never an error.
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'shared_preload_libraries')
        AS shared_preload_libraries,
    (SELECT c.system_identifier::text FROM pg_catalog.pg_control_system() c) AS system_identifier,
    (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'client backend')::integer
        AS client_backends,
    pg_catalog.version() AS version,
    pg_catalog.current_setting('server_version') AS server_version,
    extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8 AS postmaster_start_time,
    -- Settings change only when the configuration is (re)loaded: the exporter re-reads them when this moves.
    extract(epoch FROM pg_catalog.pg_conf_load_time())::float8 AS conf_load_time,
    -- Whether the auditor's knowledge base is in this database (it creates it on its first run).
    pg_catalog.to_regclass('pgarch.audit_runs') IS NOT NULL
        AND pg_catalog.to_regclass('pgarch.recommendations') IS NOT NULL
        AND pg_catalog.to_regclass('pgarch.targets') IS NOT NULL AS kb_present
