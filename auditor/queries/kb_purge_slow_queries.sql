-- Old runs' slow statements that led to no recommendation (recommendations are what learning reads).
WITH gone AS (
    DELETE FROM pgarch.slow_queries q
    USING pgarch.audit_runs a
    WHERE a.run_id = q.run_id AND a.started_at < %(before)s
      AND NOT EXISTS (SELECT 1 FROM pgarch.recommendations r WHERE r.slow_query_id = q.slow_query_id)
    RETURNING 1
) SELECT count(*)::integer FROM gone
