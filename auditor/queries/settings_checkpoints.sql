-- Checkpoints since the statistics began: timed (checkpoint_timeout) against requested (WAL filled max_wal_size).
SELECT b.checkpoints_timed::bigint AS timed, b.checkpoints_req::bigint AS requested, b.stats_reset AS since
FROM pg_catalog.pg_stat_bgwriter b
