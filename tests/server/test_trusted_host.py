"""The Host check against DNS rebinding, on scripted ASGI scopes (the live attack corpus sends it over sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from hokusai.server.middleware.trusted_host import TrustedHostMiddleware
from hokusai.server.settings import Settings


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app"})


def _call(middleware: TrustedHostMiddleware, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope: Scope = {"type": "http", "method": "GET", "path": "/api/v1/tokens", "headers": headers, "query_string": b""}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    return status, b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


def _middleware(**settings: object) -> TrustedHostMiddleware:
    return TrustedHostMiddleware(_ok, Settings(_env_file=None, **settings).trusted_hosts)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost:8000",
        "LOCALHOST",
        "localhost.",  # the same name, fully qualified
        "[::1]:8000",
        "10.1.2.3",
        "203.0.113.7:8000",  # a public address: a rebinding page always uses a name, never an address
        "hokusai.example.com",  # the public URL's host, on any port
        "hokusai.example.com:443",
        "api.corp.example",  # HOKUSAI_ALLOWED_HOSTS
        "eu.models.example",
    ],
)
def test_addresses_localhost_and_the_configured_names_pass(host: str) -> None:
    middleware = _middleware(
        public_url="https://hokusai.example.com", allowed_hosts="api.corp.example,*.models.example"
    )
    assert _call(middleware, [(b"host", host.encode())]) == (200, b"app")


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "attacker.example:8000",
        "localhost.attacker.example",
        "models.example",  # `*.models.example` wants a label before it
        "hokusai.example.com.attacker.example",
        "attacker.example@127.0.0.1",  # userinfo: not a Host at all
        "127.0.0.1:8000:80",
        "127.0.0.1/x",
        "",
        "2130706433",  # 127.0.0.1 as one number: browsers send it as 127.0.0.1, so only other clients send this
    ],
)
def test_other_names_are_refused_in_the_envelope(host: str) -> None:
    middleware = _middleware(public_url="https://hokusai.example.com", allowed_hosts="*.models.example")
    status, body = _call(middleware, [(b"host", host.encode())])
    envelope = json.loads(body)
    assert status == 400
    assert envelope["error_code"] == "BAD_REQUEST"
    assert envelope["layer"] == "hokusai-api"
    assert "HOKUSAI_ALLOWED_HOSTS" in envelope["message"]


@pytest.mark.parametrize(
    "headers",
    [[], [(b"host", b"127.0.0.1"), (b"host", b"attacker.example")], [(b"host", b"127.0.0.1"), (b"host", b"127.0.0.1")]],
)
def test_a_request_needs_exactly_one_host(headers: list[tuple[bytes, bytes]]) -> None:
    status, body = _call(_middleware(), headers)
    assert status == 400
    assert json.loads(body)["message"] == "The request needs exactly one Host header."


def test_a_refused_host_is_printed_escaped() -> None:
    _status, body = _call(_middleware(), [(b"host", b"evil\x1b[2J.example")])
    assert "\\x1b" in json.loads(body)["message"]


def test_a_star_lets_any_host_in() -> None:
    assert _call(_middleware(allowed_hosts="*"), [(b"host", b"attacker.example")]) == (200, b"app")


def test_the_hosts_it_remembers_are_bounded() -> None:
    middleware = _middleware()
    for last_octet in range(200):
        assert _call(middleware, [(b"host", f"10.0.0.{last_octet}".encode())])[0] == 200
    assert len(middleware._accepted) == 64


def test_allowed_hosts_are_names_in_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_ALLOWED_HOSTS", " API.Example.com, *.corp.example. ,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allowed_hosts == ("api.example.com", "*.corp.example")
    assert settings.trusted_hosts == ("localhost", "127.0.0.1", "api.example.com", "*.corp.example")


@pytest.mark.parametrize("value", ["https://api.example.com", "api.example.com:8000", "api.example.com/x", "a b"])
def test_allowed_hosts_refuse_urls_ports_and_paths(value: str) -> None:
    with pytest.raises(ValidationError, match="without a scheme, port or path"):
        Settings(_env_file=None, allowed_hosts=value)  # type: ignore[call-arg]
