-- What `pg-architect check` verifies for audits on the audited server: hypothetical indexes.
SELECT
    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = 'hypopg') AS hypopg_available,
    (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'hypopg') AS hypopg_version
