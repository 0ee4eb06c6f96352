from __future__ import annotations

import httpx
import pytest

from hokusai._client import DEFAULT_TIMEOUT, USER_AGENT, HokusaiClient, fetch_identity, json_body
from hokusai.errors import (
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConflictError,
    HokusaiConnectionError,
    HokusaiError,
    HokusaiInvalidRequestError,
    HokusaiNotFoundError,
    HokusaiPermissionError,
    HokusaiRateLimitError,
    HokusaiValidationError,
)

from .conftest import KEY, Answer, FakeAPI, error


def _client(api: FakeAPI) -> HokusaiClient:
    return HokusaiClient(KEY, api_url="http://api.test/", transport=api.transport)


def _fail(answer: httpx.Response, method: str = "GET") -> HokusaiAPIError:
    with _client(FakeAPI(answer)) as client, pytest.raises(HokusaiAPIError) as caught:
        client.request(method, "/api/v1/thing")
    return caught.value


def test_sends_bearer_key_and_user_agent() -> None:
    api = FakeAPI(httpx.Response(200, json={"ok": True}))
    with _client(api) as client:
        assert json_body(client.request("GET", "/api/v1/auth/whoami")) == {"ok": True}
    (request,) = api.requests
    assert str(request.url) == "http://api.test/api/v1/auth/whoami"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"] == USER_AGENT == "hokusai-sdk/0.1.0"


@pytest.mark.parametrize("body", [{"hello": 1}, [], {"owner": "alice", "scopes": ["read"]}, {"owner": None}])
def test_an_identity_without_hokusais_fields_is_not_the_api(body: object) -> None:
    """Any server answering 200 with JSON (another service on the port) must not pass for the API at login."""
    with _client(FakeAPI(httpx.Response(200, json=body))) as client, pytest.raises(HokusaiAPIError) as caught:
        fetch_identity(client)
    assert caught.value.error_code == "INVALID_RESPONSE"
    assert "not the Hokusai API" in str(caught.value)


def test_an_identity_with_hokusais_fields_is_returned_as_sent() -> None:
    identity = {"owner": "alice", "key_id": "key_1", "key_prefix": "hk_live_ab", "scopes": ["read"], "expires_at": None}
    with _client(FakeAPI(httpx.Response(200, json=identity))) as client:
        assert fetch_identity(client) == identity


def test_timeouts_are_on_by_default() -> None:
    assert httpx.Timeout(30.0, connect=5.0) == DEFAULT_TIMEOUT


def test_repr_hides_the_key() -> None:
    client = _client(FakeAPI())
    assert repr(client) == "HokusaiClient(api_url='http://api.test', api_key='**********')"
    assert KEY not in repr(client._http.auth)


def test_401_is_an_auth_error_with_request_id_and_login_hint() -> None:
    exc = _fail(error(401, "UNAUTHENTICATED", "The API key is revoked.", x_request_id="req-123"))
    assert type(exc) is HokusaiAuthError
    assert str(exc) == (
        "401 UNAUTHENTICATED from hokusai-api (Request ID: req-123): The API key is revoked. "
        "(HINT: check HOKUSAI_API_KEY or run `hokusai login`)"
    )
    assert (exc.status, exc.error_code, exc.layer, exc.request_id) == (401, "UNAUTHENTICATED", "hokusai-api", "req-123")
    assert exc.user_message == "The API key is revoked."


@pytest.mark.parametrize(
    ("status", "code", "should_retry"),
    [(400, "INVALID_PARAMETER_VALUE", False), (401, "UNAUTHENTICATED", False), (403, "PERMISSION_DENIED", False),
     (404, "RESOURCE_DOES_NOT_EXIST", False), (409, "INVALID_STATE", False), (408, "DEADLINE_EXCEEDED", True),
     (429, "RESOURCE_EXHAUSTED", True), (502, "TEMPORARILY_UNAVAILABLE", True),
     (503, "TEMPORARILY_UNAVAILABLE", True), (504, "DEADLINE_EXCEEDED", True)],
)  # fmt: skip
def test_an_error_says_whether_the_same_request_may_succeed_later(status: int, code: str, should_retry: bool) -> None:
    # A POST without an idempotency key is sent once: the one answer is the error.
    assert _fail(error(status, code, "not now, or not this"), "POST").should_retry is should_retry


def test_connection_errors_may_succeed_later_and_local_refusals_never() -> None:
    refused = FakeAPI(httpx.ConnectError("Connection refused"))
    client = HokusaiClient(KEY, api_url="http://api.test", max_retries=0, transport=refused.transport)
    with client, pytest.raises(HokusaiConnectionError) as unreachable:
        client.request("GET", "/api/v1/auth/whoami")
    assert unreachable.value.should_retry is True
    assert HokusaiValidationError("token_id", "must not be empty").should_retry is False
    assert HokusaiConfigurationError("No API key.").should_retry is False


def test_403_from_the_api_names_the_missing_scope() -> None:
    exc = _fail(error(403, "PERMISSION_DENIED", "This action requires the 'write' scope."))
    assert type(exc) is HokusaiPermissionError
    assert exc.hint == "this key lacks the 'write' scope; ask an admin for a key with that scope"
    # A message that says what to do itself gets no hint repeating it (`hokusai audit` with a user's key did).
    advised = (
        "This key lacks the 'admin' scope needed for GET /api/v1/audit. Ask an admin for a key with the 'admin' scope."
    )
    assert _fail(error(403, "PERMISSION_DENIED", advised)).hint is None


def test_403_from_the_api_without_a_missing_scope_adds_no_scope_hint() -> None:
    message = "Registered model names starting with 'hokusai-baseline-' are reserved for Hokusai's baselines."
    exc = _fail(error(403, "PERMISSION_DENIED", message))
    assert type(exc) is HokusaiPermissionError
    assert exc.hint is None and str(exc) == f"403 PERMISSION_DENIED from hokusai-api: {message}"


def test_404_for_an_unknown_account_does_not_point_at_models() -> None:
    message = "No account 'nobody': an account exists once a key is created for it."
    exc = _fail(error(404, "RESOURCE_DOES_NOT_EXIST", message))
    assert exc.hint is None


def test_403_from_mlflow_explains_ownership() -> None:
    exc = _fail(error(403, "PERMISSION_DENIED", "Permission denied", layer="mlflow"))
    assert type(exc) is HokusaiPermissionError
    assert exc.layer == "mlflow"
    assert exc.hint == (
        "MLflow refused this resource: it belongs to another user, or (where the message says so) may not exist; "
        "check its name or id, use your own experiment/model, or ask an admin for access (grants need an admin key)"
    )


def test_404_and_409() -> None:
    not_found = _fail(error(404, "RESOURCE_DOES_NOT_EXIST", "Model 'x' not found."))
    assert type(not_found) is HokusaiNotFoundError
    assert "hokusai models list" in str(not_found.hint)
    missing_run = _fail(error(404, "RESOURCE_DOES_NOT_EXIST", "MLflow could not read run 'r1': not found."), "POST")
    assert missing_run.hint == "check the run id and the model's artifact path (the `name` given to log_model)"
    conflict = _fail(error(409, "TOKEN_ALREADY_CLAIMED", "Token T is claimed by model 'other'."), "POST")
    assert type(conflict) is HokusaiConflictError
    assert "Token T is claimed by model 'other'." in str(conflict)


def test_a_refused_key_gets_the_fix_for_where_it_came_from() -> None:
    fix = "the key hk_live_AbCd… is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"
    refused = FakeAPI(error(401, "UNAUTHENTICATED", "The API key is revoked."))
    client = HokusaiClient(KEY, api_url="http://api.test", transport=refused.transport, refused_key_hint=fix)
    with client, pytest.raises(HokusaiAuthError) as caught:
        client.request("GET", "/api/v1/auth/whoami")
    assert caught.value.hint == fix
    # MLflow refusing the API's own credentials is no fault of the key: that 401 keeps its own (absent) hint.
    upstream = FakeAPI(error(401, "UNAUTHENTICATED", "MLflow refused the API's credentials.", layer="mlflow"))
    client = HokusaiClient(KEY, api_url="http://api.test", transport=upstream.transport, refused_key_hint=fix)
    with client, pytest.raises(HokusaiAuthError) as caught:
        client.request("GET", "/api/mlflow/api/2.0/mlflow/experiments/search")
    assert caught.value.hint is None


@pytest.mark.parametrize(
    ("code", "hint_starts"),
    [
        # None: the server's message for these says what to do
        ("TOKEN_ALREADY_CLAIMED", None),
        ("INVALID_STATE", None),
        ("REGISTRATION_CONFLICT", None),
        ("TOKEN_MODEL_GONE", "name the model the token should move to"),
        ("RESOURCE_ALREADY_EXISTS", "the resource changed or already exists"),
    ],
)
def test_each_conflict_gets_the_hint_for_its_code(code: str, hint_starts: str | None) -> None:
    conflict = _fail(error(409, code, "Refused."), "POST")
    assert type(conflict) is HokusaiConflictError
    if hint_starts is None:
        assert conflict.hint is None
    else:
        assert str(conflict.hint).startswith(hint_starts)


def test_unknown_endpoint_points_at_the_url() -> None:
    exc = _fail(error(404, "ENDPOINT_NOT_FOUND", "No such endpoint."))
    assert exc.hint == (
        "check the API URL (--api-url, HOKUSAI_API_URL or the saved login): it must be the API root "
        "(e.g. http://127.0.0.1:8000), not a sub-path"
    )


def test_429_carries_retry_after() -> None:
    exc = _fail(error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests.", retry_after="7"))
    assert isinstance(exc, HokusaiRateLimitError)
    assert exc.retry_after == 7.0
    assert exc.hint == "wait 7 s and retry"


def test_non_json_body_still_gives_a_typed_error() -> None:
    html = "<html>" + "x" * 1000 + "</html>"
    exc = _fail(httpx.Response(502, text=html, headers={"X-Request-ID": "lb-1"}), "POST")
    assert type(exc) is HokusaiAPIError
    assert (exc.status, exc.error_code, exc.layer, exc.request_id) == (502, "HTTP_502", "unknown", "lb-1")
    assert exc.user_message == "502 Bad Gateway with a body that is not a Hokusai error: " + repr(html[:500])


def test_unauthenticated_html_from_mlflow_is_an_auth_error() -> None:
    exc = _fail(httpx.Response(401, text="You are not authenticated."))
    assert type(exc) is HokusaiAuthError
    assert "You are not authenticated." in exc.user_message


def test_non_json_success_body_is_reported() -> None:
    with _client(FakeAPI(httpx.Response(200, text="<html>login</html>"))) as client:
        response = client.request("GET", "/api/v1/auth/whoami")
        with pytest.raises(HokusaiAPIError) as caught:
            json_body(response)
    assert caught.value.error_code == "INVALID_RESPONSE"
    assert "answered 200 with a body that is not JSON: '<html>login</html>'" in str(caught.value)


def test_connection_error_names_host_and_hint(sleeps: list[float]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    api = FakeAPI(refused, refused, refused)
    with _client(api) as client, pytest.raises(HokusaiConnectionError) as caught:
        client.request("GET", "/api/v1/auth/whoami")
    assert str(caught.value) == (
        "Could not connect to api.test (ConnectError: [Errno 111] Connection refused). "
        "(HINT: is the Hokusai API running? `hokusai server` / check the API URL (--api-url, HOKUSAI_API_URL or the "
        "saved login))"
    )
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(api.requests) == 3  # the first attempt and two retries
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0  # exponential, with jitter


def test_timeout_is_a_connection_error_whose_hint_says_where_it_waited() -> None:
    timeout = httpx.ReadTimeout("timed out")
    with _client(FakeAPI(timeout, timeout, timeout)) as client, pytest.raises(HokusaiConnectionError) as caught:
        client.request("GET", "/x")
    assert caught.value.user_message == (
        "api.test accepted the request but did not answer in time (ReadTimeout: timed out)."
    )
    assert caught.value.hint is not None and "waiting on its MLflow" in caught.value.hint

    unreachable = httpx.ConnectTimeout("timed out")
    with _client(FakeAPI(unreachable, unreachable, unreachable)) as client, pytest.raises(HokusaiConnectionError) as no:
        client.request("GET", "/x")
    assert no.value.user_message == "api.test did not answer in time (ConnectTimeout: timed out)."
    assert no.value.hint is not None and no.value.hint.startswith("is the Hokusai API running?")


def test_gateway_errors_are_retried_for_get(sleeps: list[float]) -> None:
    api = FakeAPI(error(503, "TEMPORARILY_UNAVAILABLE", "MLflow is starting."), httpx.Response(200, json={}))
    with _client(api) as client:
        assert client.request("GET", "/x").status_code == 200
    assert len(api.requests) == 2 and len(sleeps) == 1


def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    api = FakeAPI(error(503, "TEMPORARILY_UNAVAILABLE", "busy", retry_after="3"), httpx.Response(200, json={}))
    with _client(api) as client:
        client.request("GET", "/x")
    assert sleeps == [3.0]


def test_a_long_retry_after_is_not_waited_for(sleeps: list[float]) -> None:
    api = FakeAPI(error(503, "TEMPORARILY_UNAVAILABLE", "maintenance", retry_after="120"))
    with _client(api) as client, pytest.raises(HokusaiAPIError) as caught:
        client.request("GET", "/x")
    assert caught.value.status == 503 and sleeps == []


def test_post_without_idempotency_key_is_not_retried(sleeps: list[float]) -> None:
    api = FakeAPI(error(503, "TEMPORARILY_UNAVAILABLE", "busy"))
    with _client(api) as client, pytest.raises(HokusaiAPIError):
        client.request("POST", "/x", json={})
    assert len(api.requests) == 1 and sleeps == []


def test_any_request_that_never_reached_the_server_is_retried(sleeps: list[float]) -> None:
    api = FakeAPI(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow connect"), httpx.Response(200, json={}))
    with _client(api) as client:
        assert client.request("DELETE", "/api/v1/keys/key_1").status_code == 200
    assert len(api.requests) == 3 and len(sleeps) == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("no answer"), httpx.RemoteProtocolError("dropped"), error(503, "TEMPORARILY_UNAVAILABLE", "x")],
)
def test_a_delete_that_may_have_arrived_is_not_sent_again(sleeps: list[float], failure: Answer) -> None:
    # Revoking a key or releasing a token twice answers 409 or 404: a retry would report a success as a failure.
    with _client(FakeAPI(failure)) as client, pytest.raises((HokusaiConnectionError, HokusaiAPIError)):
        client.request("DELETE", "/api/v1/keys/key_1")
    assert sleeps == []


def test_post_with_idempotency_key_is_retried_with_the_same_key(sleeps: list[float]) -> None:
    api = FakeAPI(httpx.ConnectError("refused"), error(504, "DEADLINE_EXCEEDED", "slow"), httpx.Response(201, json={}))
    with _client(api) as client:
        client.request("POST", "/x", json={"a": 1}, headers={"Idempotency-Key": "key-1"})
    assert [request.headers["Idempotency-Key"] for request in api.requests] == ["key-1", "key-1", "key-1"]
    assert len(sleeps) == 2


def test_a_stalled_body_is_sent_again_and_explained(sleeps: list[float]) -> None:
    stalled = error(408, "DEADLINE_EXCEEDED", "The request body stopped arriving: nothing came for 60 s.")
    api = FakeAPI(stalled, httpx.Response(200, json={}))
    with _client(api) as client:
        assert client.request("PUT", "/x", json={"a": 1}).status_code == 200
    assert len(api.requests) == 2 and len(sleeps) == 1
    exc = _fail(stalled, "POST")  # not idempotent: reported, with what to do
    assert exc.status == 408
    assert exc.hint == "the request body stopped arriving at the API (a stalled network or client): send it again"


def test_500_and_4xx_are_not_retried(sleeps: list[float]) -> None:
    for answer in (error(500, "INTERNAL_ERROR", "boom"), error(400, "INVALID_PARAMETER_VALUE", "bad")):
        api = FakeAPI(answer)
        with _client(api) as client, pytest.raises(HokusaiAPIError):
            client.request("GET", "/x")
        assert len(api.requests) == 1
    assert sleeps == []


def test_per_request_auth_override() -> None:
    api = FakeAPI(httpx.Response(200, json={}), httpx.Response(200, json={}))
    with _client(api) as client:
        client.request("GET", "http://mlflow.test/api/2.0/x", auth=httpx.BasicAuth("me", "pw"))
        client.request("GET", "/x", auth=None)
    assert api.requests[0].headers["Authorization"].startswith("Basic ")
    assert str(api.requests[0].url) == "http://mlflow.test/api/2.0/x"
    assert "Authorization" not in api.requests[1].headers


def test_with_hint_keeps_everything_but_the_hint() -> None:
    original = HokusaiRateLimitError(
        "Slow down.", retry_after=3.0, status=429, error_code="RATE_LIMITED", layer="mlflow", request_id="r-9", hint="x"
    )
    changed = original.with_hint("wait 3 s")
    assert type(changed) is HokusaiRateLimitError
    assert (changed.status, changed.error_code, changed.layer, changed.request_id, changed.retry_after) == (
        429, "RATE_LIMITED", "mlflow", "r-9", 3.0,
    )  # fmt: skip
    assert str(changed) == "429 RATE_LIMITED from mlflow (Request ID: r-9): Slow down. (HINT: wait 3 s)"
    assert str(original).endswith("(HINT: x)")


def test_400_is_an_invalid_request_error_caught_as_a_validation_error_too() -> None:
    answer = httpx.Response(
        400,
        json={
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "baseline_value: differs from the run (strict mode)",
            "layer": "hokusai-api",
            "field": "baseline_value",
        },
    )
    exc = _fail(answer)
    assert type(exc) is HokusaiInvalidRequestError
    assert isinstance(exc, HokusaiValidationError) and isinstance(exc, ValueError)
    assert (exc.status, exc.field, exc.problem) == (
        400,
        "baseline_value",
        "differs from the run (strict mode)",
    )
    assert str(exc).startswith("400 INVALID_PARAMETER_VALUE from hokusai-api: baseline_value: differs")
    assert exc.with_hint("other").field == "baseline_value"
    # Without a field in the envelope the error still says what the server said.
    assert _fail(error(400, "BAD_REQUEST", "Invalid request: limit: too large")).field is None


def test_a_local_validation_error_has_the_attributes_of_the_servers_400() -> None:
    """Code testing `error_code` caught the server's 400 but not the same rule broken before sending."""
    local = HokusaiValidationError("token_id", "must be 1-64 letters")
    server = _fail(error(400, "INVALID_PARAMETER_VALUE", "token_id: must be 1-64 letters"))

    assert (local.error_code, local.layer, local.status, local.request_id) == (
        "INVALID_PARAMETER_VALUE",
        "sdk",
        None,
        None,
    )
    assert (server.error_code, server.layer, server.status) == ("INVALID_PARAMETER_VALUE", "hokusai-api", 400)


@pytest.mark.parametrize("error", [HokusaiConnectionError("down"), HokusaiConfigurationError("no key")])
def test_every_error_has_the_servers_facts_as_attributes(error: HokusaiError) -> None:
    """One `except HokusaiError as exc` clause reads `exc.status` etc. for any error: None where no server answered."""
    assert (error.status, error.error_code, error.layer, error.request_id) == (None, None, None, None)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.LocalProtocolError(f"Illegal header value b'Bearer {KEY}\\n'"),
        UnicodeEncodeError("ascii", KEY, 20, 21, "ordinal not in range(128)"),
    ],
)
def test_a_header_http_cannot_carry_is_a_configuration_error_that_never_quotes_it(
    failure: Exception, sleeps: list[float]
) -> None:
    """httpx's error quotes the header whole: reported as a connection error, it printed the key."""
    api = FakeAPI(failure)
    with _client(api) as client, pytest.raises(HokusaiConfigurationError) as caught:
        client.request("GET", "/api/v1/auth/whoami")
    assert str(caught.value).startswith(
        "The request to api.test was not sent: a credential or other header holds a character HTTP headers cannot "
        "carry (a line break, a NUL or a non-ASCII character); it is not shown, as it may be a secret."
    )
    assert KEY[:12] not in str(caught.value) and caught.value.__cause__ is failure
    assert len(api.requests) == 1 and sleeps == []  # nothing was sent, so nothing to retry
