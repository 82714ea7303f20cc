"""pg-architect auditor (``pg_architect.auditor``): the weekly cycle from slow queries to measured, stored
recommendations."""
