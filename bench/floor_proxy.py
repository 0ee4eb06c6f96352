"""The floor: the leanest pass-through the gateway's own stack allows, as a reference beside the gateway.

Same server (uvicorn, same options) and the gateway's own aiohttp session, but no key check, no path check, no access
log, no header filtering beyond hop-by-hop, and bodies read whole (the small-request workloads only). The gateway
phase measures it in the same rounds as the gateway, so the report separates what the extra hop costs on this
machine from what Hokusai's own work adds. Not a product component: never start it outside the benchmark.

    python -m bench.floor_proxy PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from hokusai.server.settings import Settings
from hokusai.server.upstream import build_session

MOUNT = "/api/mlflow"
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host"})


class FloorProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = build_session(Settings())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None
        body = await read_body(receive)
        path = scope["raw_path"].decode("latin-1").removeprefix(MOUNT)
        query = scope["query_string"].decode("latin-1")
        url = URL(self.upstream + path + ("?" + query if query else ""), encoded=True)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        async with self.session.request(
            scope["method"], url, headers=headers, data=body or None, allow_redirects=False
        ) as response:
            payload = await response.read()
            answer = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]
        await send({"type": "http.response.start", "status": response.status, "headers": answer})
        await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the benchmark's requests are small)."""
    chunks = []
    message: Message = {"more_body": True}
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    # The options `hokusai server` runs uvicorn with (hokusai.server.runner.serve), minus its logging.
    uvicorn.run(
        FloorProxy(upstream),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        server_header=False,
    )


if __name__ == "__main__":
    main()
