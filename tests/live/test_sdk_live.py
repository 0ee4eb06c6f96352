"""Every public SDK method against the live platform (real gateway, real embedded MLflow, real permissions).

In-process tests get a private HOME/HOKUSAI_HOME and no Hokusai or MLflow settings (the SDK writes MLflow variables
into os.environ, which is its job); the quickstart and the design-note snippets run in fresh interpreters with only
HOKUSAI_API_KEY, HOKUSAI_API_URL and a temporary HOME/HOKUSAI_HOME.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hokusai import (
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConflictError,
    HokusaiNotFoundError,
    HokusaiPermissionError,
    HokusaiValidationError,
    ModelRegistry,
    TokenizedModel,
    _client,
    config,
    setup,
)
from hokusai._outbox import read_entries
from hokusai._paths import outbox_path
from hokusai._sync import SyncResult, sync_outbox
from hokusai.config import get_mlflow_auth_status, setup_mlflow_auth
from hokusai.server.runner import free_loopback_port
from hokusai.validation import key_prefix
from tests.support.platform import LivePlatform
from tests.support.sdk_live import (
    ACCURACY,
    QUICKSTART,
    LoggedRun,
    User,
    hokusai_cli,
    log_run,
    minimal_env,
    new_user,
    registered_model,
    revoke,
    run_script,
    scrubbed_environ,
    token_holder,
    unique,
)

pytestmark = pytest.mark.live

_ENV_PREFIXES = ("HOKUSAI_", "MLFLOW_TRACKING_")


def refused_argument_fix(key: str) -> str:
    return f"the key {key_prefix(key)}… was passed as an argument: pass a valid key"


UNKNOWN_KEY_MESSAGE = (
    "This API key is not known to this server. Check the key sent (HOKUSAI_API_KEY, MLFLOW_TRACKING_TOKEN or the "
    "saved login)."
)
REVOKED_KEY_MESSAGE = (
    "This API key was revoked. Create a new one with another valid key of yours (`hokusai keys create`), or ask an "
    "admin for one."
)
UNKNOWN_KEY = "hk_live_" + "Z" * 40


# --- fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private HOME and HOKUSAI_HOME, no Hokusai or MLflow settings, and no real backoff sleeps."""
    for name in [name for name in os.environ if name.startswith(_ENV_PREFIXES)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / "hokusai"))
    monkeypatch.setattr(config, "_OWN_ENV", {})
    monkeypatch.setattr(_client, "_sleep", lambda _seconds: None)
    yield tmp_path / "hokusai"
    for name in [name for name in os.environ if name.startswith(_ENV_PREFIXES)]:
        del os.environ[name]


@pytest.fixture(scope="module")
def alice(platform: LivePlatform) -> User:
    return new_user(platform, "sdk-alice")


@pytest.fixture(scope="module")
def bob(platform: LivePlatform) -> User:
    return new_user(platform, "sdk-bob")


@pytest.fixture(scope="module")
def reader(platform: LivePlatform) -> User:
    return new_user(platform, "sdk-reader", scopes="read")


@pytest.fixture(scope="module")
def run(platform: LivePlatform, alice: User) -> LoggedRun:
    return log_run(platform, alice)


@pytest.fixture
def as_alice(platform: LivePlatform, alice: User, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    """A registry configured the documented way: HOKUSAI_API_KEY and HOKUSAI_API_URL."""
    monkeypatch.setenv("HOKUSAI_API_KEY", alice.key)
    monkeypatch.setenv("HOKUSAI_API_URL", platform.url)
    with ModelRegistry() as registry:
        yield registry


def _register(
    registry: ModelRegistry, run: LoggedRun, model_name: str, token_id: str, artifact: str = "model"
) -> TokenizedModel:
    return registry.register_tokenized_model(
        model_uri=f"runs:/{run.run_id}/{artifact}",
        model_name=model_name,
        token_id=token_id,
        metric_name="accuracy",
        baseline_value=ACCURACY,
    )


# --- setup and MLflow auth ---------------------------------------------------------------------------------------


def test_setup_points_mlflow_at_the_platform_and_validates(platform: LivePlatform, alice: User) -> None:
    os.environ["HOKUSAI_API_URL"] = platform.url

    configured = setup(api_key=alice.key)
    validated = setup_mlflow_auth(validate=True, api_key=alice.key)
    status = get_mlflow_auth_status(api_key=alice.key)

    assert (configured.tracking_uri, configured.tracking_uri_source) == (platform.tracking_uri, "hokusai-default")
    assert (configured.credential_kind, configured.key_prefix, configured.mode) == ("bearer", alice.key[:12], "remote")
    assert validated == configured
    assert os.environ["MLFLOW_TRACKING_URI"] == platform.tracking_uri
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == alice.key
    assert {name: status[name] for name in ("reachable", "key_accepted", "mlflow_accepted", "owner", "scopes")} == {
        "reachable": True,
        "key_accepted": True,
        "mlflow_accepted": True,
        "owner": alice.owner,
        "scopes": ["read", "write"],
    }
    assert (status["api_url"], status["problems"], status["outbox_pending"]) == (platform.url, [], 0)


def test_setup_validation_rejects_an_unknown_key_with_the_exact_message(platform: LivePlatform) -> None:
    os.environ["HOKUSAI_API_URL"] = platform.url

    with pytest.raises(HokusaiAuthError) as caught:
        setup_mlflow_auth(validate=True, api_key=UNKNOWN_KEY)
    status = get_mlflow_auth_status(api_key=UNKNOWN_KEY)

    error = caught.value
    assert error.request_id
    assert str(error) == (
        f"401 UNAUTHENTICATED from hokusai-api (Request ID: {error.request_id}): {UNKNOWN_KEY_MESSAGE} "
        f"(HINT: {refused_argument_fix(UNKNOWN_KEY)})"
    )
    assert (status["reachable"], status["key_accepted"], status["mlflow_accepted"]) == (True, False, None)
    assert status["problems"] == [
        {
            "problem": f"The API rejected the key {UNKNOWN_KEY[:12]}…: {UNKNOWN_KEY_MESSAGE}",
            "fix": refused_argument_fix(UNKNOWN_KEY),
        }
    ]


# --- the registry ----------------------------------------------------------------------------------------------


def test_registry_from_the_environment_and_from_an_argument(
    platform: LivePlatform, alice: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", alice.key)
    monkeypatch.setenv("HOKUSAI_API_URL", platform.url)

    with ModelRegistry() as from_env, ModelRegistry(api_key=bob.key) as from_argument:
        identities = from_env.whoami(), from_argument.whoami()

    assert [identity["owner"] for identity in identities] == [alice.owner, bob.owner]
    assert identities[0]["key_prefix"] == alice.key[:12] and identities[0]["scopes"] == ["read", "write"]
    assert identities[0]["expires_at"] is None and identities[0]["key_id"]
    # The last registry built decides the credential MLflow sends in this process.
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == bob.key
    assert "api_key='**********'" in repr(from_env) and alice.key not in repr(from_env)


def test_register_get_and_list_tokenized_models(as_alice: ModelRegistry, run: LoggedRun) -> None:
    model_name, token = unique("sdk-model"), unique("sdk-tok")

    first = _register(as_alice, run, model_name, token)
    second = _register(as_alice, run, model_name, token, artifact="challenger")
    other = _register(as_alice, run, unique("sdk-other"), unique("sdk-other"))
    latest = as_alice.get_tokenized_model(model_name)
    by_number = as_alice.get_tokenized_model(model_name, 1)
    by_string = as_alice.get_tokenized_model(model_name, "2")
    everything = as_alice.list_tokenized_models()
    for_token = as_alice.list_tokenized_models(token_id=token.lower())
    with pytest.raises(HokusaiValidationError) as version_zero:
        as_alice.get_tokenized_model(model_name, 0)  # the server's rule, applied before sending
    with pytest.raises(HokusaiNotFoundError) as version_seven:
        as_alice.get_tokenized_model(model_name, 7)

    assert (first.created, first.version, second.created, second.version) == (True, "1", True, "2")
    assert (first.token_id, first.metric_name, first.baseline_value) == (token.upper(), "accuracy", ACCURACY)
    assert (first.run_id, first.source, first.model_uri) == (
        run.run_id,
        f"models:/{run.model_id}",
        f"models:/{model_name}/1",
    )
    assert second.source == f"models:/{run.challenger_id}" and first.warnings == ()
    assert latest == by_string == second.model_copy(update={"created": False, "warnings": ()})
    assert by_number == first.model_copy(update={"created": False})
    assert [(model.model_name, model.version) for model in for_token] == [(model_name, "1"), (model_name, "2")]
    seen = {(model.model_name, model.version) for model in everything}
    assert seen >= {(model_name, "1"), (model_name, "2"), (other.model_name, "1")}
    assert str(version_zero.value) == "version: must be a positive version number or 'latest'"
    assert (version_zero.value.field, version_zero.value.layer) == ("version", "sdk")
    assert (version_seven.value.status, version_seven.value.layer) == (404, "mlflow")


def test_strict_mode_refusal_is_the_validation_error_the_docstring_promises(
    as_alice: ModelRegistry, run: LoggedRun
) -> None:
    # Only the server reads the run's metric; its 400 must be caught by the same `except` as a local check.
    with pytest.raises(HokusaiValidationError) as refused:
        as_alice.register_tokenized_model(
            model_uri=f"runs:/{run.run_id}/model",
            model_name=unique("sdk-strict"),
            token_id=unique("sdk-strict"),
            metric_name="accuracy",
            baseline_value=0.5,
            strict=True,
        )
    assert isinstance(refused.value, HokusaiAPIError)
    assert (refused.value.status, refused.value.field) == (400, "baseline_value")
    assert "strict mode" in refused.value.problem


def test_a_repeat_and_a_retried_registration_create_no_second_version(
    platform: LivePlatform, as_alice: ModelRegistry, alice: User, run: LoggedRun
) -> None:
    model_name, token = unique("sdk-repeat"), unique("sdk-rep")
    lossy = _LoseFirstPostResponse()

    with ModelRegistry(api_key=alice.key, api_url=platform.url, transport=lossy) as flaky:
        retried = _register(flaky, run, model_name, token)
    repeated = _register(as_alice, run, model_name, token)

    # The server registered the first POST; its answer was lost, and the retry (same key) found that version.
    assert lossy.idempotency_keys[0] == lossy.idempotency_keys[1] and len(lossy.idempotency_keys) == 2
    assert (retried.version, retried.created, repeated.version, repeated.created) == ("1", False, "1", False)
    assert [model.version for model in as_alice.list_tokenized_models(token)] == ["1"]
    versions = registered_model(platform, alice.key, model_name)["model_versions"]
    assert [version["version"] for version in versions] == ["1"]


def test_register_baseline_via_api(as_alice: ModelRegistry, alice: User, run: LoggedRun) -> None:
    model_type = unique("sdk-clf")

    baseline = as_alice.register_baseline_via_api(
        model_type=model_type, mlflow_run_id=run.run_id, metadata={"key": "value", "rows": 4}
    )

    assert (baseline.model_name, baseline.version) == (f"hokusai-baseline-{model_type}", "1")
    assert (baseline.model_type, baseline.run_id) == (model_type, run.run_id)
    assert baseline.model_uri == f"models:/hokusai-baseline-{model_type}/1"
    assert baseline.tags == {
        "is_baseline": "true",
        "model_type": model_type,
        "mlflow_run_id": run.run_id,
        "registered_by": alice.owner,
        "metrics": json.dumps({"accuracy": ACCURACY}, separators=(",", ":")),
        "metadata": json.dumps({"key": "value", "rows": 4}, separators=(",", ":"), sort_keys=True),
    }


# --- the exact 401, 403 and 409 messages ---------------------------------------------------------------------------


def test_a_revoked_or_unknown_key_is_a_401_with_the_exact_message(
    platform: LivePlatform, run: LoggedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    revoked = new_user(platform, "sdk-revoked")
    revoke(platform, revoked.key)
    monkeypatch.setenv("HOKUSAI_API_URL", platform.url)

    for key, message in ((revoked.key, REVOKED_KEY_MESSAGE), (UNKNOWN_KEY, UNKNOWN_KEY_MESSAGE)):
        with ModelRegistry(api_key=key) as registry:
            with pytest.raises(HokusaiAuthError) as on_whoami:
                registry.whoami()
            with pytest.raises(HokusaiAuthError) as on_register:
                _register(registry, run, unique("sdk-401"), unique("sdk-401"))
        for error in (on_whoami.value, on_register.value):
            assert (error.status, error.error_code, error.layer) == (401, "UNAUTHENTICATED", "hokusai-api")
            assert (
                str(error) == f"401 UNAUTHENTICATED from hokusai-api (Request ID: {error.request_id}): {message} "
                f"(HINT: {refused_argument_fix(key)})"
            )


def test_a_read_only_key_registering_is_a_403_naming_the_write_scope(
    platform: LivePlatform, reader: User, run: LoggedRun
) -> None:
    with ModelRegistry(api_key=reader.key, api_url=platform.url) as registry:
        with pytest.raises(HokusaiPermissionError) as caught:
            _register(registry, run, unique("sdk-ro"), unique("sdk-ro"))
        can_read = registry.list_tokenized_models(token_id=unique("sdk-none"))

    error = caught.value
    assert (error.status, error.error_code, error.layer) == (403, "PERMISSION_DENIED", "hokusai-api")
    assert str(error) == (
        f"403 PERMISSION_DENIED from hokusai-api (Request ID: {error.request_id}): This key lacks the 'write' scope "
        "needed for POST /api/v1/models/tokenized. Use a key with the 'write' scope: a key of yours that has it can "
        "create one (`hokusai keys create --scopes read,write`), or ask an admin for one."
    )
    assert can_read == []


def test_mlflow_refusing_another_users_model_is_a_403_from_mlflow(
    platform: LivePlatform, as_alice: ModelRegistry, bob: User, run: LoggedRun
) -> None:
    model_name = unique("sdk-alices")
    _register(as_alice, run, model_name, unique("sdk-a"))

    with (
        ModelRegistry(api_key=bob.key, api_url=platform.url) as as_bob,
        pytest.raises(HokusaiPermissionError) as caught,
    ):
        _register(as_bob, run, model_name, unique("sdk-b"))

    error = caught.value
    assert (error.status, error.error_code, error.layer) == (403, "PERMISSION_DENIED", "mlflow")
    assert str(error) == (
        f"403 PERMISSION_DENIED from mlflow (Request ID: {error.request_id}): MLflow denied permission to create a "
        f"version of model '{model_name}' (Permission denied). Ask an admin for access. (HINT: MLflow refused this "
        "resource: it belongs to another user, or (where the message says so) may not exist; check its name or id, "
        "use your own experiment/model, or ask an admin for access (grants need an admin key))"
    )


def test_a_claimed_token_is_a_409_naming_the_token_and_its_model(
    platform: LivePlatform, as_alice: ModelRegistry, bob: User, run: LoggedRun
) -> None:
    model_name, token = unique("sdk-holder"), unique("sdk-claimed")
    _register(as_alice, run, model_name, token)

    with (
        ModelRegistry(api_key=bob.key, api_url=platform.url) as as_bob,
        pytest.raises(HokusaiConflictError) as by_bob,
    ):
        _register(as_bob, run, unique("sdk-thief"), token.lower())
    with pytest.raises(HokusaiConflictError) as by_owner:
        _register(as_alice, run, unique("sdk-second"), token)

    claimed = token.upper()
    told = {
        by_bob.value: f"model '{model_name}'. A token belongs to one model: choose another token id, or ask an admin "
        "to transfer this one.",
        by_owner.value: f"your model '{model_name}'. A token belongs to one model: register new versions under "
        f"'{model_name}', or choose another token id.",
    }
    for error, holder_and_fix in told.items():
        assert (error.status, error.error_code, error.layer) == (409, "TOKEN_ALREADY_CLAIMED", "hokusai-api")
        assert str(error) == (
            f"409 TOKEN_ALREADY_CLAIMED from hokusai-api (Request ID: {error.request_id}): Token '{claimed}' is "
            f"already claimed by {holder_and_fix}"
        )
    assert token_holder(platform, claimed)["model_name"] == model_name


def test_get_token_says_who_holds_a_token_and_whether_its_model_still_carries_it(
    platform: LivePlatform, as_alice: ModelRegistry, alice: User, bob: User, run: LoggedRun
) -> None:
    model_name, token = unique("sdk-get-token"), unique("sdk-get-token")
    _register(as_alice, run, model_name, token)
    with ModelRegistry(api_key=bob.key, api_url=platform.url) as as_bob:
        seen_by_bob = as_bob.get_token(token.lower())
        with pytest.raises(HokusaiNotFoundError) as free:
            as_bob.get_token(unique("sdk-free"))
    own = as_alice.get_token(token)
    with platform.client(alice.key) as mlflow_as_alice:
        deleting = "/api/mlflow/api/2.0/mlflow/registered-models/delete"
        assert mlflow_as_alice.request("DELETE", deleting, json={"name": model_name}).status_code == 200
    gone = as_alice.get_token(token)

    assert (own.token_id, own.model_name, own.owner, own.model_carries_token) == (
        token.upper(),
        model_name,
        alice.owner,
        True,
    )
    assert (seen_by_bob.model_name, seen_by_bob.owner, seen_by_bob.model_carries_token) == (model_name, None, None)
    assert (gone.model_name, gone.model_carries_token) == (model_name, False)
    assert (free.value.status, free.value.error_code) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert "claim it by registering a model with it" in str(free.value)


# --- offline, then sync --------------------------------------------------------------------------------------------


def test_offline_registration_lands_locally_and_sync_pushes_it_once(
    platform: LivePlatform,
    alice: User,
    run: LoggedRun,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = f"http://127.0.0.1:{free_loopback_port()}"
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    monkeypatch.setenv("HOKUSAI_API_KEY", alice.key)
    monkeypatch.setenv("HOKUSAI_API_URL", closed)
    model_name, token = unique("sdk-offline"), unique("sdk-off")

    with caplog.at_level(logging.WARNING, logger="hokusai"), ModelRegistry() as offline:
        with pytest.warns(RuntimeWarning, match=r"Hokusai API unavailable; HOKUSAI_OPTIONAL_MLFLOW=true") as warned:
            local = _register(offline, run, model_name, token)
        local_copy = offline.local.get_tokenized_model(model_name)

    [loud] = [str(warning.message) for warning in warned if warning.category is RuntimeWarning]
    assert loud.startswith(
        f"Hokusai API unavailable; HOKUSAI_OPTIONAL_MLFLOW=true, so registering locally: Could not connect to "
        f"127.0.0.1:{closed.rsplit(':', 1)[1]} (ConnectError: "
    )
    assert [record.getMessage() for record in caplog.records if record.name.startswith("hokusai")] == [loud]
    assert (local.created, local.version, local.token_id, local.source) == (
        True,
        "1",
        token.upper(),
        f"runs:/{run.run_id}/model",
    )
    assert local.warnings[0].startswith("registered in the local store only, because the API failed (Could not connect")
    assert local.warnings[0].endswith("; run `hokusai sync`")
    assert local_copy.model_name == model_name and local_copy.tags["hokusai_token_id"] == token.upper()
    [entry] = read_entries()
    assert (entry.request["model_name"], entry.request["model_uri"], entry.local_version) == (
        model_name, f"runs:/{run.run_id}/model", "1",
    )  # fmt: skip
    assert stat.S_IMODE(outbox_path().stat().st_mode) == 0o600
    saved_line = outbox_path().read_text()
    status = get_mlflow_auth_status()
    assert (status["mode"], status["outbox_pending"], status["reachable"]) == ("optional-fallback-active", 1, False)
    assert status["problems"][0] == {
        "problem": "1 local registration(s) wait in the outbox",
        "fix": "run `hokusai sync`",
    }

    # The API is back: `hokusai sync` pushes the entry with its original idempotency key.
    env = {**scrubbed_environ(), "HOME": os.environ["HOME"], "HOKUSAI_HOME": str(isolated)}
    env.update(HOKUSAI_API_KEY=alice.key, HOKUSAI_API_URL=platform.url)
    pushed = hokusai_cli(env, "sync")
    again = hokusai_cli(env, "sync")

    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    [row] = [line for line in pushed.stdout.splitlines() if model_name in line]
    queued = entry.queued_at.replace("T", " ").removesuffix("+00:00")
    assert [cell.strip() for cell in row.strip()[1:-1].split("│")] == [
        model_name, token.upper(), queued, "pushed", "1 → 1", "",
    ]  # fmt: skip
    assert (again.returncode, again.stdout.strip()) == (0, "Nothing to sync: the outbox is empty."), again.stderr
    assert not outbox_path().exists()
    monkeypatch.setenv("HOKUSAI_API_URL", platform.url)
    with ModelRegistry() as online:
        on_platform = online.get_tokenized_model(model_name)
        # A sync that died before removing its line replays it: the server answers with the same version.
        outbox_path().write_text(saved_line)
        replayed = sync_outbox(online)
        nothing_left = sync_outbox(online)
    assert (on_platform.version, on_platform.run_id, on_platform.source) == ("1", run.run_id, f"models:/{run.model_id}")
    assert replayed == [
        SyncResult(model_name, token.upper(), "already-present", version="1", queued_at=entry.queued_at,
                   local_version="1")
    ]  # fmt: skip
    assert nothing_left == [] and read_entries() == []
    assert token_holder(platform, token.upper())["owner"] == alice.owner


def test_a_401_or_403_never_falls_back_to_the_local_store(
    platform: LivePlatform, reader: User, run: LoggedRun, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revoked = new_user(platform, "sdk-gone")
    revoke(platform, revoked.key)
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    monkeypatch.setenv("HOKUSAI_API_URL", platform.url)

    with ModelRegistry(api_key=revoked.key) as gone, ModelRegistry(api_key=reader.key) as read_only:
        with pytest.raises(HokusaiAuthError):
            _register(gone, run, unique("sdk-nf"), unique("sdk-nf"))
        with pytest.raises(HokusaiPermissionError):
            _register(read_only, run, unique("sdk-nf"), unique("sdk-nf"))

    assert read_entries() == [] and not outbox_path().exists()
    assert not (isolated / "mock").exists(), "the local store was never opened"


# --- the quickstart and the design note, in fresh interpreters ------------------------------------------------------


@pytest.mark.parametrize("user_name", ["sdk-quick", "sdk-quick-second"])
def test_quickstart_runs_against_the_live_platform(platform: LivePlatform, user_name: str, tmp_path: Path) -> None:
    # Each user runs it on the same platform: nothing in it may belong to whoever ran it first.
    user = new_user(platform, user_name)
    model_name, token = unique("sdk-quickstart"), unique("sdk-qs")
    env = minimal_env(tmp_path / "q", HOKUSAI_API_KEY=user.key, HOKUSAI_API_URL=platform.url)

    result = run_script(QUICKSTART, env, tmp_path, model_name, token)

    assert result.returncode == 0, result.stderr[-3000:]
    # MLflow prints "View run ..." lines of its own; the quickstart's report starts at "Registered".
    lines = result.stdout.splitlines()
    lines = lines[next(number for number, line in enumerate(lines) if line.startswith("Registered")) :]
    assert lines[0] == f"Registered {model_name} version 1 for token {token.upper()}"
    assert lines[2].startswith(f"  model uri: models:/{model_name}/1 (source models:/m-")
    with ModelRegistry(api_key=user.key, api_url=platform.url) as registry:
        registered = registry.get_tokenized_model(model_name)
    assert (registered.version, registered.token_id, registered.metric_name) == ("1", token.upper(), "accuracy")
    assert lines[1] == f"  accuracy baseline: {registered.baseline_value:.4f}"
    assert not (tmp_path / "mlruns").exists(), "artifacts went to the platform, not to a local folder"


def test_quickstart_runs_in_mock_mode_without_network(tmp_path: Path) -> None:
    env = minimal_env(tmp_path / "m", HOKUSAI_MOCK_MODE="true")

    first = run_script(QUICKSTART, env, tmp_path, offline=True)
    second = run_script(QUICKSTART, env, tmp_path, offline=True)

    for number, result in enumerate((first, second), start=1):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "NETWORK ATTEMPT" not in result.stderr
        assert (
            result.stdout.splitlines()[0] == f"Registered quickstart-classifier version {number} for token QUICKSTART"
        )
    assert (tmp_path / "m" / ".hokusai" / "mock" / "mlflow.db").is_file()


# The design note, verbatim; `import os` is the only line added (the note uses os.environ without importing it).
DESIGN_NOTE = textwrap.dedent(
    """
    from hokusai import setup, ModelRegistry
    from hokusai.config import setup_mlflow_auth, get_mlflow_auth_status
    setup(api_key=os.environ["HOKUSAI_API_KEY"])
    setup_mlflow_auth(validate=True)
    print("MLFlow auth status:", get_mlflow_auth_status())
    registry = ModelRegistry()                      # or ModelRegistry(api_key="...")
    registry.register_tokenized_model(model_uri="runs:/<run id>/model", model_name="your-model",
        token_id="your-token", metric_name="accuracy", baseline_value=0.93)
    registry.register_baseline_via_api(model_type="...", mlflow_run_id="...", metadata={"key": "value"})
    """
)


def _design_note(run_id: str, model_name: str, token: str, model_type: str, api_key: str | None = None) -> str:
    code = "import os\n" + DESIGN_NOTE
    if api_key is not None:
        code = code.replace('registry = ModelRegistry()                      # or ModelRegistry(api_key="...")',
                            f'registry = ModelRegistry(api_key="{api_key}")')  # fmt: skip
    code = (
        code.replace("<run id>", run_id)
        .replace('"your-model"', f'"{model_name}"')
        .replace('"your-token"', f'"{token}"')
        .replace('model_type="..."', f'model_type="{model_type}"')
        .replace('mlflow_run_id="..."', f'mlflow_run_id="{run_id}"')
    )
    # Every placeholder was substituted, and nothing else changed.
    assert not any(mark in code for mark in ("<run id>", '_type="..."', '_id="..."', "your-model", "your-token")), code
    assert (f'ModelRegistry(api_key="{api_key}")' in code) is (api_key is not None)
    return code


@pytest.mark.parametrize("variant", ["remote", "api_key_argument", "optional"])
def test_design_note_snippet_runs_unchanged_against_the_platform(
    platform: LivePlatform, alice: User, bob: User, run: LoggedRun, tmp_path: Path, variant: str
) -> None:
    model_name, token, model_type = unique("sdk-note"), unique("sdk-note"), unique("sdk-note-type")
    registrant = bob if variant == "api_key_argument" else alice
    script = tmp_path / "note.py"
    script.write_text(
        _design_note(run.run_id, model_name, token, model_type, bob.key if variant == "api_key_argument" else None)
    )
    env = minimal_env(tmp_path / "h", HOKUSAI_API_KEY=alice.key, HOKUSAI_API_URL=platform.url)
    if variant == "optional":
        env["HOKUSAI_OPTIONAL_MLFLOW"] = "true"

    result = run_script(script, env, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("MLFlow auth status: {'mode': ")
    assert "'key_accepted': True, 'mlflow_accepted': True" in result.stdout and "'problems': []" in result.stdout
    assert f"'owner': '{alice.owner}'" in result.stdout and alice.key not in result.stdout
    holder = token_holder(platform, token.upper())
    assert (holder["model_name"], holder["owner"]) == (model_name, registrant.owner)
    [version] = registered_model(platform, registrant.key, model_name)["model_versions"]
    tags = {tag["key"]: tag["value"] for tag in version["tags"]}
    assert (tags["hokusai_token_id"], tags["benchmark_value"], tags["mlflow_run_id"]) == (
        token.upper(),
        "0.93",
        run.run_id,
    )
    [baseline] = registered_model(platform, registrant.key, f"hokusai-baseline-{model_type}")["model_versions"]
    baseline_tags = {tag["key"]: tag["value"] for tag in baseline["tags"]}
    assert (baseline_tags["metadata"], baseline_tags["mlflow_run_id"]) == ('{"key":"value"}', run.run_id)
    assert not (tmp_path / "h" / ".hokusai" / "outbox.jsonl").exists()


def test_design_note_snippet_runs_unchanged_in_mock_mode(
    platform: LivePlatform, alice: User, run: LoggedRun, tmp_path: Path
) -> None:
    model_name, token, model_type = unique("sdk-mock"), unique("sdk-mock"), unique("sdk-mock-type")
    script = tmp_path / "note.py"
    script.write_text(_design_note(run.run_id, model_name, token, model_type))
    env = minimal_env(tmp_path / "h", HOKUSAI_API_KEY=alice.key, HOKUSAI_API_URL=platform.url, HOKUSAI_MOCK_MODE="true")

    result = run_script(script, env, tmp_path, offline=True)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "NETWORK ATTEMPT" not in result.stderr
    assert result.stdout.startswith("MLFlow auth status: {'mode': 'mock'")
    with platform.client(platform.admin_key) as admin:
        assert admin.get(f"/api/v1/tokens/{token}").status_code == 404, "mock mode never reached the platform"
    env["HOKUSAI_MOCK_MODE"] = "true"
    listed = hokusai_cli({**scrubbed_environ(), **env}, "models", "list", "--token-id", token)
    assert listed.returncode == 0, listed.stderr
    assert model_name in listed.stdout and token.upper() in listed.stdout


class _LoseFirstPostResponse(httpx.BaseTransport):
    """A real transport that delivers the first POST to the server, then loses its answer (a dropped connection)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.idempotency_keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method != "POST":
            return response
        self.idempotency_keys.append(request.headers["Idempotency-Key"])
        if len(self.idempotency_keys) == 1:
            response.read()
            response.close()
            assert response.status_code == 201, "the server did register the first attempt"
            raise httpx.RemoteProtocolError("connection dropped before the answer arrived", request=request)
        return response

    def close(self) -> None:
        self._inner.close()
