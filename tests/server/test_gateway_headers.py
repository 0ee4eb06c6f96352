"""What the gateway sends MLflow in place of the client's headers."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.requests import Request

from hokusai.server.gateway import _upstream_headers
from hokusai.server.relay import _response_headers


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "client": ("10.1.2.3", 5000)}
    return Request(scope)


def test_credentials_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    request = _request(
        [
            (b"host", b"api.example"),
            (b"authorization", b"Bearer hk_live_secret"),
            (b"x-api-key", b"hk_live_secret"),
            (b"cookie", b"session=1"),
            (b"connection", b"keep-alive"),
            (b"connection", b"X-Hop-One, x-hop-two"),  # a second Connection header names more hop-by-hop fields
            (b"x-hop-one", b"1"),
            (b"x-hop-two", b"2"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"content-type", b"application/json"),
            (b"x-note", "café".encode()),
        ]
    )

    sent = _upstream_headers(request, {"authorization": "Bearer assertion"})

    assert sent == [
        ("content-type", "application/json"),
        ("x-note", "café"),
        ("x-forwarded-for", "10.1.2.3"),
        ("via", "1.1 hokusai"),
        ("authorization", "Bearer assertion"),
    ]


def test_mlflows_own_date_and_request_id_are_not_relayed() -> None:
    """uvicorn and the API add their own; relaying MLflow's too would send each twice."""
    response = SimpleNamespace(
        raw_headers=(
            (b"Date", b"Sun, 29 Nov 2026 13:00:00 GMT"),
            (b"X-Request-ID", b"mlflow-1"),
            (b"Set-Cookie", b"session=1"),
            (b"Content-Type", b"application/json"),
        )
    )
    assert _response_headers(response) == [(b"content-type", b"application/json"), (b"via", b"1.1 hokusai")]  # type: ignore[arg-type]
