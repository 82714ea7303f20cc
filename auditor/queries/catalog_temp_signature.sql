SELECT substring(pg_catalog.pg_get_indexdef(pg_catalog.to_regclass('pg_temp.pgarch_signature_idx')) from ' USING .*$')
