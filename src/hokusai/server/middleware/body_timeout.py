"""Ends requests whose client stops sending its body: a 408, the connection closed, nothing stored.

uvicorn bounds idle keep-alive connections but not a body that stops arriving halfway, so a stalled or malicious
client would hold its connection (and, through the gateway, an MLflow connection and worker) for as long as it
liked. Like nginx's `client_body_timeout`, the limit applies between two pieces of the body, never to the whole
upload, so a slow but moving client is never cut off.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai.errors import ErrorCode
from hokusai.server.errors import error_response
from hokusai.server.middleware.request_id import logged_path
from hokusai.server.request_head import declares_body

logger = logging.getLogger(__name__)
_DISCONNECT: Message = {"type": "http.disconnect"}


class ClientBodyTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not declares_body(scope["headers"]):
            # Without a body there is nothing to wait for: uvicorn answers the one receive at once. Most calls are
            # such reads, and a timer set and cancelled for each was measurable in the gateway's CPU per request.
            await self.app(scope, receive, send)
            return
        body_complete = False
        stalled = False
        response_started = False

        async def receive_within_timeout() -> Message:
            nonlocal body_complete, stalled
            if body_complete or stalled:
                # Past the body, a receive only waits for the client to hang up (Starlette's disconnect
                # listener): no limit applies there.
                return _DISCONNECT if stalled else await receive()
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    message = await receive()
            except TimeoutError:
                # The app sees the client as gone and unwinds the usual way (MLflow drops a partial upload);
                # the 408 below is the answer, whatever the app makes of the broken body.
                stalled = True
                return _DISCONNECT
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        async def send_unless_stalled(message: Message) -> None:
            nonlocal response_started
            if stalled:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive_within_timeout, send_unless_stalled)
        except Exception as exc:
            if not stalled:
                raise
            # An app that does not expect a client to vanish mid-body; the 408 still goes out.
            logger.info(
                "%s %s ended with %s after its body stalled",
                scope["method"],
                logged_path(scope),
                type(exc).__name__,
            )
        if stalled and not response_started:
            await self._answer_stalled(scope, receive, send)

    async def _answer_stalled(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            408,
            f"The request body stopped arriving: nothing came for {self.timeout_seconds:g} s. The request was "
            "abandoned and nothing from it was stored; send it again.",
            error_code=ErrorCode.DEADLINE_EXCEEDED,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
