"""Giving up on MLflow's answer once the client that asked for it has hung up.

While the gateway waits for MLflow it does not read from the client, so a client that times out and leaves went
unnoticed until MLflow answered, up to the read timeout (600 s) later; meanwhile its request held a pooled MLflow
connection and a place in its owner's share (`HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER`). A probe froze MLflow and
sent 32 requests whose clients gave up: the owner's next request was a 429 with nothing of theirs in progress, and
retries would have filled the pool for everyone (2026-11-29). nginx likewise drops the upstream request when its
client goes (`proxy_ignore_client_abort off`).

Most answers take milliseconds, so the watch starts only after `WATCH_AFTER_SECONDS`: a timer set and cancelled per
request, and a task only for the slow ones.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive

WATCH_AFTER_SECONDS = 1.0


class ClientLeft(Exception):
    """The client hung up while MLflow was preparing its answer; the wait for it was given up."""


class ClientWatch:
    """Within this block, a client that hangs up (once `after` seconds have passed) ends the wait with `ClientLeft`.

    Only for a request whose body has been read, or that has none: the watch reads `receive` for the disconnect.
    """

    def __init__(self, receive: Receive, after: float = WATCH_AFTER_SECONDS) -> None:
        self._receive = receive
        self._after = after
        self._client_left = False
        self._watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "ClientWatch is used inside a request's task"
        self._task = task
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._after, self._start_watching, loop)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        # The watcher cancels only while the block waits, so its cancellation arrives here, inside the block; another
        # one (a shutdown) on top of it still propagates.
        if exc_type is asyncio.CancelledError and self._client_left and self._task.uncancel() == 0:
            raise ClientLeft from None

    def _start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watcher = loop.create_task(self._watch())

    async def _watch(self) -> None:
        # A request without a body first receives its (empty) body; after that, only a disconnect arrives.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._client_left = True
        self._task.cancel()
