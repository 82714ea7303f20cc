"""pg-architect auditor: the weekly cycle from slow queries to measured, stored recommendations."""
