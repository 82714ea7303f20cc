INSERT INTO pgarch.slow_queries (run_id, fingerprint, queryids, query, calls, mean_ms, total_ms, status,
                                 skip_reason, explanation)
VALUES (%(run_id)s, %(fingerprint)s, %(queryids)s, %(query)s, %(calls)s, %(mean_ms)s, %(total_ms)s, %(status)s,
        %(skip_reason)s, %(explanation)s)
RETURNING slow_query_id
