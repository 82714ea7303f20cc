-- safety.py: safety functions
SELECT p.oid::int8 AS oid, n.nspname::text AS schema_name, p.provolatile::text AS volatility,
       p.pronargs::int AS nargs, p.pronargdefaults::int AS ndefaults, p.provariadic <> 0 AS variadic,
       p.proargtypes::oid[]::int8[] AS argtypes, p.prokind::text AS kind
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.proname = %(name)s
  AND (CASE WHEN %(schema)s::text IS NULL THEN n.nspname = ANY (pg_catalog.current_schemas(true))
            ELSE n.nspname = %(schema)s END)
