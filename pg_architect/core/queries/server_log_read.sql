-- A byte range of one log file (pg_read_binary_file: superuser, pg_read_server_files, or a GRANT EXECUTE);
-- NULL when the file is gone.
SELECT pg_catalog.pg_read_binary_file(%(path)s, %(offset)s, %(length)s, true) AS chunk
