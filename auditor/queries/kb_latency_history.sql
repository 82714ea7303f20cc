-- Per pg_stat_statements snapshot of the last days (after the first of each target), every statement's
-- calls and mean time since the previous snapshot: the report page's latency trend. A statement counted
-- again from zero (a reset) is left out of that interval.
WITH snaps AS (
    SELECT s.snapshot_id, s.target_id, s.taken_at,
           lag(s.snapshot_id) OVER (PARTITION BY s.target_id ORDER BY s.taken_at) AS previous_id
    FROM pgarch.pgss_snapshots s
    WHERE s.taken_at >= now() - make_interval(days => %(days)s)
)
SELECT s.taken_at,
       array_agg((c.calls - p.calls)::float8 ORDER BY c.queryid) AS calls,
       array_agg(((c.total_exec_ms - p.total_exec_ms) / (c.calls - p.calls))::float8 ORDER BY c.queryid) AS mean_ms
FROM snaps s
JOIN pgarch.pgss_snapshot_rows c ON c.snapshot_id = s.snapshot_id
JOIN pgarch.pgss_snapshot_rows p ON p.snapshot_id = s.previous_id AND p.userid = c.userid AND p.dbid = c.dbid
     AND p.queryid = c.queryid AND p.toplevel = c.toplevel
WHERE c.calls > p.calls AND c.total_exec_ms >= p.total_exec_ms
GROUP BY s.snapshot_id, s.taken_at
ORDER BY s.taken_at
