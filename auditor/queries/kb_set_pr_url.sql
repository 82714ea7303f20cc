-- The pull request of a recommendation (pr_url is set only when a pull request exists).
UPDATE pgarch.recommendations SET pr_url = %(pr_url)s WHERE recommendation_id = %(recommendation_id)s
