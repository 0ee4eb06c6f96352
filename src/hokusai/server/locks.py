"""Named locks for the registry: within this API process always, and across processes on PostgreSQL.

A retried registration must find the version its first attempt created rather than add a twin, which needs the
two requests to take turns even when they reach different API processes. SQLite deployments run one process per
database file; on PostgreSQL a session-level advisory lock, keyed by the name, makes the other processes wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Connection, text
from starlette.concurrency import run_in_threadpool

from hokusai.server.db import Database

_POLL_SECONDS = 0.1
_local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def local_lock(name: str) -> asyncio.Lock:
    """This process's lock for `name`; it vanishes with the last request holding or awaiting it."""
    lock = _local_locks.get(name)
    if lock is None:
        lock = _local_locks[name] = asyncio.Lock()
    return lock


@asynccontextmanager
async def shared_lock(database: Database, name: str) -> AsyncIterator[None]:
    """Hold `name` against every request of this process and, on PostgreSQL, of every API process."""
    async with local_lock(name):
        if database.engine.dialect.name != "postgresql":
            yield
            return
        key = advisory_key(name)
        connection = await run_in_threadpool(database.engine.connect)
        try:
            # Polled, not awaited in a worker thread: waiters must not use up the thread pool.
            while not await run_in_threadpool(_try_advisory_lock, connection, key):
                await asyncio.sleep(_POLL_SECONDS)
            try:
                yield
            finally:
                await run_in_threadpool(_advisory_unlock, connection, key)
        finally:
            await run_in_threadpool(connection.close)


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory locks take a signed 64-bit key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _try_advisory_lock(connection: Connection, key: int) -> bool:
    acquired = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
    connection.commit()  # no transaction stays open while the lock is held
    return bool(acquired)


def _advisory_unlock(connection: Connection, key: int) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        connection.commit()
    except Exception:
        # A session-level lock lives as long as its database session: a connection that cannot unlock is thrown
        # away rather than pooled, which ends the session and the lock with it.
        connection.invalidate()
        raise
