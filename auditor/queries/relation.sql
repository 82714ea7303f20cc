-- One relation by (schema, name); schema NULL means "first on the search_path", as the statement sees it.
SELECT c.oid::int8 AS relid, n.nspname::text AS schema_name, c.relname::text AS table_name,
       c.relkind::text AS relkind
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass(
    CASE WHEN %(schema)s::text IS NULL THEN pg_catalog.quote_ident(%(name)s)
         ELSE pg_catalog.quote_ident(%(schema)s) || '.' || pg_catalog.quote_ident(%(name)s) END)
