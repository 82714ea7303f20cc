-- The settings the advisor weighs, in their units (work_mem and friends in kB, max_wal_size in MB).
SELECT
    pg_catalog.current_setting('work_mem') AS work_mem,
    (SELECT s.setting::bigint FROM pg_catalog.pg_settings s WHERE s.name = 'work_mem') AS work_mem_kb,
    pg_catalog.current_setting('max_wal_size') AS max_wal_size,
    (SELECT s.setting::bigint FROM pg_catalog.pg_settings s WHERE s.name = 'max_wal_size') AS max_wal_size_mb,
    pg_catalog.current_setting('checkpoint_timeout') AS checkpoint_timeout,
    pg_catalog.current_setting('pg_stat_statements.max', true) AS pgss_max
