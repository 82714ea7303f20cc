SELECT p.plan FROM pgarch.statement_plans p
WHERE p.target_id = %(target_id)s AND p.fingerprint = %(fingerprint)s AND p.taken_at < %(before)s
ORDER BY p.taken_at DESC LIMIT 1
