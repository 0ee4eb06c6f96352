"""The registry's named locks: one holder at a time in this process, and across processes on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from hokusai.server import locks
from hokusai.server.db import Database


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
        with other_process.engine.connect() as connection:
            acquired = locks._try_advisory_lock(connection, key)
            if acquired:
                locks._advisory_unlock(connection, key)
            return acquired

    async def scenario() -> tuple[bool, bool]:
        async with locks.shared_lock(database, "registry.token:CHURN"):
            while_held = others_try()
        return while_held, others_try()

    try:
        while_held, after = asyncio.run(scenario())
    finally:
        other_process.close()
    assert (while_held, after) == (False, True)
