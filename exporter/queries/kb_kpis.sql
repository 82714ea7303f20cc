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
), outcomes AS (
    SELECT o.* FROM pgarch.recommendation_outcomes o JOIN recs USING (recommendation_id)
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
    -- applied ever (a later drop makes it obsolete, but it was applied): a counter
    (SELECT count(*) FROM recs WHERE applied_at IS NOT NULL OR status = 'applied')::integer AS applied,
    (SELECT count(*) FROM recs)::integer AS records,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'pending')::integer AS status_pending,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'pr_open')::integer AS status_pr_open,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'merged')::integer AS status_merged,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'applied')::integer AS status_applied,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'rejected')::integer AS status_rejected,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'superseded')::integer AS status_superseded,
    (SELECT count(*) FROM recs WHERE worth_applying AND status = 'obsolete')::integer AS status_obsolete,
    (SELECT count(*) FROM outcomes WHERE result = 'improved')::integer AS verified_improved,
    (SELECT count(*) FROM outcomes WHERE result = 'improved_less')::integer AS verified_improved_less,
    (SELECT count(*) FROM outcomes WHERE result = 'no_change')::integer AS verified_no_change,
    (SELECT count(*) FROM outcomes WHERE result = 'regressed')::integer AS verified_regressed,
    (COALESCE((SELECT sum(time_saved_ms) FROM outcomes), 0) / 1000.0)::float8 AS time_saved_s,
    (SELECT COALESCE(sum(pg_catalog.pg_total_relation_size(c.oid)), 0) FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'pgarch'::regnamespace AND c.relkind IN ('r', 'p', 'm'))::float8 AS kb_bytes
