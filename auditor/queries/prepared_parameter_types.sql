-- The parameter types the server inferred for one of our own prepared statements.
SELECT p.parameter_types::text[] AS types FROM pg_catalog.pg_prepared_statements p WHERE p.name = %s
