-- One row: where the server writes its log and how (the auditor reads logged statements' parameters from it).
-- pg_settings hides what the role may not see (log_directory without pg_read_all_settings): NULL then.
SELECT
    pg_catalog.current_setting('log_destination') AS destination,
    pg_catalog.current_setting('logging_collector') = 'on' AS logging_collector,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'log_directory') AS log_directory,
    pg_catalog.current_setting('log_line_prefix') AS log_line_prefix,
    (SELECT s.setting::float8 FROM pg_catalog.pg_settings s WHERE s.name = 'log_min_duration_statement')
        AS threshold_ms,
    (SELECT s.setting::int FROM pg_catalog.pg_settings s WHERE s.name = 'log_parameter_max_length')
        AS parameter_max_length,
    pg_catalog.current_setting('lc_messages') AS lc_messages
