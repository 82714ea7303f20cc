-- Indexes that cost writes and space for nothing: invalid ones, exact duplicates, prefixes of another
-- index (redundant), and ones never scanned since statistics began. Unique and primary keys are kept.
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, n.nspname AS schema, c.relname AS name, i.indisvalid AS valid,
           i.indisunique OR i.indisprimary AS enforces, i.indkey::text AS keys, i.indclass::text AS classes,
           COALESCE(pg_catalog.pg_get_expr(i.indexprs, i.indrelid), '') AS exprs,
           COALESCE(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '') AS pred,
           pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
           pg_catalog.pg_relation_size(i.indexrelid)::bigint AS size_bytes,
           COALESCE(s.idx_scan, 0)::bigint AS scans, am.amname AS method
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_am am ON am.oid = c.relam
    LEFT JOIN pg_catalog.pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgarch') AND n.nspname NOT LIKE 'pg\_toast%%'
      -- a table (or index) under another session's ACCESS EXCLUSIVE lock would make its size wait
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.relation IN (i.indrelid, i.indexrelid)
                      AND l.mode = 'AccessExclusiveLock' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid())
)
SELECT a.schema AS schema, a.name AS name, 'invalid' AS reason, a.definition AS definition,
       a.size_bytes AS size_bytes, a.scans AS scans, 'the index is invalid (a failed CREATE INDEX CONCURRENTLY?)'
       AS evidence
FROM idx a WHERE NOT a.valid
UNION ALL
SELECT b.schema, b.name, 'duplicate', b.definition, b.size_bytes, b.scans,
       'same table, keys, operator classes, expressions and predicate as ' || a.schema || '.' || a.name
FROM idx a JOIN idx b ON a.indrelid = b.indrelid AND a.keys = b.keys AND a.classes = b.classes
    AND a.exprs = b.exprs AND a.pred = b.pred AND a.method = b.method AND a.indexrelid < b.indexrelid
WHERE b.valid AND NOT b.enforces
UNION ALL
SELECT b.schema, b.name, 'redundant', b.definition, b.size_bytes, b.scans,
       'its keys are the leading keys of ' || a.schema || '.' || a.name
FROM idx a JOIN idx b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid AND a.method = 'btree'
    AND b.method = 'btree' AND a.exprs = '' AND b.exprs = '' AND a.pred = '' AND b.pred = ''
    AND a.keys LIKE b.keys || ' %%' AND a.valid
WHERE b.valid AND NOT b.enforces
UNION ALL
SELECT a.schema, a.name, 'unused', a.definition, a.size_bytes, a.scans,
       'never scanned since statistics were last reset' || COALESCE(' (' || (SELECT d.stats_reset::date::text
        FROM pg_catalog.pg_stat_database d WHERE d.datname = pg_catalog.current_database()) || ')', '')
FROM idx a WHERE a.valid AND NOT a.enforces AND a.scans = 0 AND a.size_bytes >= %(min_unused_bytes)s
ORDER BY 3, 1, 2
