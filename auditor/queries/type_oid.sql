-- safety.py: type oid
SELECT pg_catalog.to_regtype(%(name)s)::oid::int8
