"""The request-head deadline, driven byte by byte through uvicorn's real parser over a recording transport.

The live fault tests show it against real processes (a trickled head, a silent connection, an idle keep-alive
connection); these cover what a socket cannot stage reliably, such as a pipelined head behind a slow answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from hokusai.server.request_head import MAX_HEAD_BYTES, RequestHeadProtocol

DEADLINE = 0.2


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.extend(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class SlowApp:
    """Answers 200 once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def _connect(app: SlowApp) -> tuple[RequestHeadProtocol, RecordingTransport]:
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    config.load()
    protocol = RequestHeadProtocol(
        config=config, server_state=ServerState(), app_state={}, header_timeout_seconds=DEADLINE
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def _answers(transport: RecordingTransport) -> list[int]:
    """The statuses written, in order (the answers here are back to back, each body without a line end)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(transport.written))]


async def _after_deadline() -> None:
    await asyncio.sleep(DEADLINE * 2)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async def scenario() -> None:
        _protocol, transport = _connect(SlowApp())
        await _after_deadline()
        assert transport.closed
        assert transport.written == b""

    asyncio.run(scenario())


def test_a_partial_head_gets_a_408_envelope_and_the_connection_closes() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(SlowApp())
        protocol.data_received(b"GET /api/mlflow/health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        await _after_deadline()
        assert transport.closed
        head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in head.lower()
        envelope = json.loads(body)
        assert envelope["error_code"] == "DEADLINE_EXCEEDED" and envelope["layer"] == "hokusai-api"

    asyncio.run(scenario())


def test_a_complete_head_is_not_cut_off_while_its_answer_takes_longer_than_the_deadline() -> None:
    async def scenario() -> None:
        app = SlowApp()
        protocol, transport = _connect(app)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await _after_deadline()
        assert not transport.closed
        app.release.set()
        await _after_deadline()
        assert _answers(transport) == [200]
        assert not transport.closed  # idle keep-alive time is uvicorn's keep-alive timeout's business, not ours

    asyncio.run(scenario())


@pytest.mark.parametrize("completed_later", [False, True])
def test_a_pipelined_head_waits_for_the_answer_before_it_and_then_gets_its_own_deadline(completed_later: bool) -> None:
    async def scenario() -> None:
        app = SlowApp()
        protocol, transport = _connect(app)
        protocol.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHo")
        await _after_deadline()
        assert not transport.closed  # the first answer is still going out: its connection is left alone
        assert transport.written == b""
        if completed_later:
            protocol.data_received(b"st: x\r\n\r\n")
        app.release.set()
        await _after_deadline()
        if completed_later:
            assert _answers(transport) == [200, 200]
            assert not transport.closed
        else:
            assert _answers(transport) == [200, 408]
            assert transport.closed

    asyncio.run(scenario())


class BodyCountingApp:
    """Reads the whole body and answers 200 with its length."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def test_a_head_that_keeps_growing_gets_a_431_envelope_and_the_connection_closes() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(SlowApp())
        protocol.data_received(b"GET /api/mlflow/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        pieces = 0
        while not transport.closed:
            protocol.data_received(b"a" * 8192)
            pieces += 1
            assert pieces <= MAX_HEAD_BYTES // 8192 + 2, "the head was never cut off"
        head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in head.lower()
        envelope = json.loads(body)
        assert (envelope["error_code"], envelope["layer"]) == ("BAD_REQUEST", "hokusai-api")
        assert "64 KiB" in envelope["message"]

    asyncio.run(scenario())


def test_a_large_head_that_ends_in_time_and_the_body_after_it_are_not_counted_against_the_limit() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(BodyCountingApp())  # type: ignore[arg-type]
        body_size = 4 * MAX_HEAD_BYTES
        head = b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Pad: " % body_size
        protocol.data_received(head)
        for _ in range(MAX_HEAD_BYTES // 2 // 8192):  # a head of half the limit, in pieces
            protocol.data_received(b"a" * 8192)
        protocol.data_received(b"\r\n\r\n" + b"b" * (body_size // 2))  # the head ends, half the body in the same read
        protocol.data_received(b"b" * (body_size // 2))
        await asyncio.sleep(0.05)
        assert _answers(transport) == [200]
        assert bytes(transport.written).endswith(str(body_size).encode())
        assert not transport.closed

    asyncio.run(scenario())


def test_a_read_that_ends_a_head_and_carries_its_body_and_the_next_head_is_not_counted() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(BodyCountingApp())  # type: ignore[arg-type]
        body_size = 2 * MAX_HEAD_BYTES
        protocol.data_received(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Len")
        protocol.data_received(b"gth: %d\r\n\r\n" % body_size + b"b" * body_size + b"GET /y HTTP/1.1\r\nHo")
        protocol.data_received(b"st: x\r\n\r\n")
        await asyncio.sleep(0.05)
        assert _answers(transport) == [200, 200]
        assert not transport.closed

    asyncio.run(scenario())


class NotReadingApp:
    """Answers 404 at once, reading nothing, as a route that does not exist does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})


CHUNKED_HEAD = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("trailer", ["many fields", "one endless value"])
@pytest.mark.parametrize("reads_body", [False, True], ids=["answered first", "while the app reads"])
def test_trailers_that_keep_coming_are_cut_off_at_the_head_limit(trailer: str, reads_body: bool) -> None:
    """A probe sent 50 MB of trailer fields after the last chunk, with no key, to a route that answered 404 at once:
    uvicorn appended them all to the request's headers (550 MB), and one endless value took a core."""

    async def scenario() -> None:
        app = BodyCountingApp() if reads_body else NotReadingApp()
        protocol, transport = _connect(app)  # type: ignore[arg-type]
        protocol.data_received(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n")
        await asyncio.sleep(0.01)  # the app runs (and answers, if it does not read)
        piece = b"".join(b"X-%d: v\r\n" % i for i in range(1000)) if trailer == "many fields" else b"a" * 8192
        if trailer == "one endless value":
            protocol.data_received(b"X-T: ")
        sent = 0
        while not transport.closed:
            protocol.data_received(piece)
            sent += len(piece)
            assert sent <= 2 * MAX_HEAD_BYTES, "the trailers were never cut off"
        await asyncio.sleep(0.01)
        if reads_body:  # no answer had gone out: the 431 says why
            head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 431 ") and b"connection: close" in head.lower()
            assert "chunk framing or trailer fields" in json.loads(body)["message"]
        else:
            assert _answers(transport) == [404]

    asyncio.run(scenario())


def test_a_chunked_upload_in_tiny_chunks_and_its_trailer_are_not_cut_off() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(BodyCountingApp())  # type: ignore[arg-type]
        protocol.data_received(CHUNKED_HEAD)
        for _ in range(20_000):  # 100 KB of framing in all, more than the limit, each read with its chunk's byte
            protocol.data_received(b"1\r\n")
            protocol.data_received(b"b\r\n")
        protocol.data_received(b"0\r\nX-Checksum: " + b"c" * 1000 + b"\r\n\r\n")
        await asyncio.sleep(0.05)
        assert _answers(transport) == [200]
        assert bytes(transport.written).endswith(b"20000")
        assert not transport.closed

    asyncio.run(scenario())


def test_a_body_nobody_reads_is_drained_only_as_long_as_a_head_may_take() -> None:
    """Answered before its body was in, a client that trickles the rest kept its connection for ever: each byte
    restarted uvicorn's keep-alive timer."""

    async def scenario() -> None:
        protocol, transport = _connect(NotReadingApp())  # type: ignore[arg-type]
        protocol.data_received(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        await asyncio.sleep(0.01)
        assert _answers(transport) == [404]
        for _ in range(4):
            protocol.data_received(b"b")
            await asyncio.sleep(DEADLINE / 2)
        assert transport.closed

    asyncio.run(scenario())


def test_a_body_finished_after_the_answer_keeps_its_connection_for_the_next_request() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(NotReadingApp())  # type: ignore[arg-type]
        protocol.data_received(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbb")
        await asyncio.sleep(0.01)
        protocol.data_received(b"bb")  # the rest of the body, then the next request
        protocol.data_received(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
        await _after_deadline()
        assert _answers(transport) == [404, 404]
        assert not transport.closed

    asyncio.run(scenario())


def test_what_httptools_cannot_parse_is_a_400_envelope() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(BodyCountingApp())  # type: ignore[arg-type]
        protocol.data_received(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
        envelope = json.loads(body)
        assert (envelope["error_code"], envelope["layer"]) == ("BAD_REQUEST", "hokusai-api")
        assert envelope["message"].startswith("The request is not valid HTTP/1.1")
        assert transport.closed

    asyncio.run(scenario())
