"""Send bytes a well-behaved HTTP client refuses to send (NULs, CRLF in headers, absolute-form targets)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def raw_request(port: int, request: bytes, *, timeout: float = 15.0) -> RawResponse:
    """Write `request` as is to 127.0.0.1:`port` and read the whole response (the request should close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status=status, headers=headers, body=body)


def get_request(path: str, headers: list[tuple[bytes, bytes]], host: bytes = b"127.0.0.1") -> bytes:
    lines = [b"GET " + path.encode("latin-1") + b" HTTP/1.1", b"Host: " + host, b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"
