-- Locks per database and mode, zero-filled, as postgres_exporter's locks collector counts them.
SELECT d.datname AS datname, m.mode AS mode, COALESCE(l.count, 0)::integer AS count
FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), ('shareupdateexclusivelock'),
             ('sharelock'), ('sharerowexclusivelock'), ('exclusivelock'), ('accessexclusivelock'),
             ('sireadlock')) AS m(mode)
CROSS JOIN pg_catalog.pg_database d
LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count
           FROM pg_catalog.pg_locks WHERE database IS NOT NULL GROUP BY database, lower(mode)) l
       ON l.mode = m.mode AND l.database = d.oid
WHERE NOT d.datistemplate
ORDER BY d.datname, m.mode
