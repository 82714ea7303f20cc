-- A person's decision, kept beside the status it leads to.
UPDATE pgarch.recommendations
SET decision = %(decision)s, decided_by = %(actor)s, decided_at = %(at)s, decision_reason = %(reason)s
WHERE recommendation_id = %(recommendation_id)s
RETURNING status
