-- Client backends per database and state (zero-filled so every series exists), and the oldest open
-- transaction among them (postgres_exporter's max_tx_duration), read once per server.
SELECT d.datname AS datname, s.state AS state, count(a.pid)::integer AS count,
       COALESCE(max(extract(epoch FROM now() - a.xact_start)), 0)::float8 AS max_tx_duration
FROM pg_catalog.pg_database d
CROSS JOIN (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
                   ('fastpath function call'), ('disabled')) AS s(state)
LEFT JOIN pg_catalog.pg_stat_activity a
       ON a.datid = d.oid AND a.state = s.state AND a.backend_type = 'client backend'
WHERE NOT d.datistemplate
GROUP BY d.datname, s.state
ORDER BY d.datname, s.state
