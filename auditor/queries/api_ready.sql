-- Readiness: the knowledge base answers and its schema is there.
SELECT pg_catalog.to_regclass('pgarch.audit_runs') IS NOT NULL
