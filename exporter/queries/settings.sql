-- The settings dashboards and the postgres-mixin read, with their units (converted like postgres_exporter).
SELECT s.name AS name, s.setting AS setting, COALESCE(s.unit, '') AS unit, s.vartype AS vartype,
       COALESCE(s.short_desc, '') AS short_desc
FROM pg_catalog.pg_settings s
WHERE s.name = ANY (%(names)s) AND s.vartype IN ('bool', 'integer', 'real')
ORDER BY s.name
