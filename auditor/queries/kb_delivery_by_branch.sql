-- The delivery already made on a branch of a repository, whichever recommendation made it.
SELECT d.delivery_id, d.recommendation_id, d.channel, d.repo, d.base_branch, d.branch, d.commit_sha,
       d.migration_format, d.migration_path, d.pr_number, d.pr_url, d.state, d.created_at, d.updated_at
FROM pgarch.deliveries d
WHERE d.channel = %(channel)s AND d.repo = %(repo)s AND d.branch = %(branch)s
ORDER BY d.delivery_id
LIMIT 1
