"""The API refuses input it would otherwise misread: repeated JSON keys, numbers a float reads as 0, compressed
bodies, query parameters no route takes. In process, on the real app; no MLflow is needed, as none is reached."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hokusai.server.db import Database
from hokusai.server.keys import KeyStore
from hokusai.server.main import create_app
from hokusai.server.secrets import PlatformSecrets
from hokusai.server.settings import Settings
from hokusai.validation import parse_scopes

TOKENIZED = "/api/v1/models/tokenized"
JSON = {"content-type": "application/json"}
PEPPER = b"p" * 32
UNDERFLOW = "is too small for a 64-bit float: it would be stored as 0"

Send = Callable[..., httpx.Response]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return Settings(_env_file=None, data_dir=tmp_path).resolved_database_url  # type: ignore[call-arg]


@pytest.fixture
def send(tmp_path: Path, sqlite_url: str) -> Send:
    """A request to the app, as `httpx.request` takes it; the MLflow it fronts is never reached."""
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    app = create_app(settings, PlatformSecrets(PEPPER, "a" * 32, "b" * 32, "c" * 32), "http://127.0.0.1:9")

    async def request(method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.request(method, path, **kwargs)

    return lambda method, path, **kwargs: asyncio.run(request(method, path, **kwargs))


def _key(sqlite_url: str, scopes: str) -> dict[str, str]:
    database = Database(sqlite_url)
    try:
        issued = KeyStore(database, PEPPER, cache_ttl=10.0).create(owner="alice", name="t", scopes=parse_scopes(scopes))
    finally:
        database.close()
    return {"Authorization": f"Bearer {issued.secret}"}


def _refused(response: httpx.Response, status: int, message: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["message"], body.get("field")) == (message, field)
    assert body["layer"] == "hokusai-api"


def _passed_the_checks(response: httpx.Response) -> None:
    """Not refused as input: the request went on to authentication, which no key passes."""
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"token_id": "A", "model_name": "m", "token_id": "B"}', "token_id"),
        (b'{"tags": {"a": "1", "a": "2"}}', "tags.a"),
        (b'{"model_name": "m", "metadata": [{"x": 1}, {"y": 1, "y": 2}]}', "metadata.1.y"),
    ],
)
def test_a_repeated_json_key_is_refused_not_last_one_wins(send: Send, body: bytes, field: str) -> None:
    response = send("POST", TOKENIZED, content=body, headers=JSON)
    _refused(response, 400, f"{field}: is given more than once in the request body; give it once", field)
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("literal", ["1e-400", "5e-325", "-0.00001e-999", "1E-400"])
def test_a_number_a_float_reads_as_zero_is_refused(send: Send, literal: str) -> None:
    response = send("POST", TOKENIZED, content=f'{{"baseline_value": {literal}}}'.encode(), headers=JSON)
    _refused(response, 400, f"baseline_value: {UNDERFLOW} (sent as {literal})", "baseline_value")
    nested = send(
        "POST", "/api/v1/models/baseline", content=f'{{"metadata": {{"x": [{literal}]}}}}'.encode(), headers=JSON
    )
    assert nested.json()["field"] == "metadata.x.0"


@pytest.mark.parametrize("literal", ["0.0", "-0.0e-400", "0e5", "5e-324", "1e308"])
def test_zero_and_the_smallest_float_pass(send: Send, literal: str) -> None:
    _passed_the_checks(send("POST", TOKENIZED, content=f'{{"baseline_value": {literal}}}'.encode(), headers=JSON))


def test_json_that_is_not_json_is_still_answered_as_such(send: Send) -> None:
    broken = send("POST", TOKENIZED, content=b'{"a": 1, "a"', headers=JSON)
    assert broken.status_code == 400
    assert broken.json()["message"].startswith("The request body is not valid JSON: ")
    deep = send("POST", TOKENIZED, content=b"[" * 100_000, headers=JSON)
    assert deep.status_code == 400 and "nests too deeply" in deep.json()["message"]


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        pytest.param("gzip", gzip.compress(b"{}"), id="gzip"),
        pytest.param("gzip", b"{}", id="labelled-gzip"),
        pytest.param("br", b"{}", id="br"),
        pytest.param("identity, gzip", gzip.compress(b"{}"), id="identity-then-gzip"),
    ],
)
def test_a_compressed_body_is_a_415(send: Send, coding: str, body: bytes) -> None:
    response = send("POST", TOKENIZED, content=body, headers={**JSON, "content-encoding": coding})
    sent = coding.removeprefix("identity, ")
    message = (
        f"The API takes uncompressed request bodies only (Content-Encoding: {sent}); send the body as plain JSON, "
        "without Content-Encoding."
    )
    _refused(response, 415, message)
    assert response.json()["error_code"] == "BAD_REQUEST"  # what MLflow's client derives from a bare 4xx
    assert response.headers["accept-encoding"] == "identity"


def test_an_identity_coded_body_is_read(send: Send) -> None:
    _passed_the_checks(send("POST", TOKENIZED, content=b"{}", headers={**JSON, "content-encoding": "identity"}))


def test_a_nan_tag_value_is_refused(send: Send, sqlite_url: str) -> None:
    body = b'{"model_uri": "s3://b/m", "model_name": "m", "token_id": "T", "metric_name": "a", "baseline_value": 1,'
    writer = {**JSON, **_key(sqlite_url, "read,write")}
    for value in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        response = send("POST", TOKENIZED, content=body + b'"tags": {"k": ' + value + b"}}", headers=writer)
        _refused(response, 400, "Invalid request: tags: the value of 'k' must be finite (not NaN or infinity)", "tags")


@pytest.mark.parametrize(
    ("path", "message", "field"),
    [
        (
            "/api/v1/models/tokenized?token=X",
            "token: is not a query parameter of this endpoint; it takes token_id, owner, page_token, max_results",
            "token",
        ),
        (
            "/api/v1/audit?actr=alice&max_results=5&sinse=2026",
            "actr, sinse: are not query parameters of this endpoint; it takes actor, action, since, until, page_token, "
            "max_results",
            None,
        ),
        (
            "/api/v1/auth/whoami?verbose=1",
            "verbose: is not a query parameter of this endpoint; it takes none",
            "verbose",
        ),
        ("/health?x=1", "x: is not a query parameter of this endpoint; it takes none", "x"),
    ],
)
def test_an_unknown_query_parameter_is_refused(send: Send, path: str, message: str, field: str | None) -> None:
    _refused(send("GET", path), 400, message, field)


def test_what_the_sdk_and_cli_send_is_accepted(send: Send, sqlite_url: str) -> None:
    admin = _key(sqlite_url, "admin")
    audit = "/api/v1/audit?actor=alice&action=key.create&since=2026-01-01T00:00:00&until=2100-01-01T00:00:00"
    for path in (audit + "&max_results=5", "/api/v1/keys?all=true", "/api/v1/keys?owner=alice"):
        assert send("GET", path, headers=admin).status_code == 200, path
    for path in (
        "/api/v1/models/tokenized?token_id=X&owner=alice&page_token=p&max_results=100",
        "/api/v1/models/baseline?model_type=t&page_token=p&max_results=100",
    ):
        _passed_the_checks(send("GET", path))


def test_a_repeated_parameter_and_a_key_in_the_url_keep_their_answers(send: Send) -> None:
    _refused(
        send("GET", f"{TOKENIZED}?token_id=A&token_id=B"),
        400,
        "token_id: is given more than once; give it once",
        "token_id",
    )
    in_url = send("GET", "/api/v1/auth/whoami?api_key=hk_live_" + "a" * 40)
    assert in_url.status_code == 401 and "not accepted in the URL" in in_url.json()["message"]


@pytest.mark.parametrize("path", ["/docs?x=1", "/redoc?x=1", "/openapi.json?x=1", "/health"])
def test_the_documents_and_the_probe_still_answer(send: Send, path: str) -> None:
    assert send("GET", path).status_code == 200
    assert send("HEAD", "/health").status_code == 200
