-- The knowledge base's own migration ledger, created before any migration runs.
CREATE TABLE IF NOT EXISTS pgarch.schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
