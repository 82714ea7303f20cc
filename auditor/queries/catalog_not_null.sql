-- rewrites.py: the columns of one relation declared NOT NULL (a NOT IN over them cannot meet a NULL)
SELECT a.attname::text AS column_name
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
ORDER BY a.attnum
