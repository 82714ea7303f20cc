-- Every statement's figures (merged by fingerprint, one database) between two stored snapshots.
SELECT b.fingerprint,
       sum(CASE WHEN a.calls IS NULL OR b.calls < a.calls THEN b.calls ELSE b.calls - a.calls END)::bigint AS calls,
       sum(CASE WHEN a.calls IS NULL OR b.calls < a.calls THEN b.total_exec_ms
                ELSE b.total_exec_ms - a.total_exec_ms END)::float8 AS total_ms
FROM pgarch.pgss_snapshot_rows b
LEFT JOIN pgarch.pgss_snapshot_rows a
       ON a.snapshot_id = %(from_snapshot)s AND a.userid = b.userid AND a.dbid = b.dbid
      AND a.queryid = b.queryid AND a.toplevel = b.toplevel
WHERE b.snapshot_id = %(to_snapshot)s AND b.dbid = %(dbid)s AND b.fingerprint IS NOT NULL
GROUP BY b.fingerprint
