"""A throwaway PostgreSQL server for the test session, and a fresh database per test (pytest-postgresql's janitor).

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytest_postgresql.janitor import DatabaseJanitor

from hokusai.server.runner import free_loopback_port

REQUIRE_ENV = "HOKUSAI_TEST_REQUIRE_POSTGRES"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    version: str
    bindir: Path
    base: Path

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base / 'sock'} -c listen_addresses={self.host} -c fsync=off "
        options += "-c max_connections=200"
        self._pg_ctl("-o", options, "-l", str(self.base / "log"), "-w", "start")

    def stop(self) -> None:
        """An outage as abrupt as a crash: connections are cut, nothing is shut down cleanly."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres_user([str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), *args]),
            check=True, capture_output=True,
        )  # fmt: skip


def find_bindir() -> Path | None:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(os.path.realpath(pg_ctl)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _as_postgres_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_server(bindir: Path) -> Iterator[PostgresServer]:
    # Directly under the system temp dir: pytest's own temp dirs are private to root, closed to `postgres`.
    base = Path(tempfile.mkdtemp(prefix="hokusai-pg-"))
    datadir, sockets = base / "data", base / "sock"
    sockets.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        base.chmod(0o700)
    subprocess.run(
        _as_postgres_user([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True,
    )  # fmt: skip
    version = (datadir / "PG_VERSION").read_text().strip()
    server = PostgresServer(host="127.0.0.1", port=free_loopback_port(), user="postgres", version=version,
                            bindir=bindir, base=base)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def fresh_database(server: PostgresServer, dbname: str) -> Iterator[str]:
    with DatabaseJanitor(user=server.user, host=server.host, port=server.port, dbname=dbname,
                         password=None):  # fmt: skip
        yield server.url(dbname)
