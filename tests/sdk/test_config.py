from __future__ import annotations

import base64
import hmac
import logging
import os
import secrets
import string
import warnings
from pathlib import Path

import httpx
import pytest

from hokusai import ModelRegistry, config
from hokusai._credentials import lookup_api_key, write_credentials
from hokusai._outbox import append_entry, new_entry
from hokusai._paths import credentials_path
from hokusai.config import get_mlflow_auth_status, setup, setup_mlflow_auth
from hokusai.errors import (
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiKeyMismatchWarning,
    HokusaiPermissionError,
)

from .conftest import KEY, FakeAPI, error

API = "http://api.test"
WHOAMI = {"owner": "ada", "key_id": "k1", "key_prefix": KEY[:12], "scopes": ["read", "write"], "expires_at": None}
# Someone else's key, made like KEY: no key-shaped literal.
OTHER_KEY = "hk_live_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def test_a_registry_made_after_setup_uses_its_key_and_url() -> None:
    setup(api_key=KEY, api_url=API)
    api = FakeAPI(httpx.Response(200, json=WHOAMI))
    with ModelRegistry(transport=api.transport) as registry:
        assert registry.whoami()["owner"] == "ada"
    assert str(api.requests[0].url) == f"{API}/api/v1/auth/whoami"
    assert api.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    # An explicit argument still wins, and the environment comes after what setup() was given.
    os.environ["HOKUSAI_API_KEY"] = "hk_live_" + "e" * 40
    assert lookup_api_key().source == "setup()"
    assert lookup_api_key("hk_live_" + "a" * 40).source == "argument"


def _mlflow_file(home: Path, text: str) -> None:
    (home / ".mlflow").mkdir()
    (home / ".mlflow" / "credentials").write_text(text)


def test_defaults_point_mlflow_at_the_api_with_the_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hokusai.config"):
        config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://api.test/api/mlflow"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == KEY
    assert (config.tracking_uri_source, config.credential_kind, config.mode) == ("hokusai-default", "bearer", "remote")
    assert config.credential_source == "the Hokusai key (argument)"
    assert config.key_prefix == KEY[:12]
    assert config.env_set == ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")
    assert KEY not in repr(config)
    assert caplog.messages == [
        "MLflow tracking URI http://api.test/api/mlflow (hokusai-default); MLflow will send bearer credentials "
        "from the Hokusai key (argument)"
    ]


def test_the_users_tracking_uri_and_token_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://api.test/api/mlflow/")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "users-own-token")
    with pytest.warns(HokusaiKeyMismatchWarning, match="MLflow calls act as a different key"):
        config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://api.test/api/mlflow/"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "users-own-token"
    assert (config.tracking_uri_source, config.credential_kind, config.credential_source) == (
        "env",
        "bearer",
        "MLFLOW_TRACKING_TOKEN",
    )
    assert config.env_set == ()


def test_username_and_password_in_env_mean_basic_and_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", KEY)
    config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert (config.credential_kind, config.credential_source) == (
        "basic",
        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD",
    )


def test_mlflow_credentials_file_means_basic(tmp_path: Path) -> None:
    _mlflow_file(tmp_path / "home", "[mlflow]\nmlflow_tracking_username = ada\nmlflow_tracking_password = 50%off\n")
    with pytest.warns(HokusaiKeyMismatchWarning, match="make the password in .* the same key"):
        config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert (config.credential_kind, config.credential_source) == ("basic", str(tmp_path / "home/.mlflow/credentials"))


def test_setup_warns_when_mlflow_would_act_as_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A README reader with the admin key for the SDK and their own for MLflow registered as the admin, unwarned."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", OTHER_KEY)
    with pytest.warns(HokusaiKeyMismatchWarning) as caught:
        setup_mlflow_auth(api_key=KEY, api_url=API)
    assert str(caught[0].message) == (
        f"MLflow calls act as a different key (prefix {OTHER_KEY[:12]}…, from MLFLOW_TRACKING_TOKEN) than the SDK "
        f"(prefix {KEY[:12]}…, from the key passed as an argument): use one key, your own, for both (an admin key "
        "is for administration, not MLflow work): set MLFLOW_TRACKING_TOKEN to the SDK's key, or unset it so "
        "hokusai.setup() sets it; or pass the SDK MLFLOW_TRACKING_TOKEN's key."
    )
    assert KEY not in str(caught[0].message) and OTHER_KEY not in str(caught[0].message)
    # The SDK's key is changed where it came from: from the environment, that variable.
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    with pytest.warns(HokusaiKeyMismatchWarning) as from_env:
        setup_mlflow_auth(api_url=API)
    assert str(from_env[0].message).endswith("or set HOKUSAI_API_KEY to MLFLOW_TRACKING_TOKEN's key.")
    monkeypatch.delenv("HOKUSAI_API_KEY")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_mlflow_auth(api_key=KEY, api_url=API)  # the same key: nothing to say


def test_a_username_alone_is_not_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow needs both for Basic; with a username only it sends the token, so the key must be supplied.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == KEY
    assert config.credential_kind == "bearer"


def test_the_key_is_never_given_to_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://other-mlflow.test")
    config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert config.credential_kind == "none"


def test_an_explicit_tracking_uri_argument_is_applied() -> None:
    config = setup(KEY, api_url=API, tracking_uri="http://api.test/api/mlflow")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://api.test/api/mlflow"
    assert config.tracking_uri_source == "argument"


def test_a_second_setup_updates_only_its_own_values() -> None:
    setup_mlflow_auth(api_key=KEY, api_url=API)
    config = setup_mlflow_auth(api_key=KEY + "2", api_url=API)
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == KEY + "2"
    assert config.tracking_uri_source == "hokusai-default"


def test_userinfo_in_the_tracking_uri_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ada:secret@api.test/api/mlflow")
    config = setup_mlflow_auth(api_key=KEY, api_url=API)
    assert config.tracking_uri == "http://***@api.test/api/mlflow"


def test_mock_mode_uses_the_local_store_and_no_token(monkeypatch: pytest.MonkeyPatch, hokusai_home: Path) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    config = setup_mlflow_auth(True, api_key=KEY, transport=FakeAPI().transport)  # validate: no request either
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{hokusai_home / 'mock' / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert (config.mode, config.credential_kind) == ("mock", "none")


def test_validate_checks_the_api_and_mlflow_with_the_credential_mlflow_sends() -> None:
    api = FakeAPI(httpx.Response(200, json=WHOAMI), httpx.Response(200, json={"experiments": []}))
    setup_mlflow_auth(True, api_key=KEY, api_url=API, transport=api.transport)
    whoami, probe = api.requests
    assert str(whoami.url) == "http://api.test/api/v1/auth/whoami"
    assert str(probe.url) == "http://api.test/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
    assert probe.headers["Authorization"] == f"Bearer {KEY}"


def test_validate_sends_basic_when_mlflow_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "anyone")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", KEY)
    api = FakeAPI(httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    setup_mlflow_auth(True, api_key=KEY, api_url=API, transport=api.transport)
    expected = base64.b64encode(f"anyone:{KEY}".encode()).decode()
    assert api.requests[1].headers["Authorization"] == f"Basic {expected}"


def test_validate_raises_the_typed_error() -> None:
    api = FakeAPI(httpx.Response(200, json=WHOAMI), error(403, "PERMISSION_DENIED", "not yours", layer="mlflow"))
    with pytest.raises(HokusaiPermissionError) as caught:
        setup_mlflow_auth(True, api_key=KEY, api_url=API, transport=api.transport)
    assert caught.value.layer == "mlflow"
    with pytest.raises(HokusaiAuthError):
        setup_mlflow_auth(
            True, api_key=KEY, api_url=API, transport=FakeAPI(error(401, "UNAUTHENTICATED", "no")).transport
        )


def test_validate_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(HokusaiConfigurationError, match="No Hokusai API key provided"):
        setup_mlflow_auth(True, api_url=API, transport=FakeAPI().transport)


def test_status_of_a_working_setup() -> None:
    write_credentials(api_key=KEY, api_url=API)
    api = FakeAPI(
        httpx.Response(200, json=WHOAMI | {"expires_at": "2030-01-01T00:00:00Z"}), httpx.Response(200, json={})
    )
    status = get_mlflow_auth_status(transport=api.transport)
    assert status == {
        "mode": "remote",
        "api_url": API,
        "tracking_uri": "http://api.test/api/mlflow",
        "tracking_uri_source": "hokusai-default",
        "credential": "bearer",
        "credential_source": "the Hokusai key (file)",
        "key_prefix": KEY[:12],
        "reachable": True,
        "key_accepted": True,
        "mlflow_accepted": True,
        "owner": "ada",
        "scopes": ["read", "write"],
        "expires_at": "2030-01-01T00:00:00Z",
        "outbox_pending": 0,
        "problems": [],
        # The key reaches MLflow through setup() only; a stock MLflow process elsewhere logs locally.
        "notes": [
            {
                "note": f"The key saved in {credentials_path()} and the tracking URI above are used only by code that "
                "calls hokusai.setup() or ModelRegistry(): the stock MLflow client in other processes (plain "
                "scripts, the `mlflow` CLI) logs to a local store, not to Hokusai",
                "fix": "to use it there: export MLFLOW_TRACKING_URI=http://api.test/api/mlflow "
                f"MLFLOW_TRACKING_TOKEN=<your key, prefix {KEY[:12]}…>",
            }
        ],
    }
    assert "MLFLOW_TRACKING_URI" not in os.environ  # read-only


def test_status_when_the_api_is_down_in_optional_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "on")
    status = get_mlflow_auth_status(
        api_key=KEY, api_url=API, transport=FakeAPI(httpx.ConnectError("refused")).transport
    )
    assert (status["mode"], status["reachable"], status["key_accepted"]) == ("optional-fallback-active", False, False)
    assert status["problems"] == [
        {
            "problem": "Could not connect to api.test (ConnectError: refused).",
            "fix": "start the API (`hokusai server`) or fix HOKUSAI_API_URL (http://api.test)",
        }
    ]


def test_status_with_a_rejected_key() -> None:
    api = FakeAPI(error(401, "UNAUTHENTICATED", "The API key has expired."))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert (status["reachable"], status["key_accepted"]) == (True, False)
    assert status["problems"] == [
        {
            "problem": f"The API rejected the key {KEY[:12]}…: The API key has expired.",
            "fix": f"the key {KEY[:12]}… was passed as an argument: pass a valid key",
        }
    ]
    assert len(api.requests) == 1  # MLflow is not asked when the key is already refused


def test_status_without_a_key() -> None:
    api = FakeAPI(error(401, "UNAUTHENTICATED", "API key required."))
    status = get_mlflow_auth_status(api_url=API, transport=api.transport)
    assert "Authorization" not in api.requests[0].headers
    assert status["reachable"] is True
    assert status["mlflow_accepted"] is None  # never asked: "no" would blame a credential nobody checked
    assert status["problems"] == [
        {"problem": "No Hokusai API key found", "fix": "run `hokusai login` or set HOKUSAI_API_KEY"}
    ]


def test_status_reports_mlflow_refusing_the_users_own_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "stale-token")
    api = FakeAPI(httpx.Response(200, json=WHOAMI), error(401, "UNAUTHENTICATED", "Unknown key.", layer="mlflow"))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert api.requests[1].headers["Authorization"] == "Bearer stale-token"
    assert status["mlflow_accepted"] is False
    assert status["problems"] == [
        {
            "problem": "MLflow at http://api.test/api/mlflow refused bearer credentials from MLFLOW_TRACKING_TOKEN: "
            "Unknown key.",
            "fix": "MLflow sends the credential from MLFLOW_TRACKING_TOKEN, not your Hokusai key: put the key there, "
            "or remove it",
        }
    ]


def test_a_stale_basic_password_is_named_as_the_thing_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hk_live_revoked")
    api = FakeAPI(httpx.Response(200, json=WHOAMI), error(401, "UNAUTHENTICATED", "Key revoked.", layer="mlflow"))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert status["problems"][0]["fix"] == (
        "MLflow sends the credential from MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, not your Hokusai key: "
        "put the key there, or remove it"
    )


def test_status_flags_a_tracking_uri_elsewhere_and_pending_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    append_entry(new_entry(idempotency_key="k", request={}, reason="down", local_version="1"))
    api = FakeAPI(httpx.Response(200, json=WHOAMI))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert status["outbox_pending"] == 1
    assert status["problems"] == [
        {"problem": "1 local registration(s) wait in the outbox", "fix": "run `hokusai sync`"},
        {
            "problem": "MLflow logs to sqlite:///mlflow.db, not to the Hokusai MLflow: runs there cannot be registered",
            "fix": "unset MLFLOW_TRACKING_URI (or set it to http://api.test/api/mlflow)",
        },
    ]


def test_status_tells_a_hokusai_mlflow_at_another_spelling_of_the_address_to_use_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:8000/api/mlflow/")
    # The same server under another name, which the SDK does not hand the key: MLflow gets no credential.
    api = FakeAPI(httpx.Response(200, json=WHOAMI), error(401, "UNAUTHENTICATED", "No API key.", layer="hokusai-api"))
    status = get_mlflow_auth_status(api_key=KEY, api_url="http://127.0.0.1:8000", transport=api.transport)
    assert status["problems"][-1] == {
        "problem": "MLflow logs to http://localhost:8000/api/mlflow/, a Hokusai MLflow at another address than the "
        "API's (http://127.0.0.1:8000): the SDK gives MLflow your key only for the API's own address, and registers "
        "only runs the API's MLflow holds",
        "fix": "use one address for both: set MLFLOW_TRACKING_URI to http://127.0.0.1:8000/api/mlflow, or "
        "HOKUSAI_API_URL to http://localhost:8000",
    }


def test_status_notes_an_admin_key_used_for_work() -> None:
    admin = {**WHOAMI, "owner": "admin", "scopes": ["read", "write", "admin"], "is_admin": True}
    api = FakeAPI(httpx.Response(200, json=admin), httpx.Response(200, json={}))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert status["problems"] == []
    [admin_note] = [note for note in status["notes"] if "admin key" in note["note"]]
    assert admin_note["note"].startswith(f"The key {KEY[:12]}… is an admin key: in MLflow it acts as MLflow's admin")
    assert "hokusai keys create --owner <you>" in admin_note["fix"]
    ordinary = FakeAPI(httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    plain = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=ordinary.transport)
    assert not any("admin key" in note["note"] for note in plain["notes"])


def test_status_in_mock_mode_makes_no_request(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "1")
    api = FakeAPI()
    status = get_mlflow_auth_status(api_key=KEY, transport=api.transport)
    assert status["mode"] == "mock"
    assert status["problems"] == []
    assert api.requests == []


def _accepting_api() -> FakeAPI:
    """The API accepts the SDK's key (whoami), then MLflow accepts whatever it is sent."""
    return FakeAPI(httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))


def test_a_tracking_uri_in_env_without_a_token_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stock MLflow client goes to Hokusai with no credential (401), although setup() would supply the key.
    write_credentials(api_key=KEY, api_url=API)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://api.test/api/mlflow")
    status = get_mlflow_auth_status(transport=_accepting_api().transport)
    assert status["mlflow_accepted"] is True  # with setup()'s token, which a plain process does not have
    assert status["notes"] == []
    assert status["problems"] == [
        {
            "problem": f"The key saved in {credentials_path()} is used only by code that calls hokusai.setup() or "
            "ModelRegistry(): the stock MLflow client in other processes sends no credential to "
            "http://api.test/api/mlflow and is refused",
            "fix": f"export MLFLOW_TRACKING_TOKEN=<your key, prefix {KEY[:12]}…>",
        }
    ]
    assert KEY not in repr(status)


def test_the_key_in_hokusai_api_key_alone_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://api.test/api/mlflow")
    status = get_mlflow_auth_status(api_url=API, transport=_accepting_api().transport)
    assert [problem["problem"][:60] for problem in status["problems"]] == [
        "HOKUSAI_API_KEY is used only by code that calls hokusai.setu"
    ]


def test_exported_mlflow_settings_with_the_same_key_are_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `make run` tells a user to paste: every MLflow client has the key, and it is the SDK's.
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://api.test/api/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", KEY + "\n")  # a pasted newline is still the same key
    status = get_mlflow_auth_status(api_url=API, transport=_accepting_api().transport)
    assert (status["problems"], status["notes"]) == ([], [])


def test_no_note_after_setup_in_this_process() -> None:
    # setup() put the key into this process's environment, which its child processes inherit too.
    setup(KEY, api_url=API)
    status = get_mlflow_auth_status(transport=_accepting_api().transport)
    assert (status["credential_source"], status["problems"], status["notes"]) == (
        "the Hokusai key (setup())",
        [],
        [],
    )


def test_an_mlflow_token_of_another_key_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", OTHER_KEY)
    api = _accepting_api()
    status = get_mlflow_auth_status(api_url=API, transport=api.transport)
    assert api.requests[1].headers["Authorization"] == f"Bearer {OTHER_KEY}"
    assert status["mlflow_accepted"] is True  # both keys work: only the comparison finds it
    assert status["notes"] == []
    assert status["problems"] == [
        {
            "problem": f"MLflow calls act as a different key (prefix {OTHER_KEY[:12]}…, from MLFLOW_TRACKING_TOKEN) "
            f"than the SDK (prefix {KEY[:12]}…, from HOKUSAI_API_KEY)",
            "fix": (
                "use one key, your own, for both (an admin key is for administration, not MLflow work): set "
                "MLFLOW_TRACKING_TOKEN to the SDK's key, or unset it so hokusai.setup() sets it; or set "
                "HOKUSAI_API_KEY to MLFLOW_TRACKING_TOKEN's key"
            ),
        }
    ]
    assert KEY not in repr(status) and OTHER_KEY not in repr(status)


def test_a_basic_password_of_another_key_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    write_credentials(api_key=KEY, api_url=API)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", OTHER_KEY)
    status = get_mlflow_auth_status(transport=_accepting_api().transport)
    assert status["problems"] == [
        {
            "problem": f"MLflow calls act as a different key (prefix {OTHER_KEY[:12]}…, from "
            f"MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD) than the SDK (prefix {KEY[:12]}…, from the key "
            f"saved in {credentials_path()})",
            "fix": "make the password in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD the same key, or remove "
            "the username and password there so hokusai.setup() sets MLFLOW_TRACKING_TOKEN",
        }
    ]


def test_a_different_secret_that_is_no_key_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # The API is down, so MLflow is not asked; the mismatch is still known. Of a non-key, not even a prefix is shown.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "correct-horse-battery")
    api = FakeAPI(httpx.ConnectError("refused"))
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=api.transport)
    assert status["mlflow_accepted"] is None
    assert status["problems"][1]["problem"] == (
        "MLflow calls act as a different key (not a Hokusai key, from MLFLOW_TRACKING_TOKEN) than the SDK "
        f"(prefix {KEY[:12]}…, from the key passed as an argument)"
    )
    assert "correct" not in repr(status)


def test_a_token_for_another_mlflow_host_is_not_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://other-mlflow.test")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "that-servers-token")
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=_accepting_api().transport)
    assert [problem["problem"].split(",")[0] for problem in status["problems"]] == [
        "MLflow logs to https://other-mlflow.test"
    ]
    assert status["notes"] == []


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(first: bytes, second: bytes) -> bool:
        compared.append((first, second))
        return real(first, second)

    monkeypatch.setattr(config.hmac, "compare_digest", spy)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", OTHER_KEY)
    status = get_mlflow_auth_status(api_key=KEY, api_url=API, transport=_accepting_api().transport)
    assert (OTHER_KEY.encode(), KEY.encode()) in compared
    assert len(status["problems"]) == 1


MALFORMED = "The API key is malformed: Hokusai keys are `hk_live_` followed by at least 32 letters and digits."


@pytest.mark.parametrize("key", [KEY[:20] + "\r\n" + KEY[20:], KEY[:20] + "\x00" + KEY[20:], "garbage"])
@pytest.mark.parametrize("validate", [False, True])
def test_setup_refuses_a_malformed_key_before_sending_or_exporting_it(key: str, validate: bool) -> None:
    """A NUL made `os.environ` raise its own ValueError; a line break, httpx's error quoting the key whole."""
    api = FakeAPI()
    with pytest.raises(HokusaiConfigurationError) as caught:
        setup_mlflow_auth(validate, api_key=key, api_url=API, transport=api.transport)
    assert str(caught.value).startswith(MALFORMED)
    assert caught.value.hint == "the key was passed as an argument: pass a valid key"
    assert KEY[:12] not in str(caught.value) and api.requests == []
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


def test_status_reports_a_malformed_key_without_its_prefix_or_sending_it() -> None:
    os.environ["HOKUSAI_API_KEY"] = KEY[:20] + "\n" + KEY[20:]
    api = FakeAPI(error(401, "UNAUTHENTICATED", "API key required."))
    status = get_mlflow_auth_status(api_url=API, transport=api.transport)
    assert [problem["problem"][: len(MALFORMED)] for problem in status["problems"]] == [MALFORMED]
    assert status["problems"][0]["fix"].startswith("the key is HOKUSAI_API_KEY's: set it to a valid key")
    assert status["key_prefix"] is None and KEY[:12] not in str(status)
    assert all("Authorization" not in request.headers for request in api.requests)


def test_validate_names_where_the_refused_key_came_from() -> None:
    os.environ["HOKUSAI_API_KEY"] = KEY
    api = FakeAPI(error(401, "UNAUTHENTICATED", "Unknown API key."))
    with pytest.raises(HokusaiAuthError) as caught:
        setup_mlflow_auth(True, api_url=API, transport=api.transport)
    assert (
        caught.value.hint
        == f"the key {KEY[:12]}… is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"
    )
