"""Fixtures for the server's database tests: every test using `database` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hokusai.server.db import Database


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        db.close()
