INSERT INTO pgarch.pgss_snapshots (target_id, kind, stats_reset, dealloc, taken_at)
VALUES (%(target_id)s, %(kind)s, %(stats_reset)s, %(dealloc)s, %(taken_at)s)
RETURNING snapshot_id
