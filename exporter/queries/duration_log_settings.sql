-- One row: the server's clock as its log writes it, and the settings that say what the duration log holds.
-- pg_settings hides what the role may not see (log_directory without pg_read_all_settings): NULL then.
SELECT
    pg_catalog.to_char(
        pg_catalog.clock_timestamp() AT TIME ZONE pg_catalog.current_setting('log_timezone'),
        'YYYY-MM-DD HH24:MI:SS.MS'
    ) AS now_local,
    pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())::float8 AS now_epoch,
    pg_catalog.current_setting('log_destination') AS destination,
    pg_catalog.current_setting('logging_collector') = 'on' AS logging_collector,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'log_directory') AS log_directory,
    pg_catalog.current_setting('log_line_prefix') AS log_line_prefix,
    (SELECT s.setting::float8 FROM pg_catalog.pg_settings s WHERE s.name = 'log_min_duration_statement')
        AS threshold_ms,
    pg_catalog.current_setting('log_duration') = 'on' AS log_duration,
    pg_catalog.current_setting('log_statement') AS log_statement,
    pg_catalog.current_setting('lc_messages') AS lc_messages,
    -- Per-database and per-role overrides (ALTER DATABASE/ROLE ... SET): the log is complete only above
    -- the highest threshold that applies to a database.
    (SELECT pg_catalog.array_agg(d.setdatabase::text || '=' || pg_catalog.substr(c.cfg, 28))
       FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) AS c(cfg)
      WHERE c.cfg LIKE 'log\_min\_duration\_statement=%') AS overrides
