"""The gateway gives up on MLflow's answer once its client has hung up (`client_watch`), with scripted clients."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from hokusai.server.client_watch import ClientLeft, ClientWatch

AFTER = 0.05


class ScriptedClient:
    """`receive` of a request without a body: its empty body at once, then a disconnect once `leave` is set."""

    def __init__(self) -> None:
        self.leave = asyncio.Event()
        self.receives = 0

    async def receive(self) -> Message:
        self.receives += 1
        if self.receives == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}


async def _answer_after(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "answer"


def test_an_answer_within_the_grace_time_never_reads_from_the_client() -> None:
    async def scenario() -> None:
        client = ScriptedClient()
        with ClientWatch(client.receive, after=AFTER):
            assert await _answer_after(0) == "answer"
        await asyncio.sleep(AFTER * 2)
        assert client.receives == 0

    asyncio.run(scenario())


def test_a_slow_answer_for_a_client_still_there_is_awaited() -> None:
    async def scenario() -> None:
        client = ScriptedClient()
        with ClientWatch(client.receive, after=AFTER):
            assert await _answer_after(AFTER * 4) == "answer"
        assert client.receives == 2  # its body, then the watch for a disconnect, cancelled with the block

    asyncio.run(scenario())


def test_a_client_that_hangs_up_ends_the_wait() -> None:
    async def scenario() -> None:
        client = ScriptedClient()
        loop = asyncio.get_running_loop()
        loop.call_later(AFTER * 2, client.leave.set)
        started = loop.time()
        with pytest.raises(ClientLeft), ClientWatch(client.receive, after=AFTER):
            await _answer_after(60)
        assert loop.time() - started < 5
        assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the task goes on as any other: no cancellation is left pending

    asyncio.run(scenario())


def test_a_cancellation_from_elsewhere_still_propagates() -> None:
    async def scenario() -> None:
        client = ScriptedClient()

        async def request() -> None:
            with ClientWatch(client.receive, after=AFTER):
                await _answer_after(60)

        task = asyncio.create_task(request())
        await asyncio.sleep(AFTER * 2)
        task.cancel()  # the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
