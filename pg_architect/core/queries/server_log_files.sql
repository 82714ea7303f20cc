-- The server's log files (pg_ls_logdir: superuser or pg_monitor), oldest first.
SELECT f.name AS name, f.size AS size, pg_catalog.date_part('epoch', f.modification)::float8 AS modified
FROM pg_catalog.pg_ls_logdir() AS f
ORDER BY f.modification, f.name
