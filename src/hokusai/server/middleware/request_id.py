"""Gives every request an id (`X-Request-ID` on the response) and writes one access-log line without the query.

The line names the caller as `owner/key_id` once their key is verified (`-` before that, or without a key), so that
what a key did can be traced in the log as well as in MLflow.
"""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai._printable import printable

access_logger = logging.getLogger("hokusai.access")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
ACTOR_STATE = "actor"  # set in the request's state by the key check
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (_REQUEST_ID_HEADER, request_id.encode())
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appended, not set: no answer carries one of its own (the gateway drops MLflow's, see `relay`).
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The query string is left out on purpose: a misguided client may have put a key in it.
            access_logger.info(
                "%s %s %s %s %d %.1fms",
                request_id,
                scope["state"].get(ACTOR_STATE, "-"),
                scope["method"],
                logged_path(scope),
                status,
                (time.perf_counter() - started) * 1000,
            )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _CLIENT_ID.fullmatch(candidate):
                    return candidate
        # Ids must be unique, not unguessable (a client may choose its own): the `secrets` module would cost a system
        # call per request.
        return f"req_{random.getrandbits(64):016x}"


def logged_path(scope: Scope) -> str:
    """The path for a log line: as the client encoded it, which is what the gateway checks (decoded, a refused
    `report%2Fq.txt` would read as `report/q.txt`, a path it allows), escaped so that it cannot forge a line."""
    raw_path = scope.get("raw_path")
    return printable(raw_path.decode("latin-1") if raw_path else str(scope["path"]))
