INSERT INTO pgarch.health_snapshots (target_id, metrics) VALUES (%s, %s)
