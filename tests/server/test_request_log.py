"""The access log: one line per request, whatever the path holds."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai._printable import printable
from hokusai.server.middleware.request_id import ACTOR_STATE, RequestIdMiddleware


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _ok_as_alice(scope: Scope, receive: Receive, send: Send) -> None:
    scope["state"][ACTOR_STATE] = "alice/key_1"  # what the key check records
    await _ok(scope, receive, send)


def _request(path: str, app: ASGIApp = _ok) -> list[Message]:
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(RequestIdMiddleware(app)(scope, receive, send))
    return sent


def test_a_decoded_newline_in_the_path_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    forged = "/api/v1/x\n2026-11-27 10:00:00,000 INFO hokusai.access: req_0 DELETE /api/v1/keys/key_1 200 1.0ms"
    with caplog.at_level("INFO", logger="hokusai.access"):
        sent = _request(forged)

    [record] = caplog.records
    line = record.getMessage()
    assert sent[0]["status"] == 200
    assert "\n" not in line
    assert " - GET /api/v1/x\\n2026-11-27 10:00:00,000 INFO hokusai.access: req_0 DELETE" in line


def test_the_line_names_the_keys_owner_and_id_once_the_key_is_checked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="hokusai.access"):
        _request("/api/v1/auth/whoami", _ok_as_alice)

    [record] = caplog.records
    assert " alice/key_1 GET /api/v1/auth/whoami 200 " in record.getMessage()


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("/api/mlflow/api/2.0/mlflow/runs/get", "/api/mlflow/api/2.0/mlflow/runs/get"),
        ("/artifacts/résumé.txt", "/artifacts/résumé.txt"),  # printable non-ASCII stays readable
        ("/a\r\nb", "/a\\r\\nb"),
        ("/a\x00b\x1b[31m", "/a\\x00b\\x1b[31m"),
        ("/a\u2028b", "/a\\u2028b"),  # a line separator to some log viewers
        ("/é\nü\u202e", "/é\\nü\\u202e"),  # only what could break the line or reorder it is escaped
        ("/a\u00a0b\u200d", "/a\u00a0b\u200d"),  # a no-break space and a joiner print as themselves
        ("/a\\nb\x00", "/a\\\\nb\\x00"),  # a sent backslash never reads as an escape made here
        ("/C:\\dir", "/C:\\\\dir"),
        ("/\U000e0000\U00013439", "/\\U000e0000\\U00013439"),  # unassigned here, format characters later
    ],
)
def test_printable_escapes_only_what_could_break_a_line(text: str, logged: str) -> None:
    assert printable(text) == logged
