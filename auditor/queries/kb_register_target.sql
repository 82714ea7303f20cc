INSERT INTO pgarch.targets (system_identifier, datname, server_version)
VALUES (%(system_identifier)s, %(datname)s, %(server_version)s)
ON CONFLICT (system_identifier, datname) DO UPDATE SET server_version = EXCLUDED.server_version
RETURNING target_id
