"""Input the API used to misread, against the live platform: refused with the envelope, nothing claimed or stored;
what the SDK and the CLI send still accepted; the gateway's traffic untouched."""

from __future__ import annotations

import gzip
import json
import subprocess
import uuid

import httpx
import pytest

from hokusai import ModelRegistry
from tests.support.platform import LivePlatform, base_env, hokusai_command
from tests.support.sdk_live import User, new_user

TOKENIZED = "/api/v1/models/tokenized"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def alice(platform: LivePlatform) -> User:
    return new_user(platform, "alice")


def _registration(token_id: str, **fields: object) -> dict[str, object]:
    return {
        "model_uri": "s3://bucket/model",
        "model_name": f"strict-{token_id.lower()}",
        "token_id": token_id,
        "metric_name": "accuracy",
        "baseline_value": 0.5,
        **fields,
    }


def _raw(registration: dict[str, object], replace: str, by: str) -> bytes:
    """The registration as JSON text with one piece of it rewritten, as no JSON library would write it."""
    text = json.dumps(registration)
    assert replace in text
    return text.replace(replace, by, 1).encode()


def _refused(response: httpx.Response, status: int, field: str | None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["layer"] == "hokusai-api" and body.get("field") == field, body
    assert body["error_code"] == ("INVALID_PARAMETER_VALUE" if status == 400 else "BAD_REQUEST"), body
    return str(body["message"])


def _unique_token() -> str:
    return "STRICT-" + uuid.uuid4().hex[:10].upper()


def _assert_unclaimed(platform: LivePlatform, alice: User, *token_ids: str) -> None:
    with platform.client(alice.key) as client:
        for token_id in token_ids:
            assert client.get(f"/api/v1/tokens/{token_id}").status_code == 404, token_id


def test_a_repeated_key_is_refused_and_neither_token_claimed(platform: LivePlatform, alice: User) -> None:
    first, second = _unique_token(), _unique_token()
    twice = _raw(_registration(first), f'"token_id": "{first}"', f'"token_id": "{first}", "token_id": "{second}"')
    tag_twice = _raw(_registration(first, tags={"a": "1"}), '"a": "1"', '"a": "1", "a": "2"')
    with platform.client(alice.key) as client:
        message = _refused(client.post(TOKENIZED, content=twice, headers=JSON), 400, "token_id")
        assert message == "token_id: is given more than once in the request body; give it once"
        assert "tags.a: is given more than once" in _refused(
            client.post(TOKENIZED, content=tag_twice, headers=JSON), 400, "tags.a"
        )
    _assert_unclaimed(platform, alice, first, second)


@pytest.mark.parametrize("literal", ["1e-400", "5e-325"])
def test_a_baseline_that_would_be_stored_as_zero_is_refused(platform: LivePlatform, alice: User, literal: str) -> None:
    token_id = _unique_token()
    body = _raw(_registration(token_id), '"baseline_value": 0.5', f'"baseline_value": {literal}')
    with platform.client(alice.key) as client:
        message = _refused(client.post(TOKENIZED, content=body, headers=JSON), 400, "baseline_value")
    assert message == (f"baseline_value: is too small for a 64-bit float: it would be stored as 0 (sent as {literal})")
    _assert_unclaimed(platform, alice, token_id)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_tag_that_is_no_finite_number_is_refused(platform: LivePlatform, alice: User, value: str) -> None:
    token_id = _unique_token()
    body = _raw(_registration(token_id, tags={"k": 1}), '"k": 1', f'"k": {value}')
    with platform.client(alice.key) as client:
        message = _refused(client.post(TOKENIZED, content=body, headers=JSON), 400, "tags")
    assert message == "Invalid request: tags: the value of 'k' must be finite (not NaN or infinity)"
    _assert_unclaimed(platform, alice, token_id)


@pytest.mark.parametrize("name", ["eval_spec", "scorer_ref", "primary_metric", "benchmark_spec_id"])
def test_padded_metadata_is_refused_not_trimmed(platform: LivePlatform, alice: User, name: str) -> None:
    token_id = _unique_token()
    with platform.client(alice.key) as client:
        response = client.post(TOKENIZED, json=_registration(token_id, **{name: " spec-1 "}))
    assert _refused(response, 400, name) == f"{name}: must not start or end with whitespace"
    _assert_unclaimed(platform, alice, token_id)


@pytest.mark.parametrize(
    ("coding", "compress"), [("gzip", True), ("gzip", False), ("br", False)], ids=["gzip", "labelled-gzip", "br"]
)
def test_a_compressed_body_is_a_415(platform: LivePlatform, alice: User, coding: str, compress: bool) -> None:
    token_id = _unique_token()
    body = json.dumps(_registration(token_id)).encode()
    headers = {**JSON, "content-encoding": coding}
    with platform.client(alice.key) as client:
        response = client.post(TOKENIZED, content=gzip.compress(body) if compress else body, headers=headers)
    message = _refused(response, 415, None)
    assert message.startswith(f"The API takes uncompressed request bodies only (Content-Encoding: {coding})")
    assert response.headers["accept-encoding"] == "identity"
    _assert_unclaimed(platform, alice, token_id)


def test_an_unknown_query_parameter_is_refused(platform: LivePlatform, alice: User) -> None:
    with platform.client(alice.key) as client:
        misspelt = client.get(TOKENIZED, params={"token": "X"})  # was: every model alice may read
    assert _refused(misspelt, 400, "token") == (
        "token: is not a query parameter of this endpoint; it takes token_id, owner, page_token, max_results"
    )
    with platform.client(platform.admin_key) as admin:
        audit = admin.get("/api/v1/audit", params={"actr": "alice"})  # was: the whole log
    assert _refused(audit, 400, "actr").startswith("actr: is not a query parameter of this endpoint; it takes actor,")


def test_what_the_sdk_and_the_cli_send_is_accepted(platform: LivePlatform, alice: User) -> None:
    with ModelRegistry(api_key=alice.key, api_url=platform.url) as registry:
        assert registry.list_tokenized_models(_unique_token(), owner=alice.owner) == []
        registry.list_baselines("classification")
    env = base_env(platform.data_dir, HOKUSAI_API_URL=platform.url, HOKUSAI_API_KEY=platform.admin_key)
    for command in (
        ["audit", "--actor", alice.owner, "--action", "key.create", "--since", "2026-01-01", "--until", "2100-01-01"],
        ["keys", "list", "--all", "--json"],
        ["keys", "list", "--owner", alice.owner, "--json"],
    ):
        done = subprocess.run(hokusai_command(*command), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)


def test_the_documents_and_the_probes_still_answer(platform: LivePlatform) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/health", "/ready"):
        assert httpx.get(platform.url + path).status_code == 200, path


def test_the_gateway_leaves_query_and_coding_to_mlflow(platform: LivePlatform, alice: User) -> None:
    """Proxied requests never reach the API's routes: a query parameter MLflow ignores is still ignored there."""
    with platform.client(alice.key) as client:
        search = client.get("/api/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1, "x": "1"})
    assert search.status_code == 200, search.text
