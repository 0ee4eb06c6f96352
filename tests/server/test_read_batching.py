"""The low-water marks set while a large answer streams (the live streaming tests check the bytes end to end).

A mark above what is still to come would hold the last piece until MLflow closes the idle connection, and a mark
left on a pooled connection would hold the next answer the same way; both show up live only as a few seconds'
delay, so the marks themselves are checked here against a recording socket.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from hokusai.server import read_batching
from hokusai.server.gateway import _relay_body
from hokusai.server.read_batching import BATCH_BYTES, ReadBatching

MIB = 1024 * 1024


class RecordingSocket:
    def __init__(self, fail: bool = False) -> None:
        self.marks: list[int] = []
        self.fail = fail

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        if self.fail:
            raise OSError("Bad file descriptor")
        self.marks.append(value)


class FakeContent:
    """aiohttp's StreamReader as the relay uses it: pieces handed out in order, `total_bytes` received so far."""

    def __init__(self, pieces: list[int]) -> None:
        self.pieces = list(pieces)
        self.total_bytes = 0

    async def readany(self) -> bytes:
        if not self.pieces:
            return b""
        size = self.pieces.pop(0)
        self.total_bytes += size
        return b"x" * size


class FakeTransport:
    def __init__(self, sock: RecordingSocket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> RecordingSocket | None:
        return self.sock if name == "socket" else None


class FakeConnection:
    def __init__(self, sock: RecordingSocket) -> None:
        self.transport = FakeTransport(sock)


class FakeResponse:
    def __init__(self, pieces: list[int], *, declared: bool = True, sock: RecordingSocket | None = None) -> None:
        self.content = FakeContent(pieces)
        self.content_length = sum(pieces) if declared else None
        self.sock = sock or RecordingSocket()
        self.connection = FakeConnection(self.sock)
        self.released = False

    def release(self) -> None:
        self.released = True


@pytest.fixture(autouse=True)
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_batching, "_SUPPORTED", True)


async def _relay_all(response: FakeResponse) -> int:
    return sum([len(chunk) async for chunk in _relay_body(response)])  # type: ignore[arg-type]


def test_each_mark_is_a_mib_at_most_and_never_more_than_is_still_to_come() -> None:
    response = FakeResponse([MIB, MIB, MIB // 2])
    assert asyncio.run(_relay_all(response)) == 2 * MIB + MIB // 2
    # Before each read: 2.5 MiB to come, then 1.5 MiB, then 0.5 MiB, then nothing; then the reset.
    assert response.sock.marks == [BATCH_BYTES, BATCH_BYTES, MIB // 2, 1, 1]
    assert response.released


def test_a_body_smaller_than_the_batch_is_waited_for_whole_not_a_mib() -> None:
    response = FakeResponse([300_000])
    asyncio.run(_relay_all(response))
    assert response.sock.marks == [300_000, 1, 1]


def test_an_answer_without_content_length_is_read_as_it_comes() -> None:
    response = FakeResponse([MIB, 5], declared=False)
    assert asyncio.run(_relay_all(response)) == MIB + 5
    assert response.sock.marks == []


def test_the_mark_is_undone_when_the_client_leaves_after_the_last_bytes_arrived() -> None:
    """The body is complete, so the connection goes back to the pool: it must not keep the mark of the last read."""

    async def leave_at_the_last_chunk() -> FakeResponse:
        response = FakeResponse([MIB, 300_000])
        relay = _relay_body(response)  # type: ignore[arg-type]
        await anext(relay)
        await anext(relay)  # everything has arrived; the client hangs up while this chunk is being sent
        await relay.aclose()
        return response

    response = asyncio.run(leave_at_the_last_chunk())
    assert response.sock.marks == [BATCH_BYTES, 300_000, 1]
    assert response.released


def test_a_socket_that_is_gone_turns_batching_off_without_failing_the_relay() -> None:
    response = FakeResponse([MIB, MIB], sock=RecordingSocket(fail=True))
    assert asyncio.run(_relay_all(response)) == 2 * MIB


def test_nothing_is_set_where_the_mark_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_batching, "_SUPPORTED", False)
    response = FakeResponse([MIB, MIB])
    batching = ReadBatching(response)  # type: ignore[arg-type]
    batching.before_read()
    batching.reset()
    assert response.sock.marks == []
