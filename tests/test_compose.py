"""docker-compose.yml, checked without a container engine: it parses, everything it mounts exists, ports and
PG_ARCHITECT_* names follow the contract, every secret has an example, and the stack's configs agree with each
other (host names, ports, paths)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"

# CONTRACT.md, "Configuration": the keys; env names are PG_ARCHITECT_<SECTION>_<KEY> (nested keys joined with
# "_"), and any of them may be read from a file with a _FILE suffix. auditor.api.public_url extends the contract
# (the links in Slack, pull requests and annotations; docs/delivery.md).
CONTRACT_CONFIG = """
database:    {dsn: "postgresql://...", kb_dsn: null}
exporter:    {listen: "0.0.0.0:9188", scrape_budget_s: 5, data_directory: null, disk_capacity_bytes: null}
auditor:
  thresholds: {min_mean_ms: 500, min_calls: 100, limit: 20, min_gain_percent: 20, similarity_skip: 0.85}
  schedule:   {timezone: "Asia/Ho_Chi_Minh", weekly_audit: "sunday 02:00", daily_snapshot: "03:00",
               weekly_report: "monday 09:00"}
  api:        {listen: "127.0.0.1:3001", token_file: null, public_url: null}
measurement: {mode: auto, staging_dsn: null, max_table_bytes: 1073741824, lock_timeout_ms: 2000,
              statement_timeout_ms: 30000}
llm:         {base_url: null, model: null, api_key_file: null}
github:      {repo: null, token_file: null, base_branch: main, local_repo: null,
              migrations: {format: prisma, path: "prisma/migrations"}, labels: [database, ai-generated, optimization]}
slack:       {webhook_url_file: null}
grafana:     {url: null, token_file: null, dashboard_uid: null}
pushgateway: {url: null}
"""
STANDARD_ENV = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "GITHUB_TOKEN", "SLACK_WEBHOOK_URL", "PG_ARCHITECT_CONFIG"}

SERVICES = {"postgres", "exporter", "auditor", "prometheus", "alertmanager", "pushgateway", "grafana"}
# service -> {container port: host address it is published on}
PORTS = {
    "exporter": {9188: "127.0.0.1"},
    "auditor": {3001: "127.0.0.1"},
    "prometheus": {9090: "127.0.0.1"},
    "alertmanager": {9093: "127.0.0.1"},
    "pushgateway": {9091: "127.0.0.1"},
    "grafana": {3000: "0.0.0.0"},
}


def _compose() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, with every variable unset."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _env_names(node: Any, path: tuple[str, ...] = ()) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_env_names(v, (*path, k)) for k, v in node.items()))
    return {"PG_ARCHITECT_" + "_".join(p.upper() for p in path)}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume entry, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        out.append((source, target))
    return out


def _secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """secret name -> path inside the container."""
    out = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, str):
            out[secret] = f"/run/secrets/{secret}"
        else:
            target = secret.get("target", secret["source"])
            out[secret["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
    return out


def test_compose_file_defines_the_whole_stack() -> None:
    assert set(_services()) == SERVICES, sorted(_services())


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_restarts_and_has_a_healthcheck(name: str) -> None:
    service = _services()[name]
    assert service.get("restart") == "unless-stopped", (name, service.get("restart"))
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] in {"CMD", "CMD-SHELL"}, (name, service.get("healthcheck"))


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_file_or_directory_exists_in_the_repo(name: str) -> None:
    declared = set(_compose().get("volumes", {}))
    for source, target in _mounts(_services()[name]):
        if source.startswith((".", "/")):
            assert (REPO / source).exists(), f"{name} mounts {source} at {target}, which is not in the repo"
        else:
            assert source in declared, f"{name} uses volume {source!r}, not declared under volumes: {declared}"


def test_every_named_volume_is_used() -> None:
    used = {source for s in _services().values() for source, _ in _mounts(s)}
    unused = set(_compose().get("volumes", {})) - used
    assert not unused, f"declared but unused volumes: {unused}"


@pytest.mark.parametrize("name", sorted(PORTS))
def test_published_ports_match_the_contract(name: str) -> None:
    published = {}
    for entry in _services()[name].get("ports", []):
        parts = _interpolate(str(entry)).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        host_port, container_port = int(parts[-2]), int(parts[-1])
        assert host_port == container_port, f"{name}: {entry} publishes {container_port} on another port"
        published[container_port] = host_ip
    assert published == PORTS[name], f"{name}: published {published}, expected {PORTS[name]}"


def test_pg_architect_environment_names_are_contract_config_keys() -> None:
    keys = _env_names(yaml.safe_load(CONTRACT_CONFIG))
    allowed = keys | {k + "_FILE" for k in keys} | STANDARD_ENV
    unknown = {
        (name, var)
        for name, service in _services().items()
        for var in service.get("environment", {})
        if (var.startswith("PG_ARCHITECT_") or var in STANDARD_ENV) and var not in allowed
    }
    # The config loader rejects unknown PG_ARCHITECT_* variables, so a typo here stops the service.
    assert not unknown, f"not a configuration key in CONTRACT.md: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["exporter", "auditor"])
def test_pg_architect_services_read_the_dsn_from_a_secret_file(name: str) -> None:
    service = _services()[name]
    env = service["environment"]
    assert "PG_ARCHITECT_DATABASE_DSN" not in env, "the DSN holds a password: use the _FILE variant"
    assert env.get("PG_ARCHITECT_DATABASE_DSN_FILE") == "/run/secrets/database_dsn", env
    targets = set(_secret_targets(service).values())
    file_vars = {var: path for var, path in env.items() if var.endswith("_FILE")}
    unmounted = {var: path for var, path in file_vars.items() if path not in targets}
    assert not unmounted, f"{name}: *_FILE variables pointing at no mounted secret: {unmounted}"


def test_every_secret_is_a_file_under_secrets_with_an_example() -> None:
    secrets = _compose()["secrets"]
    for name, spec in secrets.items():
        path = Path(spec["file"])
        assert path.parent == Path("secrets"), f"secret {name} is not under ./secrets/: {spec}"
        example = REPO / f"{spec['file']}.example"
        assert example.is_file(), f"secret {name}: no {example.relative_to(REPO)}"
    used = {secret for s in _services().values() for secret in _secret_targets(s)}
    assert used == set(secrets), f"used {sorted(used)} vs declared {sorted(secrets)}"


def test_real_secret_files_are_ignored_by_git_and_examples_are_not() -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")

    def ignored(path: str) -> bool:
        result = subprocess.run(
            [git, "check-ignore", "--no-index", "-q", path], cwd=REPO, capture_output=True, check=False
        )
        assert result.returncode in (0, 1), result.stderr
        return result.returncode == 0

    for name, spec in _compose()["secrets"].items():
        assert ignored(spec["file"]), f"secret {name} ({spec['file']}) would be committed"
        assert not ignored(spec["file"] + ".example"), f"{spec['file']}.example is ignored by git"


def test_postgres_preloads_pg_stat_statements_with_query_ids_and_io_timing() -> None:
    postgres = _services()["postgres"]
    # pgvector's image plus hypopg, so audits measure hypothetically and never block writes.
    assert postgres["build"] == "./docker/postgres", postgres
    dockerfile = (REPO / "docker" / "postgres" / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM pgvector/pgvector:pg17" in dockerfile and 'postgresql-${PG_MAJOR}-hypopg' in dockerfile
    initdb = (REPO / "docker" / "postgres" / "initdb" / "10-pg-architect.sql").read_text(encoding="utf-8")
    assert initdb.count("CREATE EXTENSION IF NOT EXISTS hypopg") == 2, initdb
    settings = " ".join(postgres["command"])
    for setting in ("shared_preload_libraries=pg_stat_statements", "compute_query_id=on", "track_io_timing=on"):
        assert setting in settings, f"{setting} missing from {postgres['command']}"
    assert postgres["environment"].get("POSTGRES_PASSWORD_FILE") == "/run/secrets/postgres_password"
    assert any(target == "/var/lib/postgresql/data" for _, target in _mounts(postgres))


def test_exporter_and_auditor_run_the_pg_architect_image_with_contract_commands() -> None:
    services = _services()
    for name in ("exporter", "auditor"):
        assert services[name]["build"] == ".", services[name]
    assert services["exporter"]["command"] == ["exporter", "--listen", "0.0.0.0:9188"]
    assert services["auditor"]["command"] == ["serve"]
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.12-slim\b", dockerfile, re.MULTILINE), dockerfile
    assert re.search(r"pip install \.", dockerfile), dockerfile
    assert re.search(r'^ENTRYPOINT \["pg-architect"\]', dockerfile, re.MULTILINE), dockerfile
    assert not re.search(r"^COPY \. ", dockerfile, re.MULTILINE), "COPY . would put ./secrets in the image"


def test_exporter_sees_the_postgres_data_volume_for_disk_metrics() -> None:
    services = _services()
    data_volume = next(src for src, tgt in _mounts(services["postgres"]) if tgt == "/var/lib/postgresql/data")
    exporter = services["exporter"]
    data_dir = exporter["environment"]["PG_ARCHITECT_EXPORTER_DATA_DIRECTORY"]
    assert (data_volume, data_dir) in _mounts(exporter), (
        f"{data_dir} is not the {data_volume} volume in the exporter: {_mounts(exporter)}"
    )
    assert f"{data_volume}:{data_dir}:ro" in exporter["volumes"], "mount the data volume read-only"


# -- The configs agree with the compose file -----------------------------------------------------------------


def _load(relative: str) -> Any:
    with (REPO / relative).open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _container_ports(name: str) -> set[int]:
    return {int(_interpolate(str(p)).split(":")[-1]) for p in _services()[name].get("ports", [])}


def test_prometheus_targets_are_compose_services_on_their_ports() -> None:
    config = _load("prometheus/prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    targets += [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            host = "prometheus"
        assert host in SERVICES, f"prometheus.yml target {target}: no compose service {host}"
        assert int(port) in _container_ports(host), f"prometheus.yml target {target}: {host} does not serve {port}"


def test_prometheus_mount_holds_its_rule_files() -> None:
    prometheus = _services()["prometheus"]
    assert ("./prometheus", "/etc/prometheus") in _mounts(prometheus), _mounts(prometheus)
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for pattern in _load("prometheus/prometheus.yml")["rule_files"]:
        assert list((REPO / "prometheus").glob(pattern)), f"rule_files {pattern} matches nothing"


def test_alertmanager_reads_the_slack_url_from_the_mounted_secret() -> None:
    alertmanager = _services()["alertmanager"]
    targets = set(_secret_targets(alertmanager).values())
    files = {
        sc["api_url_file"] for r in _load("alertmanager/alertmanager.yml")["receivers"] for sc in r["slack_configs"]
    }
    assert files <= targets, f"api_url_file {files} not mounted (secrets at {targets})"
    mounts = dict((t, s) for s, t in _mounts(alertmanager))
    assert mounts.get("/etc/alertmanager/alertmanager.yml") == "./alertmanager/alertmanager.yml", mounts
    # alertmanager.yml loads templates/*.tmpl relative to itself.
    assert mounts.get("/etc/alertmanager/templates") == "./alertmanager/templates", mounts


def test_grafana_provisioning_and_dashboards_are_mounted_where_the_provider_looks() -> None:
    grafana = _services()["grafana"]
    mounts = {t: s for s, t in _mounts(grafana)}
    assert mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning", mounts
    provider_paths = {
        p["options"]["path"] for p in _load("grafana/provisioning/dashboards/dashboards.yml")["providers"]
    }
    for path in provider_paths:
        assert mounts.get(path) == "./grafana/dashboards", f"provider path {path} not mounted: {mounts}"
    datasources = _load("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    urls = {ds["url"] for ds in datasources}
    assert urls == {"http://prometheus:9090"}, urls
    assert 9090 in _container_ports("prometheus")
    env = grafana["environment"]
    assert env.get("GF_SECURITY_ADMIN_PASSWORD__FILE") == "/run/secrets/grafana_admin_password", env
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env, "the admin password belongs in a secret file"


def test_auditor_points_at_the_stack() -> None:
    env = _services()["auditor"]["environment"]
    assert env["PG_ARCHITECT_PUSHGATEWAY_URL"] == "http://pushgateway:9091", env
    assert env["PG_ARCHITECT_GRAFANA_URL"] == "http://grafana:3000", env
    dashboard_uid = json.loads((REPO / "grafana/dashboards/pg-architect.json").read_text(encoding="utf-8"))["uid"]
    assert env["PG_ARCHITECT_GRAFANA_DASHBOARD_UID"] == dashboard_uid, (env, dashboard_uid)
    host, port = env["PG_ARCHITECT_AUDITOR_API_LISTEN"].rsplit(":", 1)
    # Inside the container it must listen beyond loopback to be reachable through the published port.
    assert host == "0.0.0.0" and int(port) in _container_ports("auditor"), env


def test_auditor_links_point_at_its_published_port_by_default() -> None:
    auditor = _services()["auditor"]
    value = auditor["environment"]["PG_ARCHITECT_AUDITOR_API_PUBLIC_URL"]
    # "${PG_ARCHITECT_AUDITOR_API_PUBLIC_URL:-http://localhost:3001}": overridable, with a default that works.
    match = re.fullmatch(r"\$\{PG_ARCHITECT_AUDITOR_API_PUBLIC_URL:-(http://[^}]+)\}", value)
    assert match, value
    port = urllib.parse.urlsplit(match.group(1)).port
    published = [str(p).split(":")[-2] for p in auditor["ports"]]
    assert str(port) in published, (value, auditor["ports"])
