-- After delivery: the run's count of pull requests opened and its stored report, with what was delivered.
UPDATE pgarch.audit_runs SET prs_created = %(prs_created)s, report = %(report)s::jsonb
WHERE run_id = %(run_id)s::uuid
