-- Every index of the given tables, as the catalog is now (valid or not, with its key and predicate).
SELECT i.indexrelid::bigint AS oid, i.indrelid::bigint AS table_oid, n.nspname AS schema, ic.relname AS name,
       am.amname AS method, i.indisvalid AS valid, i.indisunique AS unique, i.indisprimary AS primary,
       ARRAY(SELECT CASE WHEN k.attnum = 0 THEN NULL ELSE a.attname::text END
             FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS key_columns,
       ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k.ord::integer, true)
             FROM generate_series(1, i.indnkeyatts) AS k(ord) ORDER BY k.ord) AS key_definitions,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
       pg_catalog.pg_relation_size(i.indexrelid)::bigint AS size_bytes,
       COALESCE(s.idx_scan, 0)::bigint AS scans
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
LEFT JOIN pg_catalog.pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE i.indrelid = ANY(%(table_oids)s::oid[])
ORDER BY i.indrelid, ic.relname
