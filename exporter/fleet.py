"""Many databases behind one exporter: ``/probe?target=NAME``, Prometheus' multi-target pattern.

Each configured target (``targets: [{name, dsn, dsn_file}]``) is one database. Its probe has two parts:

- its own: a :class:`Target` running only the per-database groups (``server``, ``knowledge_base``) on the
  target's own connection, with its own budget, state and failures: ``pg_up`` says whether *this* database
  answers; a stopped or hung database answers ``pg_up 0`` within its budget and slows no other target;
- its server's: the cluster-wide views (pg_stat_database, pg_stat_activity, pg_locks, pg_stat_statements,
  settings, bgwriter, replication) are the same whichever database of a server reads them, so one
  :class:`Target` per server reads them once and shares the result with the probes of all its databases for
  up to ``exporter.probe_cache_s`` (exported as ``pgarch_collection_age_seconds``). Series labelled with a
  database (``datname``) are served only to that database's probe.

Servers are told apart by host, port and user of the DSN (two DSNs differing only in the database are one
server); the server's reader connects to its first target's database, and to the next one's when that fails.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from pg_architect.core import db
from pg_architect.core.config import Config, TargetConfig
from pg_architect.core.errors import ConfigError, DatabaseError
from pg_architect.exporter.target import COLLECTORS, Target

log = logging.getLogger(__name__)

PER_DATABASE = ("server", "knowledge_base")
CLUSTER = tuple(g for g in COLLECTORS if g != "knowledge_base")
# Series of the server's reader that describe the reader's own scrape, replaced by the probe's.
_OWN = {"pg_up", "pgarch_scrape_duration_seconds", "pgarch_scrape_collector_success"}


def server_key(dsn: str) -> tuple[str, str, str]:
    """Which server a DSN reaches: (host, port, user); the database is left out on purpose."""
    try:
        params = db.parse_dsn(dsn)
    except DatabaseError as exc:
        raise ConfigError([f"targets: {exc}"]) from exc
    return (params.get("host", ""), params.get("port", "5432"), params.get("user", ""))


def _database_of(dsn: str) -> str | None:
    params = db.parse_dsn(dsn)
    return params.get("dbname") or params.get("user")


@dataclasses.dataclass
class Probe:
    """One configured target: its name, its own per-database Target, and its server's shared reader."""

    name: str
    own: Target
    server: Target


class Fleet:
    """Every configured target, grouped by server."""

    def __init__(self, config: Config, targets: Sequence[TargetConfig] | None = None) -> None:
        self.config = config
        self.probes: dict[str, Probe] = {}
        self.servers: dict[tuple[str, str, str], Target] = {}
        members: dict[tuple[str, str, str], list[str]] = {}
        resolved = [(t.name, t.resolved_dsn()) for t in (config.targets if targets is None else targets)]
        for _, dsn in resolved:
            members.setdefault(server_key(dsn), []).append(dsn)
        for key, dsns in members.items():
            label = f"{key[0] or 'local'}:{key[1]}"
            # No pg_stat_activity sampler for probed servers (Target's docstring): their p95 rests on
            # pg_stat_statements and, where configured, the duration log.
            self.servers[key] = Target(
                f"server {label}", dsns[0], config, groups=CLUSTER, fallback_dsns=dsns[1:], activity_sampling=False
            )
        for name, dsn in resolved:
            own = Target(name, dsn, config, groups=PER_DATABASE, activity_sampling=False)
            own.datname = _database_of(dsn)
            self.probes[name] = Probe(name, own, self.servers[server_key(dsn)])

    def probe(self, name: str, budget_s: float) -> list[Metric]:
        """The families of target ``name`` within ``budget_s`` (KeyError for an unknown name)."""
        probe = self.probes[name]
        started = time.monotonic()
        shared: list[tuple[list[Metric], float]] = []
        # The server's part runs beside the database's own. It is collected under the configured budget, not
        # this probe's: a probe with a short timeout waits only its own budget, and the collection it leaves
        # running is there for the next probes of the same server (a short timeout never starves it).
        budget = self.config.exporter.scrape_budget_s
        reader = threading.Thread(
            target=lambda: shared.append(probe.server.scrape_shared(budget, self.config.exporter.probe_cache_s)),
            name=f"probe-{name}",
            daemon=True,
        )
        reader.start()
        own = probe.own.scrape(budget_s)
        reader.join(timeout=max(started + budget_s - time.monotonic(), 0.0))
        return merge(own, shared[0] if shared else None, probe.own.datname, time.monotonic() - started)

    def close(self) -> None:
        for probe in self.probes.values():
            probe.own.close()
        for server in self.servers.values():
            server.close()


def merge(
    own: list[Metric], shared: tuple[list[Metric], float] | None, datname: str | None, seconds: float
) -> list[Metric]:
    """One probe's answer: the database's own series, and its server's filtered to this database.

    When the database itself does not answer (``pg_up 0``) nothing of its server is shown: a down target
    shows ``pg_up 0`` and the exporter's own series, as ``/metrics`` does.
    """
    up = any(f.name == "pg_up" and f.samples and f.samples[0].value == 1.0 for f in own)
    success = GaugeMetricFamily(
        "pgarch_scrape_collector_success", "1 when the collector group succeeded.", labels=["collector"]
    )
    out: list[Metric] = []
    for family in own:
        if family.name == "pgarch_scrape_collector_success":
            for sample in family.samples:
                success.add_metric([sample.labels["collector"]], sample.value)
        elif family.name != "pgarch_scrape_duration_seconds":
            out.append(family)
    server_groups: dict[str, float] = dict.fromkeys((g for g in CLUSTER if g != "server"), 0.0)
    if up and shared is not None:
        families, age = shared
        server_up = any(f.name == "pg_up" and f.samples and f.samples[0].value == 1.0 for f in families)
        for family in families:
            if family.name == "pgarch_scrape_collector_success":
                for sample in family.samples:
                    if sample.labels["collector"] in server_groups:
                        server_groups[sample.labels["collector"]] = sample.value
            elif family.name not in _OWN:
                out.append(_for_database(family, datname))
        if server_up:
            age_family = GaugeMetricFamily(
                "pgarch_collection_age_seconds",
                "Seconds since the cluster-wide collection served in this probe was taken: one server's "
                "cluster-wide views are read once and shared by the probes of its databases for up to "
                "exporter.probe_cache_s.",
            )
            age_family.add_metric([], age)
            out.append(age_family)
    for group, value in server_groups.items():
        success.add_metric([group], value)
    duration = GaugeMetricFamily("pgarch_scrape_duration_seconds", "Time this scrape took.")
    duration.add_metric([], seconds)
    return [*out, duration, success]


def _for_database(family: Metric, datname: str | None) -> Metric:
    """``family`` without the samples of other databases (samples without ``datname`` are server-wide)."""
    if not any("datname" in s.labels for s in family.samples):
        return family
    copy = Metric(family.name, family.documentation, family.type)  # sample names are kept as they are
    copy.samples = [s for s in family.samples if s.labels.get("datname", datname) == datname]
    return copy
