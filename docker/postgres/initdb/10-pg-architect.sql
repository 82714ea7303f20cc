-- Run once by the postgres image's entrypoint when the data volume is empty (docker-compose.yml).
-- pg_stat_statements is preloaded by the server's command line; the extension must also exist in each
-- database the exporter reads it from. template1 passes both extensions on to databases created later.
-- hypopg lets audits measure hypothetical indexes: nothing is built, no write is ever blocked.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hypopg;
\connect template1
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS hypopg;
