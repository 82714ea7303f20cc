-- Record (or bring up to date) a recommendation's delivery on one channel.
INSERT INTO pgarch.deliveries (recommendation_id, channel, repo, base_branch, branch, commit_sha, migration_format,
    migration_path, pr_number, pr_url, state)
VALUES (%(recommendation_id)s, %(channel)s, %(repo)s, %(base_branch)s, %(branch)s, %(commit_sha)s,
    %(migration_format)s, %(migration_path)s, %(pr_number)s, %(pr_url)s, %(state)s)
ON CONFLICT (recommendation_id, channel) DO UPDATE SET
    repo = EXCLUDED.repo, base_branch = EXCLUDED.base_branch, branch = EXCLUDED.branch,
    commit_sha = EXCLUDED.commit_sha, migration_format = EXCLUDED.migration_format,
    migration_path = EXCLUDED.migration_path, pr_number = EXCLUDED.pr_number, pr_url = EXCLUDED.pr_url,
    state = EXCLUDED.state, updated_at = now()
RETURNING delivery_id
