"""Bounds on what a request sends besides its body, before any app sees it: how long its head may take (a 408, or a
silent close, like nginx's `client_header_timeout`), how large the head and a chunked body's framing and trailers
may grow (a 431), and how long a body nobody reads is drained; and uvicorn's own refusal of malformed HTTP in the
JSON envelope.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not a head that trickles in a byte at a
time, nor a new connection that never sends one: a slowloris client could hold sockets for as long as it liked. Nor
does it bound a head's size: httptools collects an unfinished header value by concatenation, so one that keeps
growing costs memory and quadratic CPU until it ends, and stalls every other request of the process meanwhile. The
same holds for the trailer fields after a chunked body's last chunk, which uvicorn also appends to the request's
headers, and which no key or app is asked about (a probe, 2026-11-29: 50 MB of trailers after a 404 took 550 MB).
Once an answer is out, uvicorn drains the rest of an unread body to keep the connection, and every byte restarted
its keep-alive timer. The body itself is bounded separately (`middleware.body_timeout`), while the app reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hokusai.errors import ErrorCode
from hokusai.server.errors import error_response

# The scope key of the connection's `abort`, for an answer that must end at once: closing waits until the client has
# taken what was already written, which a client that stopped reading never does (its socket, and the megabytes
# queued for it, stayed until it hung up; a probe, 2026-11-29).
ABORT_CONNECTION = "hokusai.abort_connection"

NOT_HTTP_MESSAGE = (
    "The request is not valid HTTP/1.1 (malformed chunk framing, a Content-Length beside Transfer-Encoding or twice, "
    "a control character in a header, an unknown method, ...); the connection was closed."
)

# What the gateway accepts in a complete head's headers (`gateway.py` answers more with a precise 431).
MAX_REQUEST_HEADER_BYTES = 32 * 1024
# Twice that: this bound only stops a head that would otherwise grow without end, before the gateway sees it.
MAX_HEAD_BYTES = 2 * MAX_REQUEST_HEADER_BYTES


class RequestHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline from connect (or from a request's first byte) to its full head,
    and a cap on the bytes an unfinished head may take."""

    def __init__(self, *args: Any, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_started = False
        self._head_bytes = 0
        self._head_completed = False
        self._in_body = False  # between a head and the end of its message
        self._body_arrived = False  # in the current read
        self._framing_bytes = 0  # read in the body phase since the last body byte: chunk framing, trailers
        self._drain_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        self._cancel_drain_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        head_pending = self._head_started
        self._head_completed = False
        self._body_arrived = False
        super().data_received(data)
        if not self._head_started or self.transport.is_closing():
            self._head_bytes = 0
            self._count_framing(len(data))
            return
        # Counted only when this read neither started nor ended a head: such a read may also carry a body before or
        # after it (pipelining), so the count runs at most one read behind the unfinished head's true size.
        if head_pending and not self._head_completed:
            self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._cancel_head_deadline()
            if self.cycle is None or self.cycle.response_complete:
                # Never into the middle of an answer still going out to a pipelining client: closing says enough.
                self.transport.write(self._head_too_large_answer())
            self.transport.close()

    def _count_framing(self, read: int) -> None:
        """Bound what a body's phase brings besides body bytes; a read that carried any body starts the count anew,
        so a chunked upload's framing never adds up, and trailers (which come after the last chunk) do."""
        if not self._in_body or self.transport.is_closing():
            return
        self._framing_bytes = 0 if self._body_arrived else self._framing_bytes + read
        if self._framing_bytes > MAX_HEAD_BYTES:
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(self._framing_too_large_answer())
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ABORT_CONNECTION] = self.transport.abort  # type: ignore[literal-required]
        self._cancel_drain_deadline()
        self._head_started = True
        if self._head_deadline is None:
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._head_completed = True
        self._head_bytes = 0
        self._in_body = True
        self._framing_bytes = 0
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_arrived = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_drain_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # Answered before the body was all in: uvicorn drains the rest to keep the connection, and each byte
            # would restart its keep-alive timer. The client gets as long to finish as it had for its head.
            self._drain_deadline = self.loop.call_later(self.header_timeout_seconds, self.transport.close)
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what httptools cannot parse, in the envelope rather than as plain text."""
        self.transport.write(_closing_answer(400, "Bad Request", NOT_HTTP_MESSAGE, ErrorCode.BAD_REQUEST))
        self.transport.close()

    def _cancel_drain_deadline(self) -> None:
        if self._drain_deadline is not None:
            self._drain_deadline.cancel()
            self._drain_deadline = None

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits while the previous answer is still going out (uvicorn stops reading then):
            # the deadline starts again rather than cutting that answer off.
            self._arm_head_deadline()
            return
        if self._head_started:
            self.transport.write(self._timeout_answer())
        # A connection that never sent a byte is closed silently, as uvicorn closes an idle keep-alive one: a client
        # that opened it early must not read a 408 as the answer to a request it sends later.
        self.transport.close()

    def _timeout_answer(self) -> bytes:
        return _closing_answer(
            408,
            "Request Timeout",
            f"The request head did not arrive within {self.header_timeout_seconds:g} s; the connection was closed. "
            "Send the request again.",
            ErrorCode.DEADLINE_EXCEEDED,
        )

    def _framing_too_large_answer(self) -> bytes:
        return _closing_answer(
            431,
            "Request Header Fields Too Large",
            f"The request sent more than {MAX_HEAD_BYTES // 1024} KiB of chunk framing or trailer fields after its "
            "head; the connection was closed.",
            ErrorCode.BAD_REQUEST,
        )

    def _head_too_large_answer(self) -> bytes:
        return _closing_answer(
            431,
            "Request Header Fields Too Large",
            f"The request head passed {MAX_HEAD_BYTES // 1024} KiB before it ended; the connection was closed.",
            ErrorCode.BAD_REQUEST,
        )


def _closing_answer(status: int, reason: str, message: str, error_code: str) -> bytes:
    """A whole HTTP answer in the JSON error envelope, for a connection no app has a request from."""
    response = error_response(status, message, error_code=error_code, headers={"Connection": "close"})
    head = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
    return f"HTTP/1.1 {status} {reason}\r\n".encode() + head + b"\r\n" + bytes(response.body)


def request_head_protocol(header_timeout_seconds: float) -> partial[RequestHeadProtocol]:
    """What `uvicorn.Config(http=...)` instantiates per connection, with the deadline bound in."""
    return partial(RequestHeadProtocol, header_timeout_seconds=header_timeout_seconds)


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a complete request head (ASGI's lowercased headers) announces a body: chunked, or a Content-Length
    other than 0."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
