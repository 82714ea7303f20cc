"""What both processes share: configuration, the database driver boundary, errors, SQL file selection, the
embedded server and pg_stat_statements rows and deltas. Imports neither the exporter nor the auditor."""
