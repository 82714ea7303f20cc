-- Claim one scheduled job of one target for one slot; a row comes back only for the replica that won it.
INSERT INTO pgarch.job_claims (target_name, job, slot, claimed_by)
VALUES (%(target)s, %(job)s, %(slot)s, %(by)s)
ON CONFLICT (target_name, job, slot) DO NOTHING
RETURNING claimed_by
