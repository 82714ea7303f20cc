-- Run once by the postgres image's entrypoint when the data volume is empty (docker-compose.yml).
-- pg_stat_statements is preloaded by the server's command line; the extension must also exist in each
-- database the exporter reads it from. template1 passes both extensions on to databases created later.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS vector;
\connect template1
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS vector;
