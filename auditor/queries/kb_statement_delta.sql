-- One statement's figures (every queryid of its fingerprint, in one database) between two stored snapshots;
-- with no first snapshot, or a row reset since it, the second snapshot's cumulative figures count.
SELECT COALESCE(sum(CASE WHEN a.calls IS NULL OR b.calls < a.calls THEN b.calls
                         ELSE b.calls - a.calls END), 0)::bigint AS calls,
       COALESCE(sum(CASE WHEN a.calls IS NULL OR b.calls < a.calls THEN b.total_exec_ms
                         ELSE b.total_exec_ms - a.total_exec_ms END), 0)::float8 AS total_ms,
       COALESCE(sum(CASE WHEN a.calls IS NULL OR b.calls < a.calls THEN b.rows
                         ELSE b.rows - a.rows END), 0)::bigint AS rows
FROM pgarch.pgss_snapshot_rows b
LEFT JOIN pgarch.pgss_snapshot_rows a
       ON a.snapshot_id = %(from_snapshot)s AND a.userid = b.userid AND a.dbid = b.dbid
      AND a.queryid = b.queryid AND a.toplevel = b.toplevel
WHERE b.snapshot_id = %(to_snapshot)s AND b.dbid = %(dbid)s AND b.fingerprint = %(fingerprint)s
