"""Delivery's configuration: validated offline (repository, branch, migrations format and path, URLs), and the
secret of an integration that is not configured may be missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_architect.core.config import load_config
from pg_architect.core.errors import ConfigError


def test_secret_file_of_an_unconfigured_integration_may_be_missing(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    cfg = load_config(None, env={"PG_ARCHITECT_GITHUB_TOKEN_FILE": missing, "PG_ARCHITECT_GRAFANA_TOKEN_FILE": missing})
    assert cfg.secret("github_token") is None and cfg.secret("grafana_token") is None
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"PG_ARCHITECT_GITHUB_TOKEN_FILE": missing, "PG_ARCHITECT_GITHUB_REPO": "acme/shop"})
    assert "github.token_file: cannot read" in str(err.value.problems)
    with pytest.raises(ConfigError) as bad:
        load_config(
            None,
            env={
                "PG_ARCHITECT_GITHUB_REPO": "not a repo",
                "PG_ARCHITECT_GITHUB_MIGRATIONS_FORMAT": "plain",
                "PG_ARCHITECT_GITHUB_MIGRATIONS_PATH": "../out",
                "PG_ARCHITECT_PUSHGATEWAY_URL": "pushgateway:9091",
            },
        )
    text = "\n".join(bad.value.problems)
    for key in ("github.repo", "github.migrations.format", "github.migrations.path", "pushgateway.url"):
        assert key in text, text
