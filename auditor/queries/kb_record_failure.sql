-- One failed delivery of an integration (counted by the exporter as pgarch_integration_failures_total).
INSERT INTO pgarch.integration_failures (target_id, run_id, integration, error)
VALUES (%(target_id)s, %(run_id)s::uuid, %(integration)s, %(error)s)
