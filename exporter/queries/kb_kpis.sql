-- The auditor's KPIs for one audited server and database, read from the knowledge base.
WITH target AS (
    SELECT t.target_id FROM pgarch.targets t
    WHERE t.system_identifier = %(system_identifier)s AND t.datname = %(datname)s
), runs AS (
    SELECT r.* FROM pgarch.audit_runs r WHERE r.target_id IN (SELECT target_id FROM target)
), last_ok AS (
    SELECT r.* FROM runs r WHERE r.status = 'ok' ORDER BY r.finished_at DESC LIMIT 1
), last_any AS (
    SELECT r.* FROM runs r ORDER BY r.started_at DESC LIMIT 1
), recs AS (
    SELECT rc.* FROM pgarch.recommendations rc WHERE rc.target_id IN (SELECT target_id FROM target)
)
SELECT
    COALESCE((SELECT extract(epoch FROM started_at) FROM last_any), 0)::float8 AS last_run_ts,
    COALESCE((SELECT extract(epoch FROM finished_at) FROM last_ok), 0)::float8 AS last_success_ts,
    COALESCE((SELECT extract(epoch FROM COALESCE(finished_at, now()) - started_at) FROM last_any), 0)::float8
        AS duration_s,
    COALESCE((SELECT slow_queries FROM last_ok), 0)::integer AS slow_queries,
    COALESCE((SELECT avg_confidence FROM last_ok), 0)::float8 AS avg_confidence,
    COALESCE((SELECT avg_gain_percent FROM last_ok), 0)::float8 AS avg_gain_percent,
    COALESCE((SELECT stuck FROM last_ok), false) AS stuck,
    COALESCE((SELECT count(*) FILTER (WHERE action = 'pr_merge') FROM recs WHERE worth_applying AND run_id IN (SELECT run_id FROM last_ok)), 0)::integer AS pr_merge,
    COALESCE((SELECT count(*) FILTER (WHERE action = 'pr_review') FROM recs WHERE worth_applying AND run_id IN (SELECT run_id FROM last_ok)), 0)::integer AS pr_review,
    COALESCE((SELECT count(*) FILTER (WHERE action = 'log') FROM recs WHERE worth_applying AND run_id IN (SELECT run_id FROM last_ok)), 0)::integer AS log,
    COALESCE((SELECT count(*) FILTER (WHERE action = 'flag') FROM recs WHERE worth_applying AND run_id IN (SELECT run_id FROM last_ok)), 0)::integer AS flag,
    (SELECT count(*) FROM recs WHERE pr_url IS NOT NULL)::integer AS prs_created,
    (SELECT count(*) FROM recs WHERE status = 'applied')::integer AS applied,
    (SELECT count(*) FROM recs)::integer AS records
