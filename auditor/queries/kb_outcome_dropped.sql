UPDATE pgarch.recommendation_outcomes SET dropped_at = %(at)s
WHERE recommendation_id = %(recommendation_id)s AND dropped_at IS NULL
