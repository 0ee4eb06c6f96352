"""Named locks for the registry: within this API process always, and across processes on PostgreSQL.

A retried registration must find the version its first attempt created rather than add a twin, which needs the
two requests to take turns even when they reach different API processes. SQLite deployments run one process per
database file; on PostgreSQL a session-level advisory lock, keyed by the name, makes the other processes wait.
The lock lives on a connection of its own, outside the pool, and is released by closing it: PostgreSQL drops a
session's advisory locks when the session ends, so a cancelled or failed request can never leave one behind. A
request's nested locks share its one session, and each process holds at most `db.LOCK_SESSIONS` of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from sqlalchemy import Connection, text
from starlette.concurrency import run_in_threadpool

from hokusai.errors import ErrorCode
from hokusai.server.db import Database
from hokusai.server.errors import RETRY_AFTER_SECONDS, ApiError

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
# Longer than a registration takes (a few MLflow calls); a waiter past it is told to retry rather than kept.
WAIT_SECONDS = 120.0
_local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
# The PostgreSQL session of the advisory locks the current request holds, if any.
_lock_session: ContextVar[Connection | None] = ContextVar("hokusai_lock_session", default=None)


def local_lock(name: str) -> asyncio.Lock:
    """This process's lock for `name`; it vanishes with the last request holding or awaiting it."""
    lock = _local_locks.get(name)
    if lock is None:
        lock = _local_locks[name] = asyncio.Lock()
    return lock


@asynccontextmanager
async def shared_lock(database: Database, name: str, *, wait_seconds: float = WAIT_SECONDS) -> AsyncIterator[None]:
    """Hold `name` against every request of this process and, on PostgreSQL, of every API process.

    A 503 (retry) when it cannot be had within `wait_seconds`.
    """
    lock = local_lock(name)
    try:
        async with asyncio.timeout(wait_seconds):
            await lock.acquire()
    except TimeoutError:
        raise _busy(name) from None
    try:
        if database.engine.dialect.name != "postgresql":
            yield
            return
        async with _advisory_lock(database, name, wait_seconds):
            yield
    finally:
        lock.release()


@asynccontextmanager
async def _advisory_lock(database: Database, name: str, wait_seconds: float) -> AsyncIterator[None]:
    key = advisory_key(name)
    deadline = asyncio.get_running_loop().time() + wait_seconds
    held = _lock_session.get()
    if held is not None:
        # Nested in a lock this request holds (a model's inside a token's): its session takes this one too, so a
        # request needs one connection however deep its locks go, and requests holding a session never wait for
        # another one to take their next lock.
        await _acquire(held, key, name, deadline)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await run_in_threadpool(advisory_unlock, held, key)
        return
    try:
        async with asyncio.timeout_at(deadline):
            await database.lock_sessions.acquire()
    except TimeoutError:
        raise _busy(name) from None
    try:
        connection = await run_in_threadpool(database.lock_engine.connect)
        bound = _lock_session.set(connection)
        try:
            await _acquire(connection, key, name, deadline)
            yield
        finally:
            # Closing ends the session, and every lock it holds with it; closing in the event loop thread keeps a
            # cancelled request from skipping it. First, so that nothing below can skip it either.
            with contextlib.suppress(Exception):
                connection.close()
            # ValueError: this lock was left from another context (a generator finalised by another task).
            with contextlib.suppress(ValueError):
                _lock_session.reset(bound)
    finally:
        database.lock_sessions.release()


async def _acquire(connection: Connection, key: int, name: str, deadline: float) -> None:
    # Polled, not awaited in a worker thread: waiters must not use up the thread pool.
    while not await run_in_threadpool(try_advisory_lock, connection, key):
        if asyncio.get_running_loop().time() >= deadline:
            raise _busy(name)
        await asyncio.sleep(_POLL_SECONDS)


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory locks take a signed 64-bit key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(connection: Connection, key: int) -> bool:
    acquired = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
    connection.commit()  # no transaction stays open while the lock is held
    return bool(acquired)


def advisory_unlock(connection: Connection, key: int) -> None:
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    connection.commit()


def _busy(name: str) -> ApiError:
    what = name.split(":", 1)[-1]
    return ApiError(
        503,
        f"Another request on '{what}' is still running; retry shortly.",
        error_code=ErrorCode.TEMPORARILY_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )
