from __future__ import annotations

import json
import logging
import stat
import uuid
import warnings
from pathlib import Path

import httpx
import pytest

from hokusai import ModelRegistry, TokenizedModel
from hokusai._outbox import read_entries
from hokusai._paths import outbox_path
from hokusai.errors import (
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConflictError,
    HokusaiConnectionError,
    HokusaiPermissionError,
    HokusaiValidationError,
)
from hokusai.validation import token_already_claimed

from .conftest import KEY, FakeAPI, error

API = "http://api.test"
RUN_ID = "0123456789abcdef0123456789abcdef"


def _model(**overrides: object) -> dict[str, object]:
    return {
        "model_name": "churn",
        "version": "1",
        "token_id": "CHURN",
        "metric_name": "accuracy",
        "baseline_value": 0.91,
        "run_id": RUN_ID,
        "model_uri": "models:/churn/1",
        "source": f"runs:/{RUN_ID}/model",
        "tags": {"hokusai_token_id": "CHURN"},
        "warnings": [],
        "created": True,
    } | overrides


def _registry(api: FakeAPI) -> ModelRegistry:
    return ModelRegistry(api_key=KEY, api_url=API, transport=api.transport)


def _register(registry: ModelRegistry, **overrides: object) -> TokenizedModel:
    arguments: dict[str, object] = {
        "model_uri": f"runs:/{RUN_ID}/model",
        "model_name": "churn",
        "token_id": "churn",
        "metric_name": "accuracy",
        "baseline_value": 0.91,
    } | overrides
    return registry.register_tokenized_model(**arguments)  # type: ignore[arg-type]


def test_the_constructor_makes_no_request_and_hides_the_key() -> None:
    api = FakeAPI()
    registry = _registry(api)
    assert api.requests == []
    assert repr(registry) == "ModelRegistry(mode='remote', url='http://api.test', api_key='**********')"


def test_no_key_fails_early_with_a_hint() -> None:
    with pytest.raises(HokusaiConfigurationError, match="No Hokusai API key provided"):
        ModelRegistry(api_url=API)


def test_register_posts_the_validated_request() -> None:
    api = FakeAPI(httpx.Response(201, json=_model()))
    with _registry(api) as registry:
        model = _register(registry, tags={"team": "growth", "n": 3}, eval_spec="spec-1")
    assert model == TokenizedModel.model_validate(_model())
    (request,) = api.requests
    assert (request.method, str(request.url)) == ("POST", "http://api.test/api/v1/models/tokenized")
    uuid.UUID(request.headers["Idempotency-Key"])
    assert json.loads(request.content) == {
        "model_uri": f"runs:/{RUN_ID}/model",
        "model_name": "churn",
        "token_id": "CHURN",
        "metric_name": "accuracy",
        "baseline_value": 0.91,
        "tags": {"team": "growth", "n": "3"},
        "description": None,
        "eval_spec": "spec-1",
        "scorer_ref": None,
        "primary_metric": None,
        "benchmark_spec_id": None,
        "strict": False,
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"token_id": "-bad"}, "token_id"),
        ({"baseline_value": float("nan")}, "baseline_value"),
        ({"baseline_value": True}, "baseline_value"),
        ({"model_uri": "runs:/"}, "model_uri"),
        ({"metric_name": "acc!"}, "metric_name"),
        ({"tags": {"hokusai_token_id": "X"}}, "tags"),
        ({"scorer_ref": ""}, "scorer_ref"),
        ({"eval_spec": " spec-1"}, "eval_spec"),  # padding is refused, not trimmed: what is stored is what was sent
        ({"strict": "yes"}, "strict"),
        ({"strict": None}, "strict"),
        ({"strict": 1}, "strict"),
    ],
)
def test_bad_input_is_rejected_before_sending(overrides: dict[str, object], field: str) -> None:
    api = FakeAPI()
    with pytest.raises(HokusaiValidationError) as caught:
        _register(_registry(api), **overrides)
    assert caught.value.field == field
    assert api.requests == []


def test_a_retried_registration_keeps_its_idempotency_key(sleeps: list[float]) -> None:
    api = FakeAPI(
        httpx.ConnectError("refused"),
        error(503, "TEMPORARILY_UNAVAILABLE", "MLflow is restarting."),
        httpx.Response(200, json=_model(created=False)),
    )
    model = _register(_registry(api))
    assert model.created is False
    keys = {request.headers["Idempotency-Key"] for request in api.requests}
    assert len(api.requests) == 3 and len(keys) == 1
    assert len(sleeps) == 2


def test_each_registration_gets_its_own_key() -> None:
    api = FakeAPI(httpx.Response(201, json=_model()), httpx.Response(201, json=_model(version="2")))
    registry = _registry(api)
    _register(registry)
    _register(registry)
    assert api.requests[0].headers["Idempotency-Key"] != api.requests[1].headers["Idempotency-Key"]


def test_a_claimed_token_is_the_servers_message_alone() -> None:
    message = token_already_claimed("CHURN", "other", yours=False)
    with pytest.raises(HokusaiConflictError) as caught:
        _register(_registry(FakeAPI(error(409, "TOKEN_ALREADY_CLAIMED", message))))
    # The message names the token, the model and the fix: a hint would only repeat it.
    assert str(caught.value) == f"409 TOKEN_ALREADY_CLAIMED from hokusai-api: {message}"
    assert message.endswith("choose another token id, or ask an admin to transfer this one.")


def test_get_quotes_the_name_and_defaults_to_latest() -> None:
    api = FakeAPI(httpx.Response(200, json=_model()), httpx.Response(200, json=_model()))
    registry = _registry(api)
    registry.get_tokenized_model("team/churn v2")
    registry.get_tokenized_model("churn", 3)
    assert api.requests[0].url.raw_path == b"/api/v1/models/tokenized/team%2Fchurn%20v2/versions/latest"
    assert api.requests[1].url.path == "/api/v1/models/tokenized/churn/versions/3"


@pytest.mark.parametrize("version", [0, -1, "0", "abc", "", "1.0", True, 1.0, 2.5, b"1"])
def test_a_version_the_server_would_refuse_is_refused_before_sending(version: object) -> None:
    """Version 0 is still never read as "no version" (the latest): it is refused, here rather than by the server."""
    api = FakeAPI()
    with pytest.raises(HokusaiValidationError) as caught:
        _registry(api).get_tokenized_model("churn", version)  # type: ignore[arg-type]
    assert caught.value.field == "version" and caught.value.layer == "sdk"
    assert caught.value.problem.startswith("must be a positive version number or 'latest'")
    assert api.requests == []


def test_latest_in_any_case_is_the_latest_version() -> None:
    api = FakeAPI(httpx.Response(200, json=_model()), httpx.Response(200, json=_model()))
    registry = _registry(api)
    registry.get_tokenized_model("churn", "LATEST")
    registry.get_tokenized_model("churn", "12")
    assert [request.url.path.rsplit("/", 1)[1] for request in api.requests] == ["latest", "12"]


@pytest.mark.parametrize(("artifact_path", "says"), [("", "must not be empty"), ("m" * 462, "must be at most 461")])
def test_an_artifact_path_the_server_would_refuse_is_refused_before_sending(artifact_path: str, says: str) -> None:
    api = FakeAPI()
    with pytest.raises(HokusaiValidationError) as caught:
        _registry(api).register_baseline_via_api("clf", RUN_ID, artifact_path=artifact_path)
    assert caught.value.field == "artifact_path" and caught.value.problem.startswith(says)
    assert api.requests == []


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"api_key": 5}, "api_key must be a string (str), not int."),
        ({"api_key": b"hk_live_x"}, "api_key must be a string (str), not bytes: decode it first (api_key.decode())."),
        ({"api_key": KEY, "api_url": 8741}, "api_url must be a string (str), not int."),
        ({"api_key": KEY, "api_url": ""}, "api_url was given empty."),
        ({"api_key": KEY, "tracking_uri": 3}, "tracking_uri must be a string (str), not int."),
        ({"api_key": KEY, "api_url": "http://127.0.0.1:99999"}, "The API URL 'http://127.0.0.1:99999' (from argument)"),
        ({"api_key": "garbage"}, "The API key is malformed"),
        ({"api_key": KEY[:20] + "\r\n" + KEY[20:]}, "The API key is malformed"),
        ({"api_key": KEY[:20] + "\x00" + KEY[20:]}, "The API key is malformed"),
    ],
)
@pytest.mark.parametrize("mode", ["remote", "mock"])
def test_the_constructor_refuses_bad_settings_by_name_without_showing_a_key(
    monkeypatch: pytest.MonkeyPatch, arguments: dict[str, object], says: str, mode: str
) -> None:
    if mode == "mock":
        monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    api = FakeAPI()
    if mode == "mock" and says == "The API key is malformed":
        # Mock mode sends the key nowhere, so its shape is not checked.
        assert ModelRegistry(**arguments, transport=api.transport).mode == "mock"  # type: ignore[arg-type]
        return
    with pytest.raises(HokusaiConfigurationError) as caught:
        ModelRegistry(**arguments, transport=api.transport)  # type: ignore[arg-type]
    assert str(caught.value).startswith(says)
    assert KEY[:12] not in str(caught.value) and "garbage" not in str(caught.value)
    assert api.requests == []


def test_list_follows_every_page() -> None:
    api = FakeAPI(
        httpx.Response(200, json={"models": [_model()], "next_page_token": "p2"}),
        httpx.Response(200, json={"models": [_model(version="2")], "next_page_token": None}),
    )
    models = _registry(api).list_tokenized_models("churn", owner="ada")
    assert [model.version for model in models] == ["1", "2"]
    first, second = (dict(request.url.params) for request in api.requests)
    assert first == {"max_results": "100", "token_id": "CHURN", "owner": "ada"}
    assert second == first | {"page_token": "p2"}


def test_a_malformed_list_is_a_typed_error() -> None:
    api = FakeAPI(httpx.Response(200, json={"models": [{"model_name": "x"}]}))
    with pytest.raises(HokusaiAPIError) as caught:
        _registry(api).list_tokenized_models()
    assert caught.value.error_code == "INVALID_RESPONSE"
    assert "a body that is not a TokenizedModel" in str(caught.value)


def test_register_baseline_via_api() -> None:
    entry = {
        "model_name": "hokusai-baseline-classification",
        "version": "4",
        "model_type": "classification",
        "run_id": RUN_ID,
        "model_uri": "models:/hokusai-baseline-classification/4",
        "tags": {"is_baseline": "true"},
    }
    api = FakeAPI(httpx.Response(201, json=entry))
    result = _registry(api).register_baseline_via_api("classification", RUN_ID, {"dataset": "v1"})
    assert (result.model_name, result.version) == ("hokusai-baseline-classification", "4")
    assert json.loads(api.requests[0].content) == {
        "model_type": "classification",
        "mlflow_run_id": RUN_ID,
        "artifact_path": "model",
        "metadata": {"dataset": "v1"},
    }
    assert result.created is True
    with pytest.raises(HokusaiValidationError):
        _registry(FakeAPI()).register_baseline_via_api("Classification!", RUN_ID)


def test_baselines_are_listed_page_by_page_for_the_type_as_stored() -> None:
    name = "hokusai-baseline-clf"
    entry = {"model_name": name, "version": "1", "model_type": "clf", "run_id": RUN_ID,
             "model_uri": f"models:/{name}/1", "tags": {"is_baseline": "true"}, "created": False}  # fmt: skip
    api = FakeAPI(
        httpx.Response(200, json={"baselines": [entry], "next_page_token": "p2"}),
        httpx.Response(200, json={"baselines": [entry | {"version": "2"}], "next_page_token": None}),
        httpx.Response(200, json={"baselines": [], "next_page_token": None}),
    )
    registry = _registry(api)

    listed = registry.list_baselines("CLF")
    everything = registry.list_baselines()

    assert [(entry.version, entry.created) for entry in listed] == [("1", False), ("2", False)]
    assert everything == []
    first, second, unfiltered = (dict(request.url.params) for request in api.requests)
    assert (first, second) == ({"max_results": "100", "model_type": "clf"}, {**first, "page_token": "p2"})
    assert unfiltered == {"max_results": "100"}
    assert api.requests[0].url.path == "/api/v1/models/baseline"
    with pytest.raises(HokusaiValidationError):
        registry.list_baselines("not a type")


def test_whoami() -> None:
    identity = {"owner": "ada", "key_id": "k1", "key_prefix": KEY[:12], "scopes": ["read"], "expires_at": None}
    api = FakeAPI(httpx.Response(200, json=identity))
    assert _registry(api).whoami() == identity
    assert api.requests[0].url.path == "/api/v1/auth/whoami"


def test_remote_mode_never_falls_back() -> None:
    refused = httpx.ConnectError("refused")
    with pytest.raises(HokusaiConnectionError):
        _register(_registry(FakeAPI(refused, refused, refused)))
    assert read_entries() == []


@pytest.mark.usefixtures("mock_store")
def test_optional_mode_registers_locally_and_queues_when_the_api_is_down(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    refused = httpx.ConnectError("refused")
    api = FakeAPI(*[refused] * 6)
    registry = _registry(api)
    with pytest.warns(RuntimeWarning, match="Hokusai API unavailable") as warned, caplog.at_level(logging.WARNING):
        first = _register(registry)
    assert (first.model_name, first.version, first.created) == ("churn", "1", True)
    assert first.warnings[0].startswith("registered in the local store only, because the API failed")
    fallback = [w for w in warned if "Hokusai API unavailable" in str(w.message)]
    assert len(fallback) == 1 and fallback[0].filename == __file__  # once, at the caller's line
    assert [record.levelno for record in caplog.records if record.name == "hokusai._registry"] == [logging.WARNING]

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        second = _register(registry, model_uri="s3://bucket/churn-v2")  # warns only once per registry
    assert second.version == "2"
    assert not [w for w in again if "Hokusai API unavailable" in str(w.message)]

    entries = read_entries()
    assert [entry.local_version for entry in entries] == ["1", "2"]
    assert entries[0].idempotency_key == api.requests[0].headers["Idempotency-Key"]
    assert entries[0].request["token_id"] == "CHURN"
    assert entries[0].key_prefix == KEY[:12]  # whose it is
    assert stat.S_IMODE(outbox_path().stat().st_mode) == 0o600


@pytest.mark.usefixtures("mock_store")
def test_optional_mode_refuses_a_models_source_at_once_instead_of_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    refused = httpx.ConnectError("refused")

    with pytest.raises(HokusaiConnectionError) as caught:
        _register(_registry(FakeAPI(refused, refused, refused)), model_uri="models:/m-0123456789abcdef")

    assert caught.value.hint is not None and "cannot be registered locally while the API is down" in caught.value.hint
    assert read_entries() == []  # nothing queued: the local store could not have made the version


@pytest.mark.usefixtures("mock_store")
def test_optional_mode_falls_back_on_5xx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    api = FakeAPI(error(500, "INTERNAL_ERROR", "boom"))
    with pytest.warns(RuntimeWarning):
        model = _register(_registry(api))
    assert model.version == "1"
    assert len(read_entries()) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(401, "UNAUTHENTICATED", "revoked"), HokusaiAuthError),
        (error(403, "PERMISSION_DENIED", "needs write"), HokusaiPermissionError),
        (error(400, "INVALID_PARAMETER_VALUE", "bad"), HokusaiAPIError),
    ],
)
def test_optional_mode_never_falls_back_on_client_errors(
    monkeypatch: pytest.MonkeyPatch, hokusai_home: Path, answer: httpx.Response, expected: type[Exception]
) -> None:
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    with pytest.raises(expected):
        _register(_registry(FakeAPI(answer)))
    assert read_entries() == []
    assert not (hokusai_home / "mock").exists()
