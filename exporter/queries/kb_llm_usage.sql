-- What the auditor's audits of one server and database spent on the language model (knowledge base,
-- pgarch.llm_usage from migration 005): totals since the knowledge base began, one row per series.
WITH target AS (
    SELECT t.target_id FROM pgarch.targets t
    WHERE t.system_identifier = %(system_identifier)s AND t.datname = %(datname)s
), usage AS (
    SELECT u.* FROM pgarch.llm_usage u WHERE u.target_id IN (SELECT target_id FROM target)
)
SELECT 'requests'::text AS family, r.key AS label, sum(r.value::float8)::float8 AS value
FROM usage u, LATERAL jsonb_each_text(u.requests) AS r(key, value) GROUP BY r.key
UNION ALL
SELECT 'tokens', t.key, sum(t.value::float8)::float8
FROM usage u, LATERAL jsonb_each_text(u.tokens) AS t(key, value) GROUP BY t.key
UNION ALL
SELECT 'latency_sum', '', sum(u.latency_seconds_sum)::float8 FROM usage u HAVING count(*) > 0
UNION ALL
SELECT 'latency_count', '', sum(u.latency_seconds_count)::float8 FROM usage u HAVING count(*) > 0
