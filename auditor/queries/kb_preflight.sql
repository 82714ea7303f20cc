-- What `pg-architect check` verifies on the knowledge base's server, in one row.
SELECT
    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'vector') AS vector_available,
    (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'vector') AS vector_version,
    pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') AS can_create_schema,
    pg_catalog.to_regnamespace('pgarch') IS NOT NULL AS schema_exists,
    (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS is_superuser,
    pg_catalog.current_database() AS datname,
    current_user AS role_name
