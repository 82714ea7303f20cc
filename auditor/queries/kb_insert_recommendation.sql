INSERT INTO pgarch.recommendations (run_id, slow_query_id, target_id, fingerprint, query, type, sql, rollback_sql,
    reasoning, confidence, source, measurement, gain_percent, worth_applying, action, pr_url, status, embedding,
    embedding_model, kind, family, absent_checked_at)
VALUES (%(run_id)s, %(slow_query_id)s, %(target_id)s, %(fingerprint)s, %(query)s, %(type)s, %(sql)s,
    %(rollback_sql)s, %(reasoning)s, %(confidence)s, %(source)s, %(measurement)s, %(gain_percent)s,
    %(worth_applying)s, %(action)s, %(pr_url)s, %(status)s, %(embedding)s::vector, %(embedding_model)s,
    %(kind)s, %(family)s, now())
RETURNING recommendation_id
