-- PostgreSQL 17 split checkpoints out of pg_stat_bgwriter into pg_stat_checkpointer, and moved backend
-- writes to pg_stat_io (no buffers_backend here any more). Times in ms.
SELECT
    c.num_timed::float8 AS checkpoints_timed,
    c.num_requested::float8 AS checkpoints_req,
    c.write_time::float8 AS checkpoint_write_time,
    c.sync_time::float8 AS checkpoint_sync_time,
    c.buffers_written::float8 AS buffers_checkpoint,
    b.buffers_clean::float8 AS buffers_clean,
    b.maxwritten_clean::float8 AS maxwritten_clean,
    NULL::float8 AS buffers_backend,
    NULL::float8 AS buffers_backend_fsync,
    b.buffers_alloc::float8 AS buffers_alloc,
    COALESCE(extract(epoch FROM b.stats_reset), 0)::float8 AS stats_reset,
    c.restartpoints_timed::float8 AS restartpoints_timed,
    c.restartpoints_req::float8 AS restartpoints_req,
    c.restartpoints_done::float8 AS restartpoints_done,
    COALESCE(extract(epoch FROM c.stats_reset), 0)::float8 AS checkpointer_stats_reset
FROM pg_catalog.pg_stat_bgwriter b CROSS JOIN pg_catalog.pg_stat_checkpointer c
