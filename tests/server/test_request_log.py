"""The access log: one line per request, whatever the path holds."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai._printable import printable
from hokusai.server.middleware.request_id import ACTOR_STATE, RequestIdMiddleware
from hokusai.server.runner import LOG_FORMAT, _ServerFormatter


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _ok_as_alice(scope: Scope, receive: Receive, send: Send) -> None:
    scope["state"][ACTOR_STATE] = "alice/key_1"  # what the key check records
    await _ok(scope, receive, send)


def _request(
    path: str, app: ASGIApp = _ok, headers: list[tuple[bytes, bytes]] | None = None, raw_path: bytes | None = None
) -> list[Message]:
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or [], "query_string": b""}
    if raw_path is not None:
        scope["raw_path"] = raw_path
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


def test_the_line_shows_the_path_as_the_client_encoded_it(caplog: pytest.LogCaptureFixture) -> None:
    """A refused `%2F` read as a `/` in the log, where it looked like a path the gateway would have allowed."""
    with caplog.at_level("INFO", logger="hokusai.access"):
        _request("/api/mlflow/x/report/q.txt", raw_path=b"/api/mlflow/x/report%2Fq.txt")
        _request("/api/mlflow/x/a\nb", raw_path=b"/api/mlflow/x/a%0Ab")

    lines = [record.getMessage() for record in caplog.records]
    assert " GET /api/mlflow/x/report%2Fq.txt 200 " in lines[0]
    assert " GET /api/mlflow/x/a%0Ab 200 " in lines[1]


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


def _request_id_headers(sent: list[Message]) -> list[bytes]:
    start = next(message for message in sent if message["type"] == "http.response.start")
    return [value for name, value in start["headers"] if name == b"x-request-id"]


def test_every_answer_carries_one_request_id_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="hokusai.access"):
        ids = [_request_id_headers(_request("/api/v1/health")) for _ in range(200)]
    assert all(len(found) == 1 for found in ids)
    flat = [found[0].decode() for found in ids]
    assert all(re.fullmatch(r"req_[0-9a-f]{16}", request_id) for request_id in flat)
    assert len(set(flat)) == len(flat)
    assert [record.getMessage().split()[0] for record in caplog.records] == flat  # the log names the same id


@pytest.mark.parametrize(("sent", "kept"), [(b"client-chosen.1_A", True), (b"has space", False), (b"x" * 65, False)])
def test_a_well_formed_request_id_from_the_client_is_kept(sent: bytes, kept: bool) -> None:
    async def ok_with_a_header(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b""})

    messages = _request("/", ok_with_a_header, headers=[(b"x-request-id", sent)])
    (answered,) = _request_id_headers(messages)
    assert (answered == sent) is kept
    assert (b"content-type", b"text/plain") in messages[0]["headers"]  # the app's own headers stay


def test_the_log_time_reads_as_loggings_own(caplog: pytest.LogCaptureFixture) -> None:
    """The formatter writes each second's date and time once; every line still shows its own, to the millisecond."""
    ours = _ServerFormatter()
    stock = logging.Formatter(LOG_FORMAT)
    for created in (1_764_400_000.001, 1_764_400_000.999, 1_764_400_001.0, 1_764_400_001.5, 1_764_400_000.25):
        record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": int(created % 1 * 1000) + 0.0})
        assert ours.format(record) == stock.format(record)
