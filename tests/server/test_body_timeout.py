"""The client body timeout, against scripted ASGI messages (the live fault tests show it with real processes)."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from hokusai.server.middleware.body_timeout import ClientBodyTimeoutMiddleware

TIMEOUT = 0.2
# A head that announces a body, as every upload's does (a chunked one here; a Content-Length works alike).
SCOPE: Scope = {
    "type": "http",
    "method": "PUT",
    "path": "/x",
    "headers": [(b"transfer-encoding", b"chunked")],
    "query_string": b"",
}


class ScriptedClient:
    """Hands out body pieces after the given delays; once they are spent, waits (for `hang_up_after`, or forever)."""

    def __init__(self, pieces: list[tuple[float, bytes, bool]], hang_up_after: float | None = None) -> None:
        self.pieces = list(pieces)
        self.hang_up_after = hang_up_after
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.pieces:
            delay, body, more = self.pieces.pop(0)
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": body, "more_body": more}
        if self.hang_up_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.hang_up_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m["headers"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def json(self) -> dict[str, str]:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers with its length."""
    request = Request(scope, receive)
    try:
        body = await request.body()
    except ClientDisconnect:
        await JSONResponse({"app": "saw a disconnect"}, status_code=499)(scope, receive, send)
        return
    await JSONResponse({"length": len(body)})(scope, receive, send)


def run(app: object, client: ScriptedClient, scope: Scope = SCOPE) -> None:
    middleware = ClientBodyTimeoutMiddleware(app, TIMEOUT)  # type: ignore[arg-type]
    asyncio.run(asyncio.wait_for(middleware(scope, client.receive, client.send), timeout=10))


def test_a_body_that_stops_arriving_gets_a_408_and_the_connection_closes() -> None:
    client = ScriptedClient([(0, b"first", True)])  # and then nothing
    run(echo_length, client)
    assert client.status == 408
    assert client.json["error_code"] == "DEADLINE_EXCEEDED"
    assert client.json["layer"] == "hokusai-api"
    assert "stopped arriving" in client.json["message"]
    assert client.headers[b"connection"] == b"close"
    # The app's own answer to the broken body (here its 499) never reaches the client: one response only.
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]


def test_a_slow_body_that_keeps_moving_is_not_cut_off() -> None:
    # Each gap is under the limit; the whole upload takes well over it.
    pieces = [(TIMEOUT * 0.5, b"x" * 10, True) for _ in range(6)] + [(TIMEOUT * 0.5, b"", False)]
    client = ScriptedClient(pieces)
    run(echo_length, client)
    assert client.status == 200
    assert client.json == {"length": 60}


def test_once_the_body_is_complete_waiting_for_a_hang_up_has_no_limit() -> None:
    """Starlette's disconnect listener receives after the body; that wait is not a stalled body."""

    async def listen_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive).body()
        message = await receive()  # blocks until the client hangs up, TIMEOUT * 3 later
        await JSONResponse({"then": message["type"]})(scope, receive, send)

    client = ScriptedClient([(0, b"whole", False)], hang_up_after=TIMEOUT * 3)
    run(listen_then_answer, client)
    assert client.status == 200
    assert client.json == {"then": "http.disconnect"}


def test_an_app_failing_on_the_broken_body_still_gives_the_408(caplog: pytest.LogCaptureFixture) -> None:
    async def fragile(scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive).body()  # raises ClientDisconnect, which this app does not expect

    client = ScriptedClient([(0, b"part", True)])
    # Its log line quotes the path as the client encoded it, as the access line does: decoded, `%2F` reads as `/`.
    encoded = {**SCOPE, "path": "/x/a/b.txt", "raw_path": b"/x/a%2Fb.txt"}
    with caplog.at_level("INFO", logger="hokusai.server.middleware.body_timeout"):
        run(fragile, client, encoded)
    assert client.status == 408
    assert [record.getMessage() for record in caplog.records] == [
        "PUT /x/a%2Fb.txt ended with ClientDisconnect after its body stalled"
    ]


def test_other_errors_of_the_app_are_not_hidden() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run(broken, ScriptedClient([(0, b"whole", False)]))


@pytest.mark.parametrize(
    "headers",
    [[], [(b"content-length", b"0")], [(b"content-type", b"application/json"), (b"content-length", b" 0 ")]],
    ids=["no-length", "length-0", "length-0-padded"],
)
def test_a_request_without_a_body_is_handed_on_untouched(headers: list[tuple[bytes, bytes]]) -> None:
    """Nothing to time: uvicorn answers such a request's one receive at once, so the app gets the server's own
    receive and send, and no timer is set."""
    seen = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send))
        await JSONResponse({"ok": True})(scope, receive, send)

    client = ScriptedClient([(0, b"", False)])
    run(app, client, {**SCOPE, "method": "GET", "headers": headers})
    assert seen == [(client.receive, client.send)]
    assert client.status == 200


@pytest.mark.parametrize(
    "headers", [[(b"content-length", b"5")], [(b"transfer-encoding", b"chunked")]], ids=["length", "chunked"]
)
def test_a_request_with_a_body_is_timed(headers: list[tuple[bytes, bytes]]) -> None:
    client = ScriptedClient([(0, b"first", True)])  # and then nothing
    run(echo_length, client, {**SCOPE, "headers": headers})
    assert client.status == 408
