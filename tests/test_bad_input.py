"""The README's exit codes for every kind of bad input, and config errors that never echo a secret.

README: "Exit codes: 0 ok, 1 the work failed, 2 bad usage or configuration; errors are one line on stderr".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg_architect.core.config import load_config
from pg_architect.core.embedded import free_port
from pg_architect.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2-do-not-echo"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_")}
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        cwd=ROOT,
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "TypeError" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip().startswith("pg-architect:"), proc.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "COMMAND"),
        (("frobnicate",), "invalid choice"),
        (("audit", "--no-such-flag"), "unrecognized arguments"),
        (("audit", "--limit", "0"), "--limit: must be >= 1"),
        (("audit", "--limit", "0", "--min-calls", "-5"), "must be >= "),
        (("audit", "--min-calls", "-5"), "--min-calls: must be >= 0"),
        (("audit", "--min-calls", "ten"), "expected a whole number"),
        (("audit", "--min-mean-ms", "-1"), "--min-mean-ms: must be a finite number >= 0"),
        (("audit", "--min-mean-ms", "inf"), "--min-mean-ms: must be a finite number >= 0"),
        (("audit", "--format", "yaml"), "invalid choice"),
        (("report", "--run", "not-a-uuid"), "expected a run id"),
        (("kb", "search", "SELECT 1", "--limit", "0"), "--limit: must be >= 1"),
        (("kb", "search", "SELEC nonsense"), "cannot parse the statement"),
        (("exporter", "--listen", "nowhere"), "exporter.listen"),
        (("check", "--config", "/nonexistent/pg-architect.yaml"), "cannot read config file"),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(args: tuple[str, ...], fragment: str) -> None:
    proc = cli(*args, *(("--config", "/dev/null") if args and "--config" not in args else ()))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{SECRET}@db.example:notaport/app",
        f"postgresql://app:{SECRET}@[::1/app",
        f"host=db password='{SECRET}",
        f"host=db password={SECRET} nonsense_option=1",
        f"postgresql://app:{SECRET}@db/app?sslmode=bogus",
        f"postgresql://app:{SECRET}@db/app?bogus_param=1",
        f"postgresql://app:{SECRET} with spaces@db/app",
        f"host=db port=99999 password={SECRET}",
        "not a dsn at all",
    ],
)
def test_a_malformed_dsn_exits_2_without_echoing_it(dsn: str) -> None:
    proc = cli("audit", "--config", "/dev/null", "--dsn", dsn)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "database.dsn" in proc.stderr, proc.stderr
    _one_clear_line(proc)


def test_an_unreachable_server_is_work_that_failed_exit_1() -> None:
    proc = cli("audit", "--config", "/dev/null", "--dsn", f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/app")
    assert proc.returncode == 1, proc.stderr
    _one_clear_line(proc)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        # A DSN given as a mapping: the message names the key and the type, never the password.
        (f"database: {{dsn: {{host: db, user: app, password: {SECRET}}}}}\n", "database.dsn: expected a string"),
        (f"database: {{kb_dsn: [postgresql://app:{SECRET}@db/kb]}}\n", "database.kb_dsn: expected"),
        (f"measurement: {{staging_dsn: 12345{SECRET[:0]}}}\n", "measurement.staging_dsn: expected"),
        (f"database: 'postgresql://app:{SECRET}@db/app'\n", "database: expected a mapping, got a string"),
        (f"database: {{dsn: 'postgresql://app:{SECRET}@db:x/app'}}\n", "database.dsn: the port"),
        (f"database: {{dsn: 'postgresql://app:{SECRET}@db/app'\n  oops: [\n", "not valid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("auditor: {thresholds: {limit: 0, min_calls: -5}}\n", "auditor.thresholds.limit: must be > 0"),
        # A configured integration whose secret file is missing (an unconfigured one may lack its secret).
        ("llm: {model: m, api_key_file: /nonexistent/key}\n", "llm.api_key_file: cannot read"),
    ],
)
def test_a_bad_config_file_exits_2_and_never_echoes_a_secret(tmp_path: Path, config: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    proc = cli("check", "--config", str(path))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert fragment in proc.stderr, proc.stderr
    _one_clear_line(proc)


def test_a_section_given_as_a_string_plus_dsn_is_a_config_error_not_a_type_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"database: 'postgresql://app:{SECRET}@db/app'\nexporter: 'fast'\n")
    proc = cli("audit", "--config", str(path), "--dsn", "postgresql://app@127.0.0.1:1/app")
    assert proc.returncode == 2, proc.stderr
    assert "database: expected a mapping, got a string" in proc.stderr, proc.stderr
    assert "exporter: expected a mapping" in proc.stderr, proc.stderr
    _one_clear_line(proc)
    # The same through the environment overlay: the string section is reported, not silently replaced.
    proc = cli(
        "check",
        "--config",
        str(path),
        env={"PG_ARCHITECT_DATABASE_DSN": "postgresql://app@127.0.0.1:1/app", "PG_ARCHITECT_EXPORTER_LISTEN": "x:1"},
    )
    assert proc.returncode == 2 and "database: expected a mapping" in proc.stderr, proc.stderr
    _one_clear_line(proc)


def test_environment_values_of_secret_keys_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(
            None,
            env={
                "PG_ARCHITECT_DATABASE_DSN": f"host=db password='{SECRET}",
                "PG_ARCHITECT_MEASUREMENT_STAGING_DSN": f"postgresql://u:{SECRET}@h:port/db",
            },
        )
    text = "\n".join(exc.value.problems)
    assert "database.dsn" in text and "measurement.staging_dsn" in text, text
    assert SECRET not in text, text
