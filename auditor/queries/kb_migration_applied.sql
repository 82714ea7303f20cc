INSERT INTO pgarch.schema_migrations (version, name) VALUES (%s, %s)
