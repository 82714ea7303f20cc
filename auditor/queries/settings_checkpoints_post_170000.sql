-- Checkpoints since the statistics began (17+: pg_stat_checkpointer): timed against requested.
SELECT c.num_timed::bigint AS timed, c.num_requested::bigint AS requested, c.stats_reset AS since
FROM pg_catalog.pg_stat_checkpointer c
