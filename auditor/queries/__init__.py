"""The auditor's SQL, one file per query and version (see exporter.sqlfiles)."""

from __future__ import annotations

from pg_architect.core.sqlfiles import SqlLibrary

QUERIES = SqlLibrary(__name__)
