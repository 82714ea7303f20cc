"""Configuration: one YAML file, a per-key environment overlay, secrets from files, validated offline.

The dataclasses below are the schema. Loading walks them, so a key exists exactly when a field does;
every problem found (unknown key, wrong type, bad value) is collected and raised together.
Environment: ``PG_ARCHITECT_<SECTION>_<KEY>`` (nested sections joined with ``_``), and for any key
``PG_ARCHITECT_<SECTION>_<KEY>_FILE`` reads the value from a file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from pg_architect.core.errors import ConfigError

ENV_PREFIX = "PG_ARCHITECT_"
CONFIG_ENV = "PG_ARCHITECT_CONFIG"

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` allowed); raise ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_weekly(value: str) -> tuple[str, str]:
    """Split ``"sunday 02:00"`` into a weekday and a time; raise ValueError when malformed."""
    parts = value.lower().split()
    if len(parts) != 2 or parts[0] not in _WEEKDAYS or not _TIME.match(parts[1]):
        raise ValueError(f"expected '<weekday> HH:MM', got {value!r}")
    return parts[0], parts[1]


def _check_listen(value: Any) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_weekly(value: Any) -> str | None:
    try:
        parse_weekly(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_daily(value: Any) -> str | None:
    return None if _TIME.match(value) else f"expected 'HH:MM', got {value!r}"


def _check_timezone(value: Any) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}"
    return None


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def _ratio(value: Any) -> str | None:
    return None if 0 <= value <= 1 else f"must be between 0 and 1, got {value!r}"


def _sampling_hz(value: Any) -> str | None:
    return None if value == 0 or 1 <= value <= 200 else f"must be 0 (off) or between 1 and 200, got {value!r}"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}, got {value!r}"

    return check


_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def _dsn(value: Any) -> str | None:
    """None for a DSN libpq can parse (or 'embedded'); else why not, without echoing any part of it."""
    if value == "embedded":
        return None
    expected = "expected a libpq connection string (postgresql://... or key=value ...) or 'embedded'"
    if not (value.startswith(("postgresql://", "postgres://")) or "=" in value):
        return expected
    try:
        params = conninfo_to_dict(value)
    except psycopg.Error as exc:
        # libpq quotes the offending part, which may be the password: keep only its words.
        reason = _QUOTED.sub("...", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return f"{expected}; libpq cannot parse it: {reason}"
    problems = []
    ports = str(params.get("port", "")).split(",") if params.get("port") else []
    if any(not p.strip().isdigit() or not 0 < int(p) < 65536 for p in ports):
        problems.append("the port must be a number between 1 and 65535")
    timeout = params.get("connect_timeout")
    if timeout is not None and not str(timeout).strip().lstrip("-").isdigit():
        problems.append("connect_timeout must be a whole number of seconds")
    if params.get("sslmode") is not None and params["sslmode"] not in _SSLMODES:
        problems.append(f"sslmode must be one of {', '.join(sorted(_SSLMODES))}")
    return "; ".join(problems) or None


_QUOTED = re.compile(r'"[^"]*"?')
#: Keys whose values are never shown in an error: they hold (or may hold) a password or a token.
_SECRET_KEY = re.compile(r"dsn|password|token|secret|api_key|webhook", re.IGNORECASE)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return _describe(type(value))


def _shown(value: Any, key: str) -> str:
    """A value for an error message: a mapping or list by its type only, a secret key's value not at all."""
    if isinstance(value, Mapping | list | tuple):
        return _kind(value)
    if _SECRET_KEY.search(key):
        return f"{_kind(value)} (value not shown)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _http_url(value: Any) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else f"expected an http(s):// URL, got {value!r}"


def _check_repo(value: Any) -> str | None:
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}", value)
    return None if ok else f"expected OWNER/NAME of a GitHub repository, got {value!r}"


def _check_branch(value: Any) -> str | None:
    bad = not value or value.startswith(("-", "/")) or value.endswith((".", "/", ".lock")) or ".." in value
    bad = bad or re.search(r"[\s~^:?*\[\\]|@\{", value) is not None
    return f"not a valid git branch name: {value!r}" if bad else None


def _relative_path(value: Any) -> str | None:
    parts = value.split("/")
    bad = not value or value.startswith("/") or ".." in parts
    return f"expected a path inside the repository (relative, no ..), got {value!r}" if bad else None


def _field(default: Any, check: Callable[[Any], str | None] | None = None, **kw: Any) -> Any:
    metadata = {"check": check} if check else {}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = _field("embedded", _dsn)
    kb_dsn: str | None = _field(None, _dsn)
    connect_timeout_s: int = _field(5, _positive)
    embedded_data_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    listen: str = _field("0.0.0.0:9188", _check_listen)
    scrape_budget_s: float = _field(5.0, _positive)
    data_directory: str | None = None
    disk_capacity_bytes: int | None = _field(None, _positive)
    top_queries: int = _field(20, _non_negative)
    database_size_interval_s: float = _field(60.0, _non_negative)
    lock_timeout_ms: int = _field(500, _positive)
    # pg_stat_statements on its own interval (0: read at every scrape); see docs/fleet.md.
    statements_interval_s: float = _field(0.0, _non_negative)
    # /probe: how long one server's cluster-wide collection is shared by the probes of its databases.
    probe_cache_s: float = _field(10.0, _non_negative)
    # The server's own duration log (docs/p95.md): off, a mounted log directory, or pg_read_binary_file.
    duration_log: str = _field("off", _one_of("off", "directory", "pg_read_file"))
    duration_log_directory: str | None = None
    duration_log_format: str = _field("auto", _one_of("auto", "csvlog", "jsonlog", "stderr"))
    duration_log_max_bytes: int = _field(64 * 1024 * 1024, _positive)
    duration_log_max_records: int = _field(500_000, _positive)
    # Sampling pg_stat_activity as a pseudo duration log, this many times a second (0: off); docs/p95.md.
    activity_sampling_hz: float = _field(0.0, _sampling_hz)
    activity_sampling_max_records: int = _field(100_000, _positive)


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    """One monitored database for ``/probe?target=NAME``: its name and how to reach it (never in a URL)."""

    name: str = _field(
        "", lambda v: None if not v or re.fullmatch(r"[A-Za-z0-9_.:-]+", v) else "letters, digits, _.:- only"
    )
    dsn: str | None = _field(None, _dsn)
    dsn_file: str | None = None

    def resolved_dsn(self) -> str:
        """The DSN, from ``dsn`` or the file ``dsn_file`` names (read at every call: rotated secrets apply)."""
        if self.dsn is not None:
            return self.dsn
        assert self.dsn_file is not None  # load_config guarantees one of them
        return Path(self.dsn_file).expanduser().read_text(encoding="utf-8").strip()


def _cross_checks(cfg: Config, problems: list[str]) -> None:
    """Rules that tie keys together (each key's own rules are in its field)."""
    exporter = cfg.exporter
    if exporter.duration_log == "directory" and not exporter.duration_log_directory:
        problems.append(
            "exporter.duration_log: 'directory' needs exporter.duration_log_directory (the mounted log directory)"
        )
    if exporter.duration_log_directory and exporter.duration_log != "directory":
        problems.append("exporter.duration_log_directory: set, but exporter.duration_log is not 'directory'")
    auditor = cfg.auditor
    if auditor.server_log == "directory" and not auditor.server_log_directory:
        problems.append(
            "auditor.server_log: 'directory' needs auditor.server_log_directory (the mounted log directory)"
        )
    if auditor.server_log_directory and auditor.server_log != "directory":
        problems.append("auditor.server_log_directory: set, but auditor.server_log is not 'directory'")


@dataclasses.dataclass(frozen=True)
class ThresholdsConfig:
    min_mean_ms: float = _field(500.0, _non_negative)
    min_calls: int = _field(100, _non_negative)
    limit: int = _field(20, _positive)
    min_gain_percent: float = _field(20.0, _non_negative)
    similarity_skip: float = _field(0.85, _ratio)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = _field("Asia/Ho_Chi_Minh", _check_timezone)
    weekly_audit: str = _field("sunday 02:00", _check_weekly)
    daily_snapshot: str = _field("03:00", _check_daily)
    weekly_report: str = _field("monday 09:00", _check_weekly)


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    listen: str = _field("127.0.0.1:3001", _check_listen)
    token_file: str | None = None
    # How people reach the admin API (links in Slack, pull requests, Grafana); default: http://<listen>.
    public_url: str | None = _field(None, _http_url)


def _retention(value: Any) -> str | None:
    # The audit window needs a snapshot a week old, and week-over-week regressions the week before it.
    return None if value >= 15 else f"must be >= 15 days (two weekly windows), got {value!r}"


@dataclasses.dataclass(frozen=True)
class LifecycleConfig:
    """What happens to recommendations after an audit: reminders, outcome checks, regressions, retention."""

    # A recommendation waiting for review longer than this is a reminder in the weekly report (never an alert).
    pending_reminder_days: int = _field(14, _positive)
    # An outcome is measured only once the statement ran this often before and after the index.
    verify_min_calls: int = _field(20, _positive)
    # Week over week: reported when the mean rose by this ratio and by at least the floor, slow or not.
    regression_ratio: float = _field(1.5, _positive)
    regression_floor_ms: float = _field(5.0, _non_negative)
    # Snapshots, health records, plans and old runs' full reports older than this are purged.
    retention_days: int = _field(400, _retention)


def _horizon(value: Any) -> str | None:
    # The forecasts fit at most 30 days of daily snapshots: projecting much beyond a year is guesswork.
    return None if 1 <= value <= 365 else f"must be between 1 and 365 days, got {value!r}"


@dataclasses.dataclass(frozen=True)
class PartitioningConfig:
    """When a growing table gets a partitioning plan (auditor.partitioning)."""

    # A table projected to pass this size within the horizon, filtered on a range by slow statements.
    min_projected_bytes: int = _field(64 * 1024**3, _positive)
    horizon_days: int = _field(90, _horizon)
    # Rows of the table copied (TABLESAMPLE) into the scratch schema where the pruning gain is measured.
    sample_rows: int = _field(100_000, _positive)


@dataclasses.dataclass(frozen=True)
class CachingConfig:
    """When a slow statement gets an application-cache suggestion (auditor.caching)."""

    min_calls_per_hour: float = _field(60.0, _positive)
    # Writes to the statement's tables against writes plus the statement's calls, over the window.
    max_write_share: float = _field(0.05, _ratio)
    # Rows per call in the window against before it: at most this relative change counts as stable.
    max_rows_change: float = _field(0.1, _ratio)
    max_ttl_s: int = _field(3600, _positive)


@dataclasses.dataclass(frozen=True)
class AuditorConfig:
    thresholds: ThresholdsConfig = dataclasses.field(default_factory=ThresholdsConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    api: ApiConfig = dataclasses.field(default_factory=ApiConfig)
    lifecycle: LifecycleConfig = dataclasses.field(default_factory=LifecycleConfig)
    partitioning: PartitioningConfig = dataclasses.field(default_factory=PartitioningConfig)
    caching: CachingConfig = dataclasses.field(default_factory=CachingConfig)
    # The slow statements' real parameters, from the server's log (docs/logged-parameters.md): off, a mounted
    # log directory, or pg_read_binary_file over the auditor's connection.
    server_log: str = _field("off", _one_of("off", "directory", "pg_read_file"))
    server_log_directory: str | None = None
    server_log_max_bytes: int = _field(256 * 1024 * 1024, _positive)


@dataclasses.dataclass(frozen=True)
class MeasurementConfig:
    mode: str = _field("auto", _one_of("auto", "hypothetical", "rollback_build", "staging"))
    staging_dsn: str | None = _field(None, _dsn)
    # A real index build on the audited server blocks writes to its table while it runs: only when the
    # user opts in (here, or with mode: rollback_build), and only while the expected lock stays short.
    allow_blocking_builds: bool = False
    max_blocking_ms: int = _field(1000, _positive)
    max_table_bytes: int = _field(1073741824, _positive)
    lock_timeout_ms: int = _field(2000, _positive)
    statement_timeout_ms: int = _field(30000, _positive)


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    base_url: str | None = None
    model: str | None = None
    api_key_file: str | None = None
    embedding_model: str | None = None
    # Off switches: everywhere, or for the audited databases named here (by database name).
    enabled: bool = True
    disabled_targets: list[str] = _field([])
    timeout_s: float = _field(60.0, _positive)
    max_retries: int = _field(2, _non_negative)
    # Per audit: once either is spent the audit goes on without the model.
    max_requests: int = _field(60, _non_negative)
    max_tokens: int = _field(200_000, _non_negative)
    # Column statistics (pg_stats values are real data) leave the machine only when opted in.
    share_column_stats: bool = False


@dataclasses.dataclass(frozen=True)
class MigrationsConfig:
    format: str = _field("prisma", _one_of("prisma", "sql"))
    path: str = _field("prisma/migrations", _relative_path)


@dataclasses.dataclass(frozen=True)
class GithubConfig:
    repo: str | None = _field(None, _check_repo)
    token_file: str | None = None
    base_branch: str = _field("main", _check_branch)
    local_repo: str | None = None
    api_url: str = _field("https://api.github.com", _http_url)
    migrations: MigrationsConfig = dataclasses.field(default_factory=MigrationsConfig)
    labels: list[str] = _field(["database", "ai-generated", "optimization"])


@dataclasses.dataclass(frozen=True)
class SlackConfig:
    webhook_url_file: str | None = None


@dataclasses.dataclass(frozen=True)
class GrafanaConfig:
    url: str | None = _field(None, _http_url)
    token_file: str | None = None
    dashboard_uid: str | None = None


@dataclasses.dataclass(frozen=True)
class PushgatewayConfig:
    url: str | None = _field(None, _http_url)


@dataclasses.dataclass(frozen=True)
class Config:
    database: DatabaseConfig = dataclasses.field(default_factory=DatabaseConfig)
    exporter: ExporterConfig = dataclasses.field(default_factory=ExporterConfig)
    auditor: AuditorConfig = dataclasses.field(default_factory=AuditorConfig)
    measurement: MeasurementConfig = dataclasses.field(default_factory=MeasurementConfig)
    llm: LlmConfig = dataclasses.field(default_factory=LlmConfig)
    github: GithubConfig = dataclasses.field(default_factory=GithubConfig)
    slack: SlackConfig = dataclasses.field(default_factory=SlackConfig)
    grafana: GrafanaConfig = dataclasses.field(default_factory=GrafanaConfig)
    pushgateway: PushgatewayConfig = dataclasses.field(default_factory=PushgatewayConfig)
    targets: list[TargetConfig] = dataclasses.field(default_factory=list)
    # Secrets read from the standard variables or *_FILE settings; never printed.
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def kb_dsn(self) -> str:
        """The knowledge base's DSN: ``database.kb_dsn``, else the audited database."""
        return self.database.kb_dsn or self.database.dsn

    def secret(self, name: str) -> str | None:
        """One of ``openai_api_key``, ``github_token``, ``slack_webhook_url``, ``api_token``, ``grafana_token``."""
        return self.secrets.get(name)


T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if _is_dataclass_list(tp):
        return "a list of mappings"
    if typing.get_origin(tp) is list:
        return "a list of strings"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) for a YAML/env value against a field type."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(tp):
            return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, out = _coerce(value, arg)
                if ok:
                    return True, out
        return False, None
    if typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    return False, None


def _build(cls: type[T], data: Mapping[str, Any], path: str, problems: list[str]) -> T:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "secrets"}  # type: ignore[arg-type,unused-ignore]
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{path}{key}: unknown key (known: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        value, tp = data[name], hints[name]
        if _is_dataclass_list(tp):
            if value is None:
                continue
            if not isinstance(value, list):
                problems.append(f"{path}{name}: expected a list of mappings, got {value!r}")
                continue
            kwargs[name] = _build_list(typing.get_args(tp)[0], value, f"{path}{name}", problems)
            continue
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                # A section's value is never shown: a DSN pasted where the section belongs is common.
                problems.append(f"{path}{name}: expected a mapping, got {_kind(value)}")
                continue
            kwargs[name] = _build(tp, value, f"{path}{name}.", problems)  # type: ignore[arg-type]
            continue
        ok, coerced = _coerce(value, tp)
        if not ok:
            problems.append(f"{path}{name}: expected {_describe(tp)}, got {_shown(value, name)}")
            continue
        check = f.metadata.get("check")
        if check is not None and coerced is not None:
            message = check(coerced)
            if message:
                problems.append(f"{path}{name}: {message}")
                continue
        kwargs[name] = coerced
    return cls(**kwargs)


def _is_dataclass_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0])


def _build_list(cls: type[T], items: list[Any], path: str, problems: list[str]) -> list[T]:
    out: list[T] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]."
        if not isinstance(item, Mapping):
            problems.append(f"{path}[{i}]: expected a mapping, got {item!r}")
            continue
        before = len(problems)
        built = _build(cls, item, where, problems)
        if cls is TargetConfig and len(problems) == before:
            _check_target(built, where, problems)  # type: ignore[arg-type]
        out.append(built)
    if cls is TargetConfig:
        names = [t.name for t in out]  # type: ignore[attr-defined]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{path}: target name {dup!r} is used more than once")
    return out


def _check_target(t: TargetConfig, where: str, problems: list[str]) -> None:
    if not t.name:
        problems.append(f"{where}name: required")
    if (t.dsn is None) == (t.dsn_file is None):
        problems.append(f"{where}dsn: give exactly one of dsn and dsn_file")
    elif t.dsn_file is not None and not Path(t.dsn_file).expanduser().is_file():
        problems.append(f"{where}dsn_file: cannot read {t.dsn_file}")


def _env_key(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(p.upper() for p in path)


def _leaf_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "secrets":
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(_leaf_paths(tp, (*prefix, f.name)))  # type: ignore[arg-type]
        else:
            out.append((*prefix, f.name))
    return out


def _read_secret_file(path: str, what: str, problems: list[str]) -> str | None:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{what}: cannot read {path}: {exc.strerror or exc}")
        return None


def _overlay_env(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    known = {_env_key(p) for p in _leaf_paths(Config)}
    for p in _leaf_paths(Config):
        key = _env_key(p)
        raw: str | None = None
        if key + "_FILE" in env:
            raw = _read_secret_file(env[key + "_FILE"], key + "_FILE", problems)
        elif key in env:
            raw = env[key]
        if raw is None:
            continue
        node: Any = data
        for part in p[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            node = child
        if isinstance(node, dict):  # else the section is not a mapping, and _build says so
            node[p[-1]] = _env_value(raw, p, problems)
    standard = {variable for variable, _ in _STANDARD_SECRETS.values()}
    for key in env:
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV and key not in standard:
            base = key.removesuffix("_FILE")
            if base not in known and key not in known:
                problems.append(f"{key}: unknown environment setting")


def _env_value(raw: str, path: tuple[str, ...], problems: list[str]) -> Any:
    tp = _field_type(path)
    if tp is str or (typing.get_origin(tp) in (types.UnionType, typing.Union) and str in typing.get_args(tp)):
        return None if raw.lower() in ("", "null", "none") and type(None) in typing.get_args(tp) else raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        problems.append(f"{_env_key(path)}: cannot parse {raw!r}")
        return None


def _field_type(path: tuple[str, ...]) -> Any:
    cls: Any = Config
    tp: Any = None
    for part in path:
        tp = _hints(cls)[part]
        cls = tp
    return tp


_STANDARD_SECRETS = {
    "openai_api_key": ("OPENAI_API_KEY", ("llm", "api_key_file")),
    "github_token": ("GITHUB_TOKEN", ("github", "token_file")),
    "slack_webhook_url": ("SLACK_WEBHOOK_URL", ("slack", "webhook_url_file")),
    "api_token": ("PG_ARCHITECT_API_TOKEN", ("auditor", "api", "token_file")),
    "grafana_token": ("GRAFANA_TOKEN", ("grafana", "token_file")),
}


# A secret whose integration is configured without it is useless; one of an unconfigured integration may be
# missing (docker compose passes every secret file's path, configured or not).
_NEEDED_BY: dict[str, Callable[[Config], bool]] = {
    "github_token": lambda cfg: cfg.github.repo is not None,
    "grafana_token": lambda cfg: cfg.grafana.url is not None,
    "openai_api_key": lambda cfg: cfg.llm.base_url is not None or cfg.llm.model is not None,
}


def _resolve_secrets(cfg: Config, env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for name, (variable, file_path) in _STANDARD_SECRETS.items():
        node: Any = cfg
        for part in file_path:
            node = getattr(node, part)
        value: str | None = None
        if node and name in _NEEDED_BY and not _NEEDED_BY[name](cfg) and not Path(node).expanduser().exists():
            continue  # the secret of an integration that is not configured is optional, its file too
        if node:
            value = _read_secret_file(node, ".".join(file_path), problems)
        elif env.get(variable):
            value = env[variable]
        if value:
            secrets[name] = value
    return secrets


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load and validate the configuration; raise ConfigError listing every problem.

    ``overrides`` are dotted keys from command-line flags (``{"database.dsn": ...}``), applied last.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    data: dict[str, Any] = {}
    path = path or env.get(CONFIG_ENV)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # PyYAML's message quotes the offending line, which may hold a password: say where, not what.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
        data = loaded
    _overlay_env(data, env, problems)
    if "OPENAI_BASE_URL" in env and not (data.get("llm") or {}).get("base_url"):
        data.setdefault("llm", {})
        if isinstance(data["llm"], dict):
            data["llm"]["base_url"] = env["OPENAI_BASE_URL"]
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node: Any = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                break  # a section given as a scalar: _build reports it, the flag cannot land in it
        else:
            node[leaf] = value
    cfg = _build(Config, data, "", problems)
    _cross_checks(cfg, problems)
    secrets = _resolve_secrets(cfg, env, problems)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, secrets=secrets)
