-- Background writer and checkpoints (before 17 both live in pg_stat_bgwriter). Times in ms.
SELECT
    checkpoints_timed::float8 AS checkpoints_timed,
    checkpoints_req::float8 AS checkpoints_req,
    checkpoint_write_time::float8 AS checkpoint_write_time,
    checkpoint_sync_time::float8 AS checkpoint_sync_time,
    buffers_checkpoint::float8 AS buffers_checkpoint,
    buffers_clean::float8 AS buffers_clean,
    maxwritten_clean::float8 AS maxwritten_clean,
    buffers_backend::float8 AS buffers_backend,
    buffers_backend_fsync::float8 AS buffers_backend_fsync,
    buffers_alloc::float8 AS buffers_alloc,
    COALESCE(extract(epoch FROM stats_reset), 0)::float8 AS stats_reset,
    NULL::float8 AS restartpoints_timed,
    NULL::float8 AS restartpoints_req,
    NULL::float8 AS restartpoints_done,
    NULL::float8 AS checkpointer_stats_reset
FROM pg_catalog.pg_stat_bgwriter
