INSERT INTO pgarch.recommendation_outcomes AS o (recommendation_id, result, before_from, before_to, before_calls,
    before_mean_ms, before_rows_per_call, after_from, after_to, after_calls, after_mean_ms, after_rows_per_call,
    provisional, predicted_gain_percent, measured_gain_percent, time_saved_ms, plan_note, verified_at)
VALUES (%(recommendation_id)s, %(result)s, %(before_from)s, %(before_to)s, %(before_calls)s, %(before_mean_ms)s,
    %(before_rows_per_call)s, %(after_from)s, %(after_to)s, %(after_calls)s, %(after_mean_ms)s,
    %(after_rows_per_call)s, %(provisional)s, %(predicted_gain_percent)s, %(measured_gain_percent)s,
    %(time_saved_ms)s, %(plan_note)s, %(verified_at)s)
ON CONFLICT (recommendation_id) DO UPDATE SET
    result = excluded.result, before_from = excluded.before_from, before_to = excluded.before_to,
    before_calls = excluded.before_calls, before_mean_ms = excluded.before_mean_ms,
    before_rows_per_call = excluded.before_rows_per_call, after_from = excluded.after_from,
    after_to = excluded.after_to, after_calls = excluded.after_calls, after_mean_ms = excluded.after_mean_ms,
    after_rows_per_call = excluded.after_rows_per_call, provisional = excluded.provisional,
    predicted_gain_percent = excluded.predicted_gain_percent,
    measured_gain_percent = excluded.measured_gain_percent, time_saved_ms = excluded.time_saved_ms,
    plan_note = COALESCE(excluded.plan_note, o.plan_note), verified_at = excluded.verified_at
