UPDATE pgarch.audit_runs SET status = 'failed', finished_at = now(), error = %(error)s, report = %(report)s
WHERE run_id = %(run_id)s AND status = 'running'
