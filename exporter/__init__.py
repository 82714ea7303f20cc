"""pg-architect exporter: PostgreSQL health and query-latency metrics for Prometheus.

This package also holds what both processes share (configuration, the database driver boundary, the
embedded server); the auditor may import it, never the reverse.
"""

from __future__ import annotations

__version__ = "0.1.0"
