-- The catalog was checked and the index is not there yet: the "before" window may run up to now.
UPDATE pgarch.recommendations SET absent_checked_at = %(at)s
WHERE recommendation_id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'pr_open', 'merged')
