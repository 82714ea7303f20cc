-- How similar recommendations for this statement fared: applied or rejected by people.
SELECT count(*) FILTER (WHERE status = 'applied') AS applied,
       count(*) FILTER (WHERE status = 'rejected') AS rejected
FROM pgarch.recommendations WHERE fingerprint = %s
