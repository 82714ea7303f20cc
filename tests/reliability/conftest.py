"""The reliability suite's harness: a PostgreSQL of each test's own (to kill, restart and exhaust), an
in-process exporter in front of it, and the ``soak`` marker's gate.

The soak test runs only when asked for (``-m soak``, as ``.ci/soak`` does): it takes ten minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pg_architect.core.config import Config, load_config
from pg_architect.core.embedded import EmbeddedPostgres
from pg_architect.exporter.server import ExporterServer
from pg_architect.exporter.target import Target

#: Bounds for every wait in this suite: polls are counted, never open-ended.
POLL_S = 0.1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the 10-minute soak runs only with -m soak (.ci/soak)")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)


def wait_until(check: Callable[[], bool], what: str, polls: int = 600) -> None:
    """Poll ``check`` up to ``polls`` times (POLL_S apart); fail naming ``what`` if it never holds."""
    for _ in range(polls):
        if check():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{what}: not after {polls} polls")


class OwnPostgres(EmbeddedPostgres):
    """An embedded server this test may kill: SIGKILL to the postmaster, then start again."""

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        # The backends notice their postmaster is gone and exit; wait for the port and the children.
        wait_until(lambda: not self.running(), "the killed postmaster to be gone")
        wait_until(lambda: not _children_alive(self.data_dir), "the orphaned backends to exit")


def _children_alive(data_dir: Path) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ_cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"postgres" in cmdline and environ_cwd == str(data_dir):
            return True
    return False


@pytest.fixture
def own_pg(request: pytest.FixtureRequest) -> Iterator[OwnPostgres]:
    marker = request.node.get_closest_marker("pg_settings")
    settings = dict(marker.args[0]) if marker else {}
    root = Path(tempfile.mkdtemp(prefix="pgarch-rel-"))
    server = OwnPostgres(root / "data", settings={"max_connections": "40", "shared_buffers": "32MB", **settings})
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


def config(**env: str) -> Config:
    return load_config(None, env={f"PG_ARCHITECT_{k.upper()}": v for k, v in env.items()})


class Exporter:
    """The exporter's HTTP server in this process, scraped over 127.0.0.1."""

    def __init__(self, dsn: str, cfg: Config) -> None:
        self.target = Target("default", dsn, cfg)
        self.server = ExporterServer(("127.0.0.1", 0), self.target)
        self.port = int(self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.target.close()
        self.thread.join(10)

    def scrape(self, timeout: float = 60) -> tuple[dict[str, float], float]:
        """One scrape: ({"pg_up": 1.0, ...} for unlabelled samples, seconds it took)."""
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as resp:
            assert resp.status == 200
            text = resp.read().decode()
        took = time.monotonic() - started
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name if not sample.labels else f"{sample.name}{sorted(sample.labels.items())}"
                samples[key] = sample.value
        return samples, took

    def up(self) -> bool:
        return self.scrape()[0].get("pg_up") == 1.0


def backends(dsn: str, application_name: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchone()
        return int(row[0]) if row else 0
