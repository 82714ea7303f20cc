-- Planner statistics of one column: how skewed it is, which values are common, its histogram.
SELECT s.null_frac::float8 AS null_frac, s.n_distinct::float8 AS n_distinct,
       s.most_common_vals::text::text[] AS most_common_vals,
       s.most_common_freqs::float8[] AS most_common_freqs,
       s.histogram_bounds::text::text[] AS histogram_bounds,
       s.correlation::float8 AS correlation
FROM pg_catalog.pg_stats AS s
WHERE s.schemaname = %(schema)s AND s.tablename = %(table)s AND s.attname = %(column)s
ORDER BY s.inherited DESC
LIMIT 1
