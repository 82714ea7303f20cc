-- params.py: type
SELECT pg_catalog.format_type(pg_catalog.to_regtype(%(name)s), NULL)
