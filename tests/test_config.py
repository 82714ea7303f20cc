"""Configuration: one YAML file, a per-key environment overlay, secrets from files, every error at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_architect.core.config import load_config
from pg_architect.core.errors import ConfigError, redact


def test_defaults_are_the_contracts() -> None:
    cfg = load_config(env={})
    t, s = cfg.auditor.thresholds, cfg.auditor.schedule
    assert (t.min_mean_ms, t.min_calls, t.limit, t.min_gain_percent, t.similarity_skip) == (500, 100, 20, 20, 0.85)
    assert (s.timezone, s.weekly_audit, s.daily_snapshot, s.weekly_report) == (
        "Asia/Ho_Chi_Minh",
        "sunday 02:00",
        "03:00",
        "monday 09:00",
    )
    assert cfg.exporter.listen == "0.0.0.0:9188" and cfg.exporter.scrape_budget_s == 5
    assert cfg.auditor.api.listen == "127.0.0.1:3001"
    assert cfg.measurement.mode == "auto" and cfg.measurement.max_table_bytes == 1073741824
    assert cfg.github.migrations.format == "prisma" and cfg.github.labels == [
        "database",
        "ai-generated",
        "optimization",
    ]
    assert cfg.kb_dsn == cfg.database.dsn, "kb_dsn defaults to the audited database"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("database: {dsn: 'postgresql://a@h/db'}\nauditor: {thresholds: {min_calls: 10, limit: 5}}\n")
    cfg = load_config(
        path,
        env={"PG_ARCHITECT_AUDITOR_THRESHOLDS_MIN_CALLS": "50", "PG_ARCHITECT_GITHUB_LABELS": "db,perf"},
        overrides={"auditor.thresholds.limit": 7},
    )
    assert cfg.auditor.thresholds.min_calls == 50 and cfg.auditor.thresholds.limit == 7
    assert cfg.github.labels == ["db", "perf"] and cfg.database.dsn == "postgresql://a@h/db"


def test_secrets_come_from_files_and_standard_variables(tmp_path: Path) -> None:
    dsn_file, token_file = tmp_path / "dsn", tmp_path / "token"
    dsn_file.write_text("postgresql://app:pw@db/app\n")
    token_file.write_text("ghp_secret\n")
    cfg = load_config(
        env={
            "PG_ARCHITECT_DATABASE_DSN_FILE": str(dsn_file),
            "PG_ARCHITECT_GITHUB_TOKEN_FILE": str(token_file),
            "SLACK_WEBHOOK_URL": "https://hooks.example/x",
            "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
        }
    )
    assert cfg.database.dsn == "postgresql://app:pw@db/app"
    assert cfg.secret("github_token") == "ghp_secret" and cfg.secret("slack_webhook_url") == "https://hooks.example/x"
    assert cfg.llm.base_url == "http://127.0.0.1:1/v1"
    assert "ghp_secret" not in repr(cfg), "secrets never appear in the config's repr"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "exporter: {listen: 9188, scrape_budget_s: 0}\nauditor: {schedule: {timezone: Mars/Base, "
        "weekly_audit: 'someday 25:00'}}\nmeasurement: {mode: yolo}\nunknown: 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"PG_ARCHITECT_SLACK_WEBHOOK_URL_FILE": str(tmp_path / "missing")})
    problems = "\n".join(caught.value.problems)
    for fragment in (
        "exporter.listen",
        "exporter.scrape_budget_s: must be > 0",
        "unknown time zone 'Mars/Base'",
        "weekly_audit: expected '<weekday> HH:MM'",
        "measurement.mode: must be one of",
        "unknown: unknown key",
        "slack.webhook_url_file: cannot read",
    ):
        assert fragment in problems, f"{fragment!r} missing from:\n{problems}"
    assert len(caught.value.problems) == 7, problems


def test_not_yaml_and_not_a_mapping_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("database: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", env={})


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("connection to postgresql://app:s3cr3t@db:5432/x failed", "s3cr3t"),
        ("host=db user=app password=s3cr3t dbname=x", "s3cr3t"),
        ("host=db password='se cr et' dbname=x", "se cr et"),
    ],
)
def test_passwords_are_redacted_from_messages(text: str, hidden: str) -> None:
    assert hidden not in redact(text) and "***" in redact(text)


def test_api_token_variable_is_a_secret_not_an_unknown_setting() -> None:
    cfg = load_config(env={"PG_ARCHITECT_API_TOKEN": "t0ken"})
    assert cfg.secret("api_token") == "t0ken"
