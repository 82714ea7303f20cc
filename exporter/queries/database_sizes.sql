-- Per database: its size. pg_database_size() stats every file of the database, so the exporter reads it
-- at most every exporter.database_size_interval_s, not on every scrape.
SELECT d.oid::bigint AS dbid, pg_catalog.pg_database_size(d.oid)::bigint AS size_bytes
FROM pg_catalog.pg_database d
WHERE d.datallowconn AND NOT d.datistemplate
