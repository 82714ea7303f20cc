-- Failed deliveries per integration for one audited server and database (and those of no target: the weekly
-- report's), since the knowledge base began: pgarch_integration_failures_total{integration}.
SELECT f.integration, count(*)::bigint AS failures
FROM pgarch.integration_failures f
WHERE f.target_id IS NULL OR f.target_id IN (
    SELECT t.target_id FROM pgarch.targets t
    WHERE t.system_identifier = %(system_identifier)s AND t.datname = %(datname)s)
GROUP BY f.integration
