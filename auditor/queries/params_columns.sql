-- params.py: columns, with their full type (format_type with the type modifier: char(10), not char(1))
SELECT a.attname::text AS column_name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
