"""The transfer floor: a byte-for-byte TCP relay in front of MLflow, as a reference beside the gateway.

No HTTP at all: it copies each connection's bytes both ways (512 KiB reads, the gateway's read size, on uvloop, as
uvicorn runs the gateway). Large transfers vary from one to the next by more than the gateway's own cost, because
MLflow's download spends more or less CPU per byte depending on how the scheduler places its threads beside the
reader (docs/architecture.md, "Large artifacts"); this relay shows what any extra hop gets on this machine in the
same rounds. Not a product component: never start it outside the benchmark.

    python -m bench.tcp_relay PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

READ_BYTES = 512 * 1024


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_BYTES):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def serve(port: int, upstream_port: int) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        # Either side closing ends both copies; a reset on the other is expected then, not an error.
        await asyncio.gather(
            copy(client_reader, upstream_writer), copy(upstream_reader, client_writer), return_exceptions=True
        )

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
