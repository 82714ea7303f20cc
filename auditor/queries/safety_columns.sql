-- safety.py: safety columns
SELECT a.attname::text AS column_name, a.atttypid::int8 AS type_oid
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped
