UPDATE pgarch.audit_runs
SET status = %(status)s, error = %(error)s, finished_at = %(finished_at)s, window_from = %(window_from)s, window_to = %(window_to)s,
    window_source = %(window_source)s, slow_queries = %(slow_queries)s, recommended = %(recommended)s,
    prs_created = %(prs_created)s, manual_review = %(manual_review)s, avg_confidence = %(avg_confidence)s,
    avg_gain_percent = %(avg_gain_percent)s, stuck = %(stuck)s, report = %(report)s
WHERE run_id = %(run_id)s
