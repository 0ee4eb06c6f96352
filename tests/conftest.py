"""Session-wide fixtures: one live platform (real gateway + real MLflow child) and one PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.support.platform import LivePlatform, start_platform
from tests.support.postgres import REQUIRE_ENV, PostgresServer, find_bindir, fresh_database, running_server

_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    live = start_platform(tmp_path_factory.mktemp("platform") / "data", HOKUSAI_KEY_CACHE_TTL_SECONDS="2")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    with running_server(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    with fresh_database(postgres_server, f"hokusai_test_{os.getpid()}_{next(_database_numbers)}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """Each test using this runs once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hokusai.db"
    else:
        yield request.getfixturevalue("postgres_url")
