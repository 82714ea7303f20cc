-- Rows per call of one statement (by fingerprint) before the window (cumulative at the snapshot opening it) and
-- within it (between its two snapshots): caching asks whether they stay the same.
SELECT sum(a.rows)::float8 / NULLIF(sum(a.calls), 0) AS before,
       sum(b.rows - a.rows)::float8 / NULLIF(sum(b.calls - a.calls), 0) AS within
FROM pgarch.pgss_snapshot_rows b
JOIN pgarch.pgss_snapshot_rows a
  ON a.snapshot_id = %(from_snapshot)s AND a.userid = b.userid AND a.dbid = b.dbid
 AND a.queryid = b.queryid AND a.toplevel = b.toplevel
WHERE b.snapshot_id = %(to_snapshot)s AND b.fingerprint = %(fingerprint)s AND b.calls >= a.calls
