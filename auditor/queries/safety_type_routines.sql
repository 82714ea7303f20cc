-- safety.py: the functions a value of a type may run when cast: its input function and casts into it.
SELECT p.oid::int8 AS oid, n.nspname::text AS schema_name, p.provolatile::text AS volatility,
       p.pronargs::int AS nargs, 0 AS ndefaults, false AS variadic, p.proargtypes::oid[]::int8[] AS argtypes,
       p.prokind::text AS kind,
       p.oid < 16384 AS builtin, l.lanname::text AS language,
       (SELECT e.extname::text FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass LIMIT 1) AS extension,
       CASE WHEN l.lanname = 'sql' THEN p.prosrc END AS body, p.proname::text AS name
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
WHERE p.oid IN (SELECT t.typinput FROM pg_catalog.pg_type AS t WHERE t.oid = %(type)s
                UNION ALL
                SELECT c.castfunc FROM pg_catalog.pg_cast AS c WHERE c.casttarget = %(type)s AND c.castfunc <> 0)
