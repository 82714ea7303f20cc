-- The daily health record's connection figures: client backends against the usable slots (16+ reserves more).
SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'client backend')::integer
           AS client_backends,
       (pg_catalog.current_setting('max_connections')::integer
        - pg_catalog.current_setting('superuser_reserved_connections')::integer
        - pg_catalog.current_setting('reserved_connections')::integer) AS usable_connections
