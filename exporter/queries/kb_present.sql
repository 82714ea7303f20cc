-- Whether the knowledge base exists yet (the auditor creates it on its first run).
SELECT pg_catalog.to_regclass('pgarch.audit_runs') IS NOT NULL
   AND pg_catalog.to_regclass('pgarch.recommendations') IS NOT NULL
   AND pg_catalog.to_regclass('pgarch.targets') IS NOT NULL AS present
