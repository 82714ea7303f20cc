-- A pull request's state as GitHub reports it now (merged, or closed without merge).
UPDATE pgarch.deliveries SET state = %(state)s, updated_at = now()
WHERE delivery_id = %(delivery_id)s AND state IS DISTINCT FROM %(state)s
