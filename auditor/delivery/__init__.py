"""Recommendations reach the team: one module per integration.

``migrations`` (the files, per tool), ``git`` (a branch in a local repository), ``github`` (PyGithub: branch,
commit, pull request), ``pull_request`` (its title and body), ``pulls`` (which recommendation goes where,
once), ``grafana`` (annotations), ``pushgateway`` (the run's metrics), ``slack`` (Block Kit), ``weekly`` (the
weekly report's content), ``html`` (the report page), ``http`` (the one small HTTP client with bounded
retries), ``after_audit`` (all of it after an audit, failing soft).
"""
