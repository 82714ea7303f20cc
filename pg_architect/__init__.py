"""pg-architect: an autonomous database architect for PostgreSQL.

Layers, enforced by tests/test_layers.py: ``pg_architect.cli`` and ``pg_architect.demo`` sit above the two
processes, ``pg_architect.exporter`` (the scrape process) and ``pg_architect.auditor`` (the weekly optimisation
process), which never import each other; both sit above ``pg_architect.core`` (configuration, the database
driver boundary, errors, SQL file selection, the embedded server, pg_stat_statements rows and deltas), which
imports neither. The repository keeps ``exporter/`` and ``auditor/`` at its top level; ``pg_architect/exporter``
and ``pg_architect/auditor`` are links to them, so wheels, editable installs, mypy and tests all see one name.
"""

from __future__ import annotations

__version__ = "0.2.0"
