-- What one audit spent on the model (auditor.llm.store).
INSERT INTO pgarch.llm_usage (run_id, target_id, model, requests, tokens, latency_seconds_sum, latency_seconds_count)
VALUES (%(run_id)s, %(target_id)s, %(model)s, %(requests)s, %(tokens)s, %(latency_seconds_sum)s,
        %(latency_seconds_count)s)
ON CONFLICT (run_id) DO NOTHING
