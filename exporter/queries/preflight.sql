-- What `pg-architect check` verifies on the audited server, in one row.
SELECT
    pg_catalog.current_setting('server_version_num')::integer AS server_version_num,
    pg_catalog.current_setting('server_version') AS server_version,
    -- pg_settings hides what the role may not see (no pg_monitor): NULL then, never an error.
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'shared_preload_libraries')
        AS shared_preload_libraries,
    pg_catalog.current_setting('compute_query_id', true) AS compute_query_id,
    pg_catalog.current_setting('track_io_timing') AS track_io_timing,
    (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS is_superuser,
    pg_catalog.pg_has_role(current_user, 'pg_monitor', 'USAGE') AS has_pg_monitor,
    (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') AS pgss_version,
    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'pg_stat_statements')
        AS pgss_available,
    current_user AS role_name,
    pg_catalog.current_database() AS datname,
    NULL::integer AS reserved_connections,
    NULL::boolean AS can_use_reserved
