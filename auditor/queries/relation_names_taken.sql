-- Which of the given names are already relations (tables, indexes, sequences, views...) in the given schemas.
SELECT n.nspname AS schema, c.relname AS name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s::text[]) AND c.relname = ANY(%(names)s::text[])
