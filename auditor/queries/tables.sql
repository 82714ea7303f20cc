-- The tables a statement reads, by (schema, name); schema NULL means "first on the search_path".
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind,
       pg_catalog.pg_total_relation_size(c.oid)::bigint AS total_bytes,
       pg_catalog.pg_relation_size(c.oid)::bigint AS heap_bytes,
       GREATEST(c.reltuples, 0)::float8 AS reltuples,
       COALESCE(s.n_live_tup, 0)::bigint AS n_live_tup,
       COALESCE(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)::bigint AS writes,
       COALESCE(s.seq_scan, 0)::bigint AS seq_scan, COALESCE(s.idx_scan, 0)::bigint AS idx_scan,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
       ARRAY(SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS column_types,
       pg_catalog.has_table_privilege(c.oid, 'SELECT') AS readable
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS t(schema, name)
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(
        CASE WHEN t.schema IS NULL THEN pg_catalog.quote_ident(t.name)
             ELSE pg_catalog.quote_ident(t.schema) || '.' || pg_catalog.quote_ident(t.name) END)
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm')
