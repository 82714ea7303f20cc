-- Every index of the audited database with its definition name aside ("<table> USING <method> (<keys>)
-- [WHERE ...]", as pg_get_indexdef prints it), so a recommended index is found whatever it was called.
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS name,
       (i.indisvalid AND i.indisready AND i.indislive) AS valid,
       pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.relname) || ' '
           || substring(pg_catalog.pg_get_indexdef(i.indexrelid) from ' USING .*$') AS signature
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
WHERE tn.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND tn.nspname NOT LIKE 'pg_temp%%'
