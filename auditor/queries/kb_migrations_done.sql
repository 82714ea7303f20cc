SELECT version FROM pgarch.schema_migrations
