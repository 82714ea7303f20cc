-- Replication as postgres_exporter's replication, replication_slots and stat_archiver collectors read it, in
-- one round trip: one row of server-wide values, then the slots as a JSON array.
SELECT
    pg_catalog.pg_is_in_recovery() AS is_replica,
    CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN 0
         WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0
         ELSE GREATEST(0, extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())) END::float8
        AS lag_seconds,
    CASE WHEN pg_catalog.pg_is_in_recovery()
         THEN GREATEST(0, extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())) END::float8
        AS last_replay_seconds,
    a.archived_count::float8 AS archived_count,
    a.failed_count::float8 AS failed_count,
    extract(epoch FROM now() - a.last_archived_time)::float8 AS last_archive_age,
    COALESCE((SELECT json_agg(json_build_object(
        'slot_name', r.slot_name, 'database', COALESCE(r.database, ''), 'slot_type', r.slot_type,
        'active', r.active,
        'wal_lsn_diff', CASE WHEN pg_catalog.pg_is_in_recovery()
                             THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), r.restart_lsn)
                             ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn) END,
        'safe_wal_size', r.safe_wal_size, 'wal_status', r.wal_status) ORDER BY r.slot_name)
      FROM pg_catalog.pg_replication_slots r), '[]'::json) AS slots
FROM pg_catalog.pg_stat_archiver a
