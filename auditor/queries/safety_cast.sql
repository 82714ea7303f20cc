-- safety.py: safety cast
SELECT c.castmethod::text AS method,
       COALESCE((SELECT p.provolatile::text FROM pg_catalog.pg_proc AS p WHERE p.oid = c.castfunc), '') AS volatility,
       (SELECT p.provolatile::text FROM pg_catalog.pg_type AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.typinput
        WHERE t.oid = c.casttarget) AS input_volatility
FROM pg_catalog.pg_cast AS c
WHERE c.castsource = %(source)s AND c.casttarget = %(target)s
