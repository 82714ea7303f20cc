-- Old runs keep their row and its KPI columns (the aggregates reports and dashboards read), not the full report.
WITH gone AS (
    UPDATE pgarch.audit_runs a SET report = NULL
    WHERE a.started_at < %(before)s AND a.report IS NOT NULL AND a.status <> 'running'
    RETURNING 1
) SELECT count(*)::integer FROM gone
