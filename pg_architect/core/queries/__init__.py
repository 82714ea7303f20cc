"""The core's SQL: pg_stat_statements, read by both processes (see pg_architect.core.sqlfiles)."""

from __future__ import annotations

from pg_architect.core.sqlfiles import SqlLibrary

QUERIES = SqlLibrary(__name__)
