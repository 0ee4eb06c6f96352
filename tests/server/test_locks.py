"""The registry's named locks: one holder at a time in this process, and across processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hokusai.server import locks
from hokusai.server.db import Database
from hokusai.server.errors import ApiError


def test_holders_of_one_name_take_turns_in_this_process(database: Database) -> None:
    events: list[str] = []

    async def hold(who: str) -> None:
        async with locks.shared_lock(database, "registry.token:CHURN"):
            events.append(f"{who} in")
            await asyncio.sleep(0)  # let the other task try its luck while this one holds the lock
            events.append(f"{who} out")

    async def both() -> None:
        await asyncio.gather(hold("first"), hold("second"))

    asyncio.run(both())
    assert events == ["first in", "first out", "second in", "second out"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_another_process_cannot_take_a_held_name_on_postgresql(database: Database, database_url: str) -> None:
    """Another API process is another database session: it finds the advisory lock taken until the holder leaves."""
    other_process = Database(database_url)
    key = locks.advisory_key("registry.token:CHURN")

    def others_try() -> bool:
        with other_process.lock_engine.connect() as connection:  # closing it releases what it took
            return locks.try_advisory_lock(connection, key)

    async def scenario() -> tuple[bool, bool]:
        async with locks.shared_lock(database, "registry.token:CHURN"):
            while_held = others_try()
        return while_held, others_try()

    try:
        while_held, after = asyncio.run(scenario())
    finally:
        other_process.close()
    assert (while_held, after) == (False, True)


def test_a_waiter_that_cannot_have_the_lock_in_time_is_told_to_retry(database: Database, database_url: str) -> None:
    """Held by another process on PostgreSQL (a session of its own), by another request here on SQLite."""
    name = "registry.token:BUSY"
    holder = Database(database_url)

    async def scenario() -> ApiError:
        async with contextlib.AsyncExitStack() as stack:
            if database.engine.dialect.name == "postgresql":
                connection = stack.enter_context(holder.lock_engine.connect())
                assert locks.try_advisory_lock(connection, locks.advisory_key(name))
            else:
                await stack.enter_async_context(locks.shared_lock(database, name))
            with pytest.raises(ApiError) as refused:
                async with locks.shared_lock(database, name, wait_seconds=0.3):
                    pytest.fail("the lock was held elsewhere")
            return refused.value

    try:
        refused = asyncio.run(scenario())
    finally:
        holder.close()
    assert (refused.status, refused.error_code, refused.headers) == (
        503,
        "TEMPORARILY_UNAVAILABLE",
        {"Retry-After": "2"},
    )
    assert refused.message == "Another request on 'BUSY' is still running; retry shortly."


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_requests_nested_locks_share_one_session_and_sessions_are_bounded(
    database: Database, database_url: str
) -> None:
    """Each lock took a connection of its own, without bound: a burst of registrations could use up PostgreSQL's
    `max_connections` (security review). One session per request now, and a bounded number per process."""
    other_process = Database(database_url)
    database.lock_sessions = asyncio.Semaphore(1)  # one session: a nested lock needing its own would never get it

    def others_try(name: str) -> bool:
        with other_process.lock_engine.connect() as connection:
            return locks.try_advisory_lock(connection, locks.advisory_key(name))

    async def holder(inside: asyncio.Event, done: asyncio.Event) -> tuple[bool, bool, bool]:
        async with locks.shared_lock(database, "registry.token:A"):
            async with locks.shared_lock(database, "registry.model:m", wait_seconds=1):
                nested_held = not others_try("registry.model:m")
            nested_released = others_try("registry.model:m")
            inside.set()
            await done.wait()
            outer_held = not others_try("registry.token:A")
        return nested_held, nested_released, outer_held

    async def contender(inside: asyncio.Event, done: asyncio.Event) -> ApiError:
        await inside.wait()
        try:
            with pytest.raises(ApiError) as refused:
                async with locks.shared_lock(database, "registry.token:B", wait_seconds=0.3):
                    pytest.fail("a second session was opened past the bound")
        finally:
            done.set()
        return refused.value

    async def scenario() -> tuple[tuple[bool, bool, bool], ApiError]:
        inside, done = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(holder(inside, done), contender(inside, done))

    try:
        (nested_held, nested_released, outer_held), refused = asyncio.run(scenario())
    finally:
        other_process.close()
    assert (nested_held, nested_released, outer_held) == (True, True, True)
    assert (refused.status, refused.message) == (503, "Another request on 'B' is still running; retry shortly.")
