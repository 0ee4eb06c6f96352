"""Database engine, sessions and migrations (SQLAlchemy 2 + Alembic)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from hokusai.errors import HokusaiConfigurationError

MIGRATIONS = "hokusai.server:migrations"
_POOL_SIZE, _POOL_OVERFLOW = 10, 20  # connections kept, and opened beyond them at peaks


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=_POOL_SIZE, max_overflow=_POOL_OVERFLOW)


# PostgreSQL sessions one API process holds at most for registry locks (`locks.py`), beside its pool's connections
# (`_POOL_SIZE` + `_POOL_OVERFLOW`): each lock session is a connection, and without a bound a burst of registrations
# would use up the server's `max_connections` (100 by default).
LOCK_SESSIONS = 10


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while one writer commits; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            # Alembic finds a schema version it has no migration for: most likely another application's database
            # (MLflow's tracking store keeps its version in the same table), or one a newer Hokusai migrated.
            raise HokusaiConfigurationError(
                f"The database of HOKUSAI_DATABASE_URL is not a Hokusai database this version knows ({exc}). Give "
                "Hokusai a database of its own; one that MLflow also uses cannot serve both."
            ) from None


class Database:
    """The engine and session factory of one database, migrated on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.lock_sessions = asyncio.Semaphore(LOCK_SESSIONS)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @cached_property
    def lock_engine(self) -> Engine:
        """Connections outside the pool, for session-level locks (`locks.py`): closing one ends its session."""
        return create_engine(self.url, poolclass=NullPool)

    def ping(self) -> None:
        """One round trip to the database (`OperationalError` when it cannot be reached)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()
        if "lock_engine" in self.__dict__:
            self.lock_engine.dispose()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dialect={self.engine.dialect.name!r})"
