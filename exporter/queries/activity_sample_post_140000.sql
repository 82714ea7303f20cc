-- One sample of the running statements, for the activity sampler (exporter/activity.py; PostgreSQL 14+:
-- query_id). Every client backend that is running a statement, that changed state since
-- the previous sample (the parameter "since", in the server's epoch: a statement seen running has ended
-- since), or that this role may not see (its state is NULL: degrade, never guess); and the sampler's own
-- row, which carries its query id (left out of the p95) and the instants that bound when this sample was
-- read: statement_timestamp() before the snapshot of pg_stat_activity, clock_timestamp() of any row after it.
SELECT a.pid AS pid, a.pid = pg_catalog.pg_backend_pid() AS own,
       extract(epoch FROM a.backend_start)::float8 AS backend_start,
       a.datid::bigint AS datid, a.usesysid::bigint AS usesysid, a.state AS state,
       COALESCE(a.query_id, 0) AS query_id,
       extract(epoch FROM a.query_start)::float8 AS query_start,
       extract(epoch FROM a.state_change)::float8 AS state_change,
       extract(epoch FROM pg_catalog.statement_timestamp())::float8 AS sampled_at,
       extract(epoch FROM pg_catalog.clock_timestamp())::float8 AS read_by
FROM pg_catalog.pg_stat_activity a
WHERE (a.backend_type = 'client backend' OR a.backend_type IS NULL)
  AND (a.state IN ('active', 'fastpath function call') OR a.state IS NULL
       OR a.state_change >= pg_catalog.to_timestamp(%(since)s))
