"""Ends connections whose request head does not arrive in time: a 408 (or a silent close), like nginx's
`client_header_timeout`.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not a head that trickles in a byte at a
time, nor a new connection that never sends one: a slowloris client could hold sockets for as long as it liked. The
body is bounded separately (`middleware.body_timeout`), once the head is complete and the app has the request.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hokusai.server.errors import error_response


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline from connect (or from a request's first byte) to its full head."""

    def __init__(self, *args: Any, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_deadline is None:
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._cancel_head_deadline()
        super().on_headers_complete()

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
        response = error_response(
            408,
            f"The request head did not arrive within {self.header_timeout_seconds:g} s; the connection was closed. "
            "Send the request again.",
            error_code="DEADLINE_EXCEEDED",
            headers={"Connection": "close"},
        )
        head = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
        return b"HTTP/1.1 408 Request Timeout\r\n" + head + b"\r\n" + bytes(response.body)


def header_timeout_protocol(header_timeout_seconds: float) -> partial[HeaderTimeoutProtocol]:
    """What `uvicorn.Config(http=...)` instantiates per connection, with the deadline bound in."""
    return partial(HeaderTimeoutProtocol, header_timeout_seconds=header_timeout_seconds)
