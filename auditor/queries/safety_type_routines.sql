-- safety.py: safety type routines
SELECT p.proname::text AS name, p.provolatile::text AS volatility
FROM pg_catalog.pg_type AS t
JOIN pg_catalog.pg_proc AS p ON p.oid = t.typinput
WHERE t.oid = %(type)s
UNION ALL
SELECT p.proname::text, p.provolatile::text
FROM pg_catalog.pg_cast AS c
JOIN pg_catalog.pg_proc AS p ON p.oid = c.castfunc
WHERE c.casttarget = %(type)s
