-- safety.py: view definition
SELECT pg_catalog.pg_get_viewdef(%(relid)s::oid)
