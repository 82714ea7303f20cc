-- One model proposal and what the checks made of it (auditor.llm.store).
INSERT INTO pgarch.llm_proposals (run_id, target_id, fingerprint, model, type, sql, status, reason, model_confidence)
VALUES (%(run_id)s, %(target_id)s, %(fingerprint)s, %(model)s, %(type)s, %(sql)s, %(status)s, %(reason)s,
        %(model_confidence)s)
