-- safety.py: safety operators
SELECT p.oid::int8 AS oid, n.nspname::text AS schema_name, p.provolatile::text AS volatility,
       p.pronargs::int AS nargs, 0 AS ndefaults, false AS variadic,
       ARRAY[o.oprleft::int8, o.oprright::int8] AS argtypes, 'o' AS kind
FROM pg_catalog.pg_operator AS o
JOIN pg_catalog.pg_proc AS p ON p.oid = o.oprcode
JOIN pg_catalog.pg_namespace AS n ON n.oid = o.oprnamespace
WHERE o.oprname = %(name)s
  AND (CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY (pg_catalog.current_schemas(true))
            ELSE n.nspname = %(schema)s END)
