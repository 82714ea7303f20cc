-- Whether the knowledge base has the LLM architect's tables (migration 005).
SELECT pg_catalog.to_regclass('pgarch.llm_usage') IS NOT NULL AS present
