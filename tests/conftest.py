"""Test harness: real PostgreSQL servers only.

- ``embedded_pg``: one embedded PostgreSQL 18 (pgvector, pg_stat_statements preloaded) for the session.
- ``postgresql``: a fresh database on it per test (pytest-postgresql's ``noproc`` factories).
- ``debian_pg``: Debian's PostgreSQL (whatever major is installed) with hypopg and pg_qualstats, for the
  measurement and advisor-comparison tests; skipped with the reason when not installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql import factories

from pg_architect.core.embedded import EmbeddedPostgres, free_port

TEMPLATE_EXTENSIONS = ("pg_stat_statements", "vector")


@dataclasses.dataclass
class ServerInfo:
    """What pytest-postgresql's noproc factory reads from the fixture it depends on."""

    host: str
    port: int
    user: str
    password: str | None = None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None
    server: EmbeddedPostgres | DebianPostgres | None = None

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        cred = user or self.user
        if password or self.password:
            cred += f":{password or self.password}"
        return f"postgresql://{cred}@{self.host}:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[ServerInfo]:
    root = Path(tempfile.mkdtemp(prefix="pgarch-test-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    try:
        with psycopg.connect(server.dsn("template1"), autocommit=True) as conn:
            for ext in TEMPLATE_EXTENSIONS:
                conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
        yield ServerInfo(host=server.host, port=server.port, user="postgres", server=server)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


pg_noproc = factories.postgresql_noproc(depends_on="embedded_pg")
postgresql = factories.postgresql("pg_noproc")


@pytest.fixture
def pg_dsn(postgresql: psycopg.Connection, embedded_pg: ServerInfo) -> str:
    """DSN of this test's fresh database on the embedded server."""
    return embedded_pg.dsn(postgresql.info.dbname)


# -- Debian's PostgreSQL, for hypopg / pg_qualstats --------------------------------------------------


def _debian_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    majors = sorted(
        (p for p in root.iterdir() if p.name.isdigit() and (p / "bin" / "postgres").exists()), key=lambda p: int(p.name)
    )
    return majors[-1] / "bin" if majors else None


class DebianPostgres:
    """Debian's server, run as the ``postgres`` system user in a throwaway data directory."""

    def __init__(self, bin_dir: Path, preload: str) -> None:
        self.bin_dir = bin_dir
        self.major = int(bin_dir.parent.name)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pgarch-debian-"))
        self.data = self.root / "data"
        self.preload = preload
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            cwd="/",
            timeout=120,
        )

    def start(self) -> None:
        os.chmod(self.root, 0o755)
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-instructions")
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                f"shared_preload_libraries = '{self.preload}'\ncompute_query_id = on\n"
                "pg_qualstats.sample_rate = 1\nmax_connections = 300\n"
            )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres").close()
                return
            except psycopg.OperationalError:
                time.sleep(0.2)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def debian_pg() -> Iterator[ServerInfo]:
    bin_dir = _debian_bin()
    if bin_dir is None:
        pytest.skip("Debian's PostgreSQL server is not installed (apt-get install postgresql)")
    lib = Path(
        subprocess.run(
            [str(bin_dir / "pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    missing = [ext for ext in ("hypopg", "pg_qualstats") if not (lib / f"{ext}.so").exists()]
    if missing:
        major = bin_dir.parent.name
        pytest.skip(
            f"missing {', '.join(missing)}: apt-get install "
            + " ".join(f"postgresql-{major}-{m.replace('_', '-')}" for m in missing)
        )
    server = DebianPostgres(bin_dir, "pg_stat_statements,pg_qualstats")
    server.start()
    try:
        yield ServerInfo(host="127.0.0.1", port=server.port, user="postgres", server=server)
    finally:
        server.stop()


def make_database(server: ServerInfo, name: str, extensions: tuple[str, ...] = ()) -> str:
    """Create a fresh database on ``server`` (dropping any old one) and return its DSN."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        for ext in extensions:
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
    return server.dsn(name)


# -- markers: server version and Debian's PostgreSQL ---------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on Debian's server carry the ``debian_pg`` marker, so ``-m "not debian_pg"`` leaves them out."""
    for item in items:
        if "debian_pg" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.debian_pg)


@pytest.fixture(scope="session")
def embedded_version(embedded_pg: ServerInfo) -> int:
    with psycopg.connect(embedded_pg.dsn(), autocommit=True) as conn:
        return int(conn.info.server_version)


@pytest.fixture(autouse=True)
def _server_version_gate(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.server_version(170000, reason)``: skip unless the embedded server is at least that version."""
    marker = request.node.get_closest_marker("server_version")
    if marker is None:
        return
    needed = int(marker.args[0])
    have = int(request.getfixturevalue("embedded_version"))
    if have < needed:
        reason = marker.args[1] if len(marker.args) > 1 else "a newer server"
        pytest.skip(f"needs PostgreSQL {needed // 10000}+ ({reason}); the embedded server is {have}")
