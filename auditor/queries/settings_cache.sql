-- This database's cache hit counters since its statistics began, the buffer settings, and whether the server is
-- on this machine (reached over a Unix socket or a loopback address): only then is /proc/meminfo its memory.
SELECT d.blks_hit::bigint AS blks_hit, d.blks_read::bigint AS blks_read,
       pg_catalog.current_setting('shared_buffers') AS shared_buffers,
       pg_catalog.pg_size_bytes(pg_catalog.current_setting('shared_buffers'))::bigint AS shared_buffers_bytes,
       pg_catalog.current_setting('effective_cache_size') AS effective_cache_size,
       pg_catalog.pg_size_bytes(pg_catalog.current_setting('effective_cache_size'))::bigint
           AS effective_cache_size_bytes,
       COALESCE(pg_catalog.inet_server_addr() <<= inet '127.0.0.0/8' OR pg_catalog.inet_server_addr() = inet '::1',
                true) AS local
FROM pg_catalog.pg_stat_database d
WHERE d.datname = pg_catalog.current_database()
