-- Stored plans older than the retention, except each statement's newest (a regression compares with it).
WITH newest AS (
    SELECT DISTINCT ON (target_id, fingerprint) ctid AS keep
    FROM pgarch.statement_plans ORDER BY target_id, fingerprint, taken_at DESC
), gone AS (
    DELETE FROM pgarch.statement_plans p
    WHERE p.taken_at < %(before)s AND p.ctid NOT IN (SELECT keep FROM newest)
    RETURNING 1
) SELECT count(*)::integer FROM gone
