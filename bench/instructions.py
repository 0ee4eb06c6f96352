"""`python -m bench.instructions`: instructions the gateway's own code runs per proxied request, counted by valgrind.

On a shared VM a change of a few microseconds per request drowns in the noise of any timing, `bench.app_cpu`'s
included. Instruction counts do not: valgrind's callgrind counts the same for the same work whatever else the machine
does. This drives the real app in-process (as `bench.app_cpu` does) with aiohttp's request replaced by an instant
answer, so that what is counted is Hokusai's code and the libraries it calls (Starlette, logging), not socket work;
the floor (`bench.floor_proxy`) is driven the same way for reference. Each app runs twice under callgrind, with a
few and with many 64 KiB PUT + GET pairs after the same warm-up; the difference, per request, is the figure. Compare
two checkouts by running it in each. Needs valgrind (Debian's package); about two minutes on two cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import ASGIApp

from bench import floor_proxy
from bench.app_cpu import PAYLOAD, cpu_ms_per_pair, hokusai_app, start_lifespan
from bench.floor_proxy import FloorProxy
from hokusai.server import upstream
from hokusai.server.runner import configure_logging

_WARM_UP_PAIRS = 100
_COLLECTED = re.compile(r"Collected : (\d+)")
_NOWHERE = "http://127.0.0.1:9"  # never connected to: every request is answered by `_InstantSession`


class _InstantResponse:
    """What `relay.client_answer` and the floor read of an aiohttp response: a GET gets 64 KiB, anything else `{}`."""

    def __init__(self, method: str) -> None:
        self.status = 200
        self.body = PAYLOAD if method == "GET" else b"{}"
        self.content_length = len(self.body)
        self.raw_headers = (
            (b"date", b"Sun, 29 Nov 2026 13:00:00 GMT"),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/octet-stream"),
        )

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass


class _InstantRequest:
    """`session.request(...)` as both apps use it: awaited (the gateway) or entered (the floor)."""

    def __init__(self, method: str) -> None:
        self._response = _InstantResponse(method)

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> _InstantResponse:
        return self._response

    async def __aenter__(self) -> _InstantResponse:
        return self._response

    async def __aexit__(self, *_: object) -> None:
        pass


class _InstantSession:
    def request(self, method: str, _url: object, **_: object) -> _InstantRequest:
        return _InstantRequest(method)

    async def close(self) -> None:
        pass


async def _drive(app_name: str, data_dir: Path, pairs: int) -> None:
    app: ASGIApp
    if app_name == "floor":
        app, authorization = FloorProxy(_NOWHERE), None
    else:
        app, authorization = hokusai_app(_NOWHERE, data_dir)
    stop = await start_lifespan(app)
    await cpu_ms_per_pair(app, authorization, _WARM_UP_PAIRS)
    await cpu_ms_per_pair(app, authorization, pairs)
    await stop()


def _counting(app_name: str, pairs: int, workdir: Path) -> subprocess.Popen[str]:
    """A child process driving `app_name` through the warm-up and `pairs` more pairs, under callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={workdir / f'{app_name}-{pairs}.out'}",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        app_name,
        "--pairs",
        str(pairs),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _collected(child: subprocess.Popen[str], what: str) -> int:
    _, stderr = child.communicate()
    found = _COLLECTED.search(stderr)
    if child.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({what}):\n{stderr[-2000:]}")
    return int(found.group(1))


def per_request(app_name: str, pairs: int) -> float:
    """Instructions per request: the difference between a run of `pairs` and one of `pairs // 6` pairs (both at
    once: the counts do not depend on what else runs)."""
    few = max(1, pairs // 6)
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-instructions-") as tmp:
        long_run, short_run = (_counting(app_name, n, Path(tmp)) for n in (pairs, few))
        many = _collected(long_run, f"{app_name}, {pairs} pairs")
        return (many - _collected(short_run, f"{app_name}, {few} pairs")) / (2 * (pairs - few))


def _instant_session(_settings: object) -> _InstantSession:
    return _InstantSession()


def _child(app_name: str, pairs: int) -> None:
    # Both apps open their aiohttp session at startup through `build_session`; each gets an instant one instead.
    upstream.build_session = floor_proxy.build_session = _instant_session  # type: ignore[assignment]
    with (
        tempfile.TemporaryDirectory(prefix="hokusai-bench-instructions-") as tmp,
        (Path(tmp) / "server.log").open("w") as log_file,
    ):
        configure_logging("info", stream=log_file)  # the access line is written, as `hokusai server` writes it
        (Path(tmp) / "data").mkdir()
        uvloop.run(_drive(app_name, Path(tmp) / "data", pairs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--pairs", type=int, default=600, help="PUT + GET pairs in the longer of the two runs")
    parser.add_argument("--child", choices=("hokusai", "floor"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.pairs)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    print(f"Instructions per proxied 64 KiB PUT or GET against an instant upstream ({args.pairs} pairs):")
    for app_name in ("hokusai", "floor"):
        print(f"  {app_name:8} {per_request(app_name, args.pairs):>10,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
