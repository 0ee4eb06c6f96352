"""`python -m bench.app_cpu`: CPU per proxied request of the gateway's ASGI app itself, in one process.

The end-to-end phases (`bench.run`) measure what a client sees, through loopback, with three processes sharing the
machine; on a small VM their latency moves by more than the gateway's own work. This drives the real app (and the
floor, `bench.floor_proxy`) in-process, without uvicorn, against a stub upstream that answers at once, and reports
the CPU time of this process per 64 KiB artifact PUT + GET: the app's work plus its aiohttp client's, nothing else.
Variants alternate round by round; the figures are medians. For finding where the gateway's per-request cost goes,
not for judging targets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvicorn
import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.floor_proxy import FloorProxy, read_body
from bench.servers import ServerStartError, create_key_offline
from bench.stats import median
from bench.workloads import ARTIFACT_SMALL_BYTES
from hokusai.server.runner import configure_logging, free_loopback_port

PATH = "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/1/0123456789abcdef0123456789abcdef/artifacts/small.bin"
PAYLOAD = b"p" * ARTIFACT_SMALL_BYTES


async def _stub(scope: Scope, receive: Receive, send: Send) -> None:
    """The upstream: reads the body, answers a GET with 64 KiB and anything else with `{}`."""
    if scope["type"] != "http":
        return
    await read_body(receive)
    body = PAYLOAD if scope["method"] == "GET" else b"{}"
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _start_stub() -> tuple[subprocess.Popen[bytes], str]:
    port = free_loopback_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.app_cpu", "--stub", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/ready", timeout=1.0, trust_env=False)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise ServerStartError("the stub upstream did not start")


async def _call(app: ASGIApp, method: str, body: bytes, authorization: str | None) -> None:
    headers = [(b"host", b"127.0.0.1"), (b"accept", b"*/*"), (b"connection", b"keep-alive")]
    if authorization:
        headers.append((b"authorization", authorization.encode()))
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    statuses = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client never hangs up here
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [200]:
        raise RuntimeError(f"{method} answered {statuses}")


async def start_lifespan(app: ASGIApp) -> Callable[[], Awaitable[None]]:
    """Runs the app's startup; returns the coroutine function that shuts it down."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def send(message: Message) -> None:
        (started if message["type"] == "lifespan.startup.complete" else stopped).set()

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await stopped.wait()
        await task

    return shutdown


def hokusai_app(upstream: str, data_dir: Path) -> tuple[ASGIApp, str]:
    key = create_key_offline(data_dir, "bench", "read,write")
    from hokusai.server.main import create_app
    from hokusai.server.secrets import load_or_create_secrets
    from hokusai.server.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, mlflow_url=upstream)  # never the working dir's .env
    return create_app(settings, load_or_create_secrets(settings), upstream), f"Bearer {key}"


async def cpu_ms_per_pair(app: ASGIApp, authorization: str | None, pairs: int) -> float:
    started = time.process_time()
    for _ in range(pairs):
        await _call(app, "PUT", PAYLOAD, authorization)
        await _call(app, "GET", b"", authorization)
    return (time.process_time() - started) / pairs * 1000


async def measure(upstream: str, data_dir: Path, rounds: int, pairs: int) -> dict[str, float]:
    hokusai, authorization = hokusai_app(upstream, data_dir)
    floor = FloorProxy(upstream)
    stops = [await start_lifespan(hokusai), await start_lifespan(floor)]
    access_log = logging.getLogger("hokusai.access")
    variants: dict[str, tuple[ASGIApp, str | None, int]] = {
        "hokusai": (hokusai, authorization, logging.INFO),
        "hokusai without the access log": (hokusai, authorization, logging.WARNING),
        "floor": (floor, None, logging.INFO),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for app, auth, _level in variants.values():
            await cpu_ms_per_pair(app, auth, pairs // 5)  # warm-up: pools, caches, the key cache
        for _ in range(rounds):
            for name, (app, auth, level) in variants.items():
                access_log.setLevel(level)
                samples[name].append(await cpu_ms_per_pair(app, auth, pairs))
    finally:
        for stop in stops:
            await stop()
    return {name: median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app_cpu", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=1000, help="PUT + GET pairs per variant and round")
    parser.add_argument("--stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub:
        uvicorn.run(_stub, host="127.0.0.1", port=args.stub, log_level="warning", access_log=False)
        return 0
    stub, upstream = _start_stub()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="hokusai-bench-app-cpu-") as tmp,
            (Path(tmp) / "server.log").open("w") as log_file,
        ):
            # Written line by line to a file, as `hokusai server` writes it to its stream: part of the cost.
            configure_logging("info", stream=log_file)
            (Path(tmp) / "data").mkdir()
            # uvloop, as uvicorn runs `hokusai server` (uvicorn[standard]).
            results = uvloop.run(measure(upstream, Path(tmp) / "data", args.rounds, args.pairs))
            logging.shutdown()
    finally:
        stub.terminate()
        stub.wait()
    print(f"CPU of this process per 64 KiB PUT + GET pair, median of {args.rounds} rounds of {args.pairs} pairs:")
    for name, value in results.items():
        print(f"  {name:32} {value:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
