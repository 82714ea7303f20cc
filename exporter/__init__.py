"""pg-architect exporter (``pg_architect.exporter``): PostgreSQL health and query-latency metrics for Prometheus."""
