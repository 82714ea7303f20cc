INSERT INTO pgarch.statement_plans (target_id, fingerprint, taken_at, mean_ms, plan)
VALUES (%(target_id)s, %(fingerprint)s, %(taken_at)s, %(mean_ms)s, %(plan)s)
