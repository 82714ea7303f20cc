-- Evictions and the last full reset (pg_stat_statements 1.9+).
SELECT i.dealloc AS dealloc, i.stats_reset AS stats_reset FROM {pgss}.pg_stat_statements_info i
