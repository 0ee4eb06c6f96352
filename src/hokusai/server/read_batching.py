"""Fewer, larger reads of a large MLflow answer: the kernel wakes the gateway once a MiB has arrived, not per write.

MLflow writes a file 64 KiB at a time, and the gateway woke and read for each piece. That cost ~1.9 s of gateway
CPU per GB downloaded, twice an upload's cost (uploads arrive in 256 KiB reads). Linux's SO_RCVLOWAT makes a
socket readable only once that many bytes are waiting. Measured on a 300 MB download: gateway CPU 0.57 s without
it, 0.28 s with a 1 MiB mark (`docs/architecture.md`, Performance).

A mark above the bytes still to come would hold the last of them until MLflow closed the idle connection, and a
mark left on a pooled connection would hold the next answer the same way. Each mark is therefore clamped to what
the Content-Length says is still to come, set again before every read, and reset to 1 before the connection goes
back to the pool. Answers without a Content-Length are read as they come.
"""

from __future__ import annotations

import socket
import sys

import aiohttp

BATCH_BYTES = 1024 * 1024
_SUPPORTED = sys.platform == "linux"  # elsewhere poll/kqueue honour the mark differently; not worth the risk


class ReadBatching:
    """Sets the low-water mark of one streamed response's connection; does nothing when it does not apply."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._length = response.content_length
        self._socket = self._socket_of(response) if _SUPPORTED and self._length is not None else None

    @staticmethod
    def _socket_of(response: aiohttp.ClientResponse) -> socket.socket | None:
        connection = response.connection
        transport = connection.transport if connection is not None else None
        return transport.get_extra_info("socket") if transport is not None else None

    def before_read(self) -> None:
        """Wait for up to a MiB, and never for more than the body has left."""
        if self._socket is None or self._length is None:
            return
        still_to_come = self._length - self._response.content.total_bytes
        self._set(min(BATCH_BYTES, max(1, still_to_come)))

    def reset(self) -> None:
        """Back to the default before the connection is reused for another answer."""
        self._set(1)

    def _set(self, mark: int) -> None:
        if self._socket is None:
            return
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError:
            # The connection is already gone (client or MLflow hung up): the relay ends on its own, and a closed
            # connection is never pooled.
            self._socket = None
