from __future__ import annotations

import functools
import json
import os
import secrets
import stat
import string
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from hokusai import ModelRegistry, __version__, _registry, config
from hokusai._client import HokusaiClient
from hokusai._credentials import read_credentials, write_credentials
from hokusai._outbox import append_entry, new_entry, read_entries
from hokusai._paths import credentials_path
from hokusai.cli import _errors, auth, keys, models, sync, tokens
from hokusai.cli._errors import CLI_ERROR_MAPPINGS, DEBUG_HINT, run_cli
from hokusai.cli.app import app as hokusai_app
from hokusai.errors import HokusaiAuthError, HokusaiError, HokusaiKeyMismatchWarning

from .conftest import KEY, FakeAPI, error

API = "http://api.test"
WHOAMI = {"owner": "ada", "key_id": "k1", "key_prefix": KEY[:12], "scopes": ["read", "write"], "expires_at": None}
MODEL = {
    "model_name": "churn",
    "version": "1",
    "token_id": "CHURN",
    "metric_name": "accuracy",
    "baseline_value": 0.91,
    "model_uri": "models:/churn/1",
    "source": "s3://bucket/churn",
    "tags": {"team": "growth"},
    "created": True,
}


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def run(args: Sequence[str], *, input: str | None = None, app: typer.Typer | None = None) -> Outcome:
    """Run the CLI the way `hokusai` does (through run_cli), capturing its streams."""
    if app is None:
        app = typer.Typer()
        for module in (auth, models, sync):
            module.register(app)
    with CliRunner().isolation(input=input) as (stdout, stderr, _):
        try:
            run_cli(app, args)
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        return Outcome(int(code or 0), stdout.getvalue().decode(), stderr.getvalue().decode())


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    """The fake API behind every client the CLI builds; add answers with ``api.answer``."""
    fake = FakeAPI()
    monkeypatch.setenv("HOKUSAI_API_URL", API)
    monkeypatch.setattr(auth, "HokusaiClient", functools.partial(HokusaiClient, transport=fake.transport))
    for module in (models, sync, tokens):
        monkeypatch.setattr(module, "ModelRegistry", functools.partial(ModelRegistry, transport=fake.transport))
    monkeypatch.setattr(
        auth, "get_mlflow_auth_status", functools.partial(config.get_mlflow_auth_status, transport=fake.transport)
    )
    return fake


def answer(api: FakeAPI, *responses: httpx.Response | Exception) -> None:
    api._answers.extend(responses)


def test_login_validates_then_saves_owner_only(api: FakeAPI) -> None:
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["login", "--key", KEY])
    assert outcome.exit_code == 0
    assert outcome.stdout.splitlines() == [
        f"Logged in to {API} as ada (key {KEY[:12]}…, scopes: read, write).",
        f"Saved to {credentials_path()} (readable by you only).",
    ]
    assert api.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert read_credentials() == {"api_key": KEY, "api_url": API}
    assert stat.S_IMODE(credentials_path().stat().st_mode) == 0o600
    assert KEY not in outcome.stdout + outcome.stderr


def test_login_prompts_on_a_terminal_without_echoing_the_key(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hokusai.cli.auth._stdin_is_terminal", lambda: True)
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["login"], input=KEY + "\n")
    assert outcome.exit_code == 0
    assert outcome.stdout.startswith("Hokusai API key: \n")
    assert KEY not in outcome.stdout + outcome.stderr
    assert read_credentials()["api_key"] == KEY


def test_login_reads_a_piped_key_without_a_prompt_or_a_warning(api: FakeAPI) -> None:
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["login"], input=KEY + "\n")
    assert outcome.exit_code == 0, outcome.stderr
    assert "Hokusai API key" not in outcome.stdout and "echo" not in outcome.stderr
    assert outcome.stderr.startswith("Hokusai API key (read from standard input): ")
    assert KEY not in outcome.stdout + outcome.stderr
    assert read_credentials()["api_key"] == KEY


def test_a_rejected_key_is_not_saved(api: FakeAPI) -> None:
    write_credentials(api_key="hk_live_previous")
    answer(api, error(401, "UNAUTHENTICATED", "Unknown API key.", x_request_id="r-1"))
    outcome = run(["login", "--key", KEY])
    assert outcome.exit_code == 1
    assert outcome.stderr == (
        "Authentication failed: 401 UNAUTHENTICATED from hokusai-api (Request ID: r-1): Unknown API key. "
        "(HINT: nothing was saved; check that the key was copied whole and that http://api.test is the server "
        "that issued it)\n" + DEBUG_HINT + "\n"
    )
    assert read_credentials()["api_key"] == "hk_live_previous"


def test_login_to_a_server_that_is_not_hokusai_saves_nothing(api: FakeAPI) -> None:
    """Another service answering 200 with JSON on that port is no Hokusai API: the key is neither saved nor shown."""
    write_credentials(api_key="hk_live_previous")
    answer(api, httpx.Response(200, json={"hello": 1}))
    outcome = run(["login", "--key", KEY])
    assert outcome.exit_code == 1
    assert "no Hokusai identity (owner, key_id, scopes): not the Hokusai API" in outcome.stderr
    assert "Logged in" not in outcome.stdout and KEY not in outcome.stdout + outcome.stderr
    assert read_credentials()["api_key"] == "hk_live_previous"


@pytest.mark.parametrize(
    ("row", "status"),
    [
        ({"revoked_at": None, "expires_at": None}, "active"),
        ({"revoked_at": None, "expires_at": "2999-01-01T00:00:00Z"}, "active"),
        ({"revoked_at": None, "expires_at": "2000-01-01T00:00:00+00:00"}, "expired"),
        ({"revoked_at": "2000-01-01T00:00:00Z", "expires_at": "2000-01-01T00:00:00Z"}, "revoked"),
    ],
)
def test_keys_list_says_which_keys_are_expired(row: dict[str, object], status: str) -> None:
    assert keys._key_status(row) == status


def test_login_warns_when_the_environment_overrides(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_live_other")
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["login", "--key", KEY])
    assert outcome.exit_code == 0
    assert outcome.stderr == (
        "Warning: HOKUSAI_API_KEY is set and takes precedence over the saved key; unset it to use the saved key.\n"
    )


def test_login_with_an_empty_key(api: FakeAPI) -> None:
    outcome = run(["login", "--key", "  "])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Configuration problem: No API key entered.")
    assert api.requests == []


def test_logout() -> None:
    write_credentials(api_key=KEY)
    outcome = run(["logout"])
    assert (outcome.exit_code, outcome.stdout) == (0, f"Logged out: removed {credentials_path()}.\n")
    assert not credentials_path().exists()
    assert run(["logout"]).stdout == f"Not logged in: there is no {credentials_path()}.\n"


def test_whoami_does_not_send_the_saved_key_to_another_server(api: FakeAPI) -> None:
    write_credentials(api_key=KEY, api_url=API)
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["whoami", "--api-url", "http://elsewhere.test:8000"])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith(
        f"Configuration problem: The key saved by `hokusai login` is for {API}; it is not sent to "
        "http://elsewhere.test:8000 (from argument)."
    )
    assert api.requests == []  # nothing, the key least of all, went anywhere
    assert KEY not in outcome.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://user:pw@elsewhere.test:8000", "carries a user name or password"),  # httpx logs a URL whole
        ("http://api.test/?token=x", "has a query or fragment"),
        ("api.test:8000", "is not an http(s) URL"),
        ("http://127.0.0.1:99999", "is not a valid URL (Port out of range 0-65535)"),
        ("http://[::1", "is not a valid URL (Invalid IPv6 URL)"),
        ("http://user:pw@[::1", "is not a valid URL (Invalid IPv6 URL)"),
        ("", "must not be empty; leave the option out to use the configured URL"),
    ],
)
@pytest.mark.parametrize("command", ["whoami", "login", "models list"])
def test_an_api_url_option_that_is_not_an_api_root_is_a_usage_error_without_echoing_credentials(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, url: str, says: str, command: str
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    outcome = run([*command.split(), "--api-url", url, *(["--key", KEY] if command == "login" else [])])
    assert outcome.exit_code == 2
    assert "Invalid value for '--api-url'" in outcome.stderr
    assert says in " ".join(outcome.stderr.replace("│", "").split())  # rich's box may wrap the message
    assert "pw" not in outcome.stderr and "Traceback" not in outcome.stderr
    assert api.requests == [] and not credentials_path().exists()


def test_whoami_when_not_logged_in() -> None:
    outcome = run(["whoami"])
    assert (outcome.exit_code, outcome.stderr) == (1, "Not logged in. Run `hokusai login` first.\n")


@pytest.mark.parametrize("source", ["file", "env"])
def test_whoami_names_the_refused_key_and_the_place_to_fix(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "file":
        write_credentials(api_key=KEY, api_url=API)
    else:
        monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
        monkeypatch.setenv("HOKUSAI_API_URL", API)
    answer(api, error(401, "UNAUTHENTICATED", "This API key was revoked."))
    outcome = run(["whoami"])
    said = " ".join(outcome.stderr.split())
    assert outcome.exit_code == 1
    assert said.count("This API key was revoked.") == 1
    fix = (
        f"is the saved login's ({credentials_path()}): run `hokusai login` with a valid key"
        if source == "file"
        else "is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"
    )
    assert f"(HINT: the key {KEY[:12]}… {fix})" in said, said


def test_whoami(api: FakeAPI) -> None:
    write_credentials(api_key=KEY)
    answer(api, httpx.Response(200, json=WHOAMI))
    outcome = run(["whoami"])
    assert outcome.exit_code == 0
    lines = [line.split() for line in outcome.stdout.splitlines()]
    assert lines == [
        ["owner", "ada"],
        ["key", f"{KEY[:12]}…", "(from", "file)"],
        ["scopes", "read,", "write"],
        ["expires", "never"],
        ["api", API],
    ]


def test_auth_status_ok_exits_0(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # the note holds a temporary path: no cell may wrap
    write_credentials(api_key=KEY, api_url=API)
    answer(api, httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 0
    assert "key accepted         yes" in outcome.stdout
    assert "mlflow credential    bearer (from the Hokusai key (file))" in outcome.stdout
    # Only code calling hokusai.setup() gets the saved key: said, but an SDK-only user has nothing to fix.
    assert f"The key saved in {credentials_path()} and the tracking URI above are used only by code" in outcome.stdout
    assert f"MLFLOW_TRACKING_TOKEN=<your key, prefix {KEY[:12]}…>" in outcome.stdout
    assert KEY not in outcome.stdout
    assert outcome.stdout.rstrip().endswith("No problems found, but read the note above.")


def test_auth_status_folds_a_fix_at_80_columns_and_never_cuts_it(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    write_credentials(api_key=KEY, api_url=API)
    answer(api, httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))

    outcome = run(["auth", "status"])

    assert outcome.exit_code == 0
    # The only ellipses are the ones after a key's displayed prefix: nothing in the table was cut.
    assert outcome.stdout.count("…") == outcome.stdout.count(f"{KEY[:12]}…")
    assert f"{API}/api/mlflow" in "".join(line.strip(" │") for line in outcome.stdout.splitlines())


def test_auth_status_with_mlflow_exported_finds_no_problems(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    write_credentials(api_key=KEY, api_url=API)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{API}/api/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", KEY)
    answer(api, httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 0
    assert "Notes" not in outcome.stdout
    assert outcome.stdout.rstrip().endswith("No problems found.")


def test_auth_status_tracking_uri_without_token_exits_1(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    # After `hokusai login`, a plain `mlflow` process pointed at Hokusai sends no credential and gets 401.
    monkeypatch.setenv("COLUMNS", "1000")  # the problem holds a temporary path: no cell may wrap
    write_credentials(api_key=KEY, api_url=API)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{API}/api/mlflow")
    answer(api, httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 1
    assert "Problems" in outcome.stdout and "No problems found" not in outcome.stdout
    assert f"The key saved in {credentials_path()} is used only by code that calls hokusai.setup()" in outcome.stdout
    assert f"export MLFLOW_TRACKING_TOKEN=<your key, prefix {KEY[:12]}…>" in outcome.stdout
    assert KEY not in outcome.stdout


def test_auth_status_mlflow_acting_as_another_key_exits_1(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    other = "hk_live_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    monkeypatch.setenv("COLUMNS", "1000")  # no cell may wrap
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", other)
    answer(api, httpx.Response(200, json=WHOAMI), httpx.Response(200, json={}))
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 1
    assert (
        f"MLflow calls act as a different key (prefix {other[:12]}…, from MLFLOW_TRACKING_TOKEN) than the SDK "
        f"(prefix {KEY[:12]}…, from HOKUSAI_API_KEY)"
    ) in outcome.stdout
    assert "an admin key is for administration, not MLflow work" in " ".join(outcome.stdout.split())
    assert KEY not in outcome.stdout and other not in outcome.stdout


def test_auth_status_with_problems_exits_1(api: FakeAPI) -> None:
    refused = httpx.ConnectError("refused")
    answer(api, refused)
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 1
    assert "No Hokusai API key found" in outcome.stdout
    assert "run `hokusai login` or set HOKUSAI_API_KEY" in outcome.stdout
    assert "Could not connect to api.test" in outcome.stdout


def test_auth_status_does_not_judge_a_key_it_could_not_check(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    write_credentials(api_key=KEY, api_url=API)
    answer(api, *[httpx.ConnectError("refused")] * 6)
    outcome = run(["auth", "status"])
    assert "reachable            no" in outcome.stdout
    assert "key accepted         not checked (API unreachable)" in outcome.stdout


def test_auth_status_in_mock_mode(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "true")
    outcome = run(["auth", "status"])
    assert outcome.exit_code == 0
    assert "reachable            not checked (mock mode)" in outcome.stdout
    assert "key accepted         not checked (mock mode)" in outcome.stdout


def test_models_register(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    answer(api, httpx.Response(201, json=MODEL | {"warnings": ["run has no metric 'accuracy'"]}))
    args = ["models", "register", "--model-uri", "s3://bucket/churn", "--name", "churn", "--token-id", "churn"]
    outcome = run([*args, "--metric", "accuracy", "--baseline", "0.91", "--tag", "team=growth", "--tag", "note=a=b"])
    assert outcome.exit_code == 0
    assert outcome.stdout == "Registered churn version 1 for token CHURN (models:/churn/1).\n"
    assert outcome.stderr == "Warning: run has no metric 'accuracy'\n"
    assert json.loads(api.requests[0].content)["tags"] == {"team": "growth", "note": "a=b"}


@pytest.mark.usefixtures("mock_store")
def test_models_register_reports_a_local_fallback_once_and_plainly(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("HOKUSAI_OPTIONAL_MLFLOW", "true")
    answer(api, *[httpx.ConnectError("refused")] * 6)
    args = ["models", "register", "--model-uri", "s3://bucket/churn", "--name", "churn", "--token-id", "churn"]

    outcome = run([*args, "--metric", "accuracy", "--baseline", "0.91"])

    assert outcome.exit_code == 0, outcome.stderr
    assert " ".join(outcome.stdout.split()) == (
        "Registered locally only (not on the platform yet): churn version 1 for token CHURN (models:/churn/1)."
    )
    stderr = " ".join(outcome.stderr.split())
    assert stderr.startswith("Warning: registered in the local store only, because the API failed")
    assert stderr.count("refused") == 1 and "RuntimeWarning" not in stderr  # no log line, no Python warning
    assert not [warning for warning in recwarn if issubclass(warning.category, RuntimeWarning)]


def test_models_register_bad_tag_is_a_usage_error() -> None:
    args = ["models", "register", "--model-uri", "s3://b/m", "--name", "n", "--token-id", "T", "--metric", "m"]
    outcome = run([*args, "--baseline", "1", "--tag", "oops"])
    assert outcome.exit_code == 2
    assert "expected KEY=VALUE, got 'oops'" in outcome.stderr


def test_models_register_invalid_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    args = ["models", "register", "--model-uri", "s3://b/m", "--name", "n", "--token-id", "a b", "--metric", "m"]
    outcome = run([*args, "--baseline", "1"])
    nan = run([*args[:-4], "--token-id", "T", "--metric", "m", "--baseline", "nan"])
    baseline_prefix = run(["models", "register", "--model-uri", "s3://b/m", "--name", "hokusai-baseline-x",
                           "--token-id", "T", "--metric", "m", "--baseline", "1"])  # fmt: skip

    # Named by the option typed, as click names any bad option value (exit code 2), never the SDK's argument.
    assert (outcome.exit_code, nan.exit_code, baseline_prefix.exit_code) == (2, 2, 2)
    assert "Invalid value for '--token-id': may contain only ASCII letters" in outcome.stderr
    assert "Invalid value for '--baseline': must be finite" in nan.stderr
    assert "Invalid value for '--name'" in baseline_prefix.stderr
    assert "hokusai models baseline" in baseline_prefix.stderr
    assert "token_id" not in outcome.stderr and "baseline_value" not in nan.stderr


def test_models_list_and_show(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    answer(
        api,
        httpx.Response(200, json={"models": [MODEL], "next_page_token": None}),
        httpx.Response(200, json={"models": [MODEL], "next_page_token": None}),
        httpx.Response(200, json={"models": [], "next_page_token": None}),
        httpx.Response(200, json={**MODEL, "baseline_value": 0.9000000001}),
    )
    monkeypatch.setenv("COLUMNS", "120")
    listed = run(["models", "list", "--token-id", "churn"])
    monkeypatch.setenv("COLUMNS", "80")
    narrow = run(["models", "list", "--token-id", "churn"])
    assert listed.exit_code == 0
    assert "│ churn │ 1       │ CHURN │ accuracy │ 0.91     │ s3://bucket/churn │" in listed.stdout
    assert "│ churn │ 1       │ CHURN │ accuracy │ 0.91     │" in narrow.stdout and "s3://" not in narrow.stdout
    assert narrow.stdout.splitlines()[-1] == "Sources: `hokusai models show NAME VERSION`, or widen the terminal."
    assert run(["models", "list"]).stdout == "No tokenized models found.\n"
    shown = run(["models", "show", "churn"])
    assert shown.exit_code == 0
    assert "churn version 1" in shown.stdout and "tag team   growth" in shown.stdout
    assert "0.9000000001" in shown.stdout  # every digit, so that a repeat can pass it back as --baseline
    assert api.requests[3].url.path == "/api/v1/models/tokenized/churn/versions/latest"


def test_what_others_stored_cannot_steer_the_terminal(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag or a name set straight in MLflow reaches every user who lists it: escapes and overrides are shown
    escaped, in tables, in key/value lists and in error messages (bad-input probe)."""
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    model = {**MODEL, "model_name": "churn\u202egnp.exe", "tags": {"team": "\x1b[2Jgrowth"}}
    answer(
        api,
        httpx.Response(200, json={"models": [model], "next_page_token": None}),
        httpx.Response(200, json=model),
        error(404, "RESOURCE_DOES_NOT_EXIST", "Model 'x\x1b]0;owned\x07' not found."),
    )
    outputs = [
        run(["models", "list"]).stdout,
        run(["models", "show", "churn"]).stdout,
        run(["models", "show", "x"]).stderr,
    ]
    printed = "".join(outputs)
    assert "\x1b" not in printed and "\u202e" not in printed and "\x07" not in printed
    assert "churn\\u202egnp.exe" in outputs[0] and "\\x1b[2Jgrowth" in outputs[1] and "\\x1b]0;owned\\x07" in outputs[2]


def test_output_to_a_pipe_is_not_wrapped(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a terminal or COLUMNS, rich would fold at 80 columns what `grep` or a log reader expects whole."""
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.delenv("COLUMNS", raising=False)
    source = "s3://bucket/" + "/".join(["a-long-folder-name"] * 8) + "/model"
    model = {**MODEL, "model_name": "churn-" + "x" * 90, "source": source}
    answer(api, httpx.Response(200, json={"models": [model], "next_page_token": None}))
    listed = run(["models", "list"])
    assert listed.exit_code == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if model["model_name"] in line]
    assert source in row and "CHURN" in row


def test_model_commands_do_not_warn_about_mlflows_own_key(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's admin shell: HOKUSAI_API_KEY is the admin's key, MLFLOW_TRACKING_TOKEN a user's.
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{API}/api/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "hk_live_" + "u" * 40)
    answer(api, httpx.Response(200, json={"models": [MODEL], "next_page_token": None}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = run(["models", "list"])
        with pytest.warns(HokusaiKeyMismatchWarning):  # what Python code calling the SDK still gets
            ModelRegistry(transport=api.transport).close()

    assert listed.exit_code == 0 and "churn" in listed.stdout
    assert "different key" not in listed.stderr
    assert [warning.message for warning in caught] == []


def test_api_url_option_overrides_the_environment(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    other = "http://other.test:9000"
    answer(api, httpx.Response(200, json={"models": [], "next_page_token": None}), httpx.Response(200, json=WHOAMI))

    listed = run(["models", "list", "--api-url", other])
    whoami = run(["whoami", "--api-url", other])

    assert (listed.exit_code, whoami.exit_code) == (0, 0), listed.stderr + whoami.stderr
    assert [str(request.url.copy_with(path="/", query=None)) for request in api.requests] == [other + "/"] * 2
    assert ["api", other] in [line.split() for line in whoami.stdout.splitlines()]


def test_models_show_not_found(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    answer(api, error(404, "RESOURCE_DOES_NOT_EXIST", "Model 'nope' not found."))
    outcome = run(["models", "show", "nope", "2"])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Not found: 404 RESOURCE_DOES_NOT_EXIST from hokusai-api: Model 'nope' not found.")


def test_sync(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    assert run(["sync"]).stdout == "Nothing to sync: the outbox is empty.\n"
    request = {"model_uri": "s3://b/m", "model_name": "churn", "token_id": "CHURN"}
    append_entry(new_entry(idempotency_key="k1", request=request, reason="down", local_version="1"))
    append_entry(new_entry(idempotency_key="k2", request=request | {"token_id": "X"}, reason="down", local_version="2"))
    answer(api, httpx.Response(200, json=MODEL | {"created": False}), error(403, "PERMISSION_DENIED", "needs write"))
    outcome = run(["sync"])
    assert outcome.exit_code == 1
    assert "already-present" in outcome.stdout and "failed" in outcome.stdout
    # When each was queued, and its local version beside the platform's (none for the failure).
    assert f"{read_entries()[0].queued_at[:10]} " in outcome.stdout
    assert f"1 → {MODEL['version']}" in outcome.stdout and "2 → -" in outcome.stdout


def test_the_mapping_lists_subclasses_before_their_bases() -> None:
    classes = list(CLI_ERROR_MAPPINGS)
    for index, cls in enumerate(classes):
        assert not any(issubclass(later, cls) and later is not cls for later in classes[index + 1 :]), cls
    assert classes[-1] is HokusaiError


def _failing_app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise exc

    @app.command()
    def other() -> None:
        """A second command, so typer keeps `boom` as a subcommand."""

    return app


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_DEBUG", "1")
    with pytest.raises(HokusaiAuthError):
        run(["boom"], app=_failing_app(HokusaiAuthError("no", status=401, error_code="UNAUTHENTICATED", layer="x")))


def test_an_invalid_debug_flag_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_DEBUG", "maybe")
    outcome = run(["boom"], app=_failing_app(RuntimeError()))
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Configuration problem: HOKUSAI_DEBUG='maybe' is not a boolean.")


def test_unknown_exceptions_are_re_raised() -> None:
    with pytest.raises(RuntimeError, match="bug"):
        run(["boom"], app=_failing_app(RuntimeError("bug")))


def test_usage_errors_exit_2() -> None:
    assert run(["models", "show"]).exit_code == 2
    assert run(["no-such-command"]).exit_code == 2


def test_format_error_uses_the_first_matching_label() -> None:
    assert _errors.format_error(HokusaiError("plain")) == "Error: plain"


def test_keys_create_needs_no_server_packages(tmp_path: Path) -> None:
    """An SDK-only install (no `[server]` extra, so no SQLAlchemy) creates keys through the API."""
    script = (
        "import sys; sys.modules['sqlalchemy'] = None\n"  # importing it now fails, as where it is not installed
        "from hokusai.cli.main import main\n"
        "sys.argv = ['hokusai', 'keys', 'create', '--scopes', 'read', '--api-url', 'http://127.0.0.1:9']\n"
        "main()\n"
    )
    env = {**os.environ, "HOKUSAI_API_KEY": KEY, "HOKUSAI_HOME": str(tmp_path)}

    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1 and result.stderr.startswith("Cannot reach the server: Could not connect"), result
    assert "ModuleNotFoundError" not in result.stderr


def test_a_ctrl_c_while_the_commands_load_ends_like_one_while_they_run(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "class CtrlC:\n"  # the signal arriving while the commands' modules are imported
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'hokusai.cli.app':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from hokusai.cli.main import main\n"
        "sys.argv = ['hokusai', 'whoami']\n"
        "main()\n"
    )
    env = {**os.environ, "HOKUSAI_HOME": str(tmp_path)}

    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)

    assert (result.returncode, result.stdout, result.stderr) == (1, "", "Aborted!\n")


@pytest.mark.parametrize(("command", "option"), [("register", "--tag"), ("baseline", "--metadata")])
def test_repeatable_pairs_show_what_they_take_in_help(command: str, option: str) -> None:
    outcome = run(["models", command, "--help"])
    assert outcome.exit_code == 0
    (line,) = (line for line in outcome.stdout.splitlines() if f" {option} " in line and "repeat for more" in line)
    assert "<key=value>" in line and "list[" not in line  # typer's default named the Python type, <list[str]>


def test_models_baselines(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "120")
    tags = {"registered_by": "ada", "metrics": '{"accuracy":0.91}', "metadata": '{"dataset":"v1"}'}
    baseline = {"model_name": "hokusai-baseline-clf", "version": "2", "model_type": "clf", "run_id": "r1",
                "model_uri": "models:/hokusai-baseline-clf/2", "tags": tags, "created": False}  # fmt: skip
    answer(
        api,
        httpx.Response(200, json={"baselines": [baseline], "next_page_token": None}),
        httpx.Response(200, json={"baselines": [], "next_page_token": None}),
    )

    listed = run(["models", "baselines", "--type", "CLF"])
    empty = run(["models", "baselines"])
    bad = run(["models", "baselines", "--type", "no such type"])

    assert listed.exit_code == 0, listed.stderr
    assert '│ clf  │ 2       │ r1  │ ada           │ {"accuracy":0.91} │ {"dataset":"v1"} │' in listed.stdout
    assert dict(api.requests[0].url.params) == {"max_results": "100", "model_type": "clf"}
    assert empty.stdout == "No baselines found.\n"
    assert bad.exit_code == 2 and "Invalid value for '--type'" in bad.stderr  # a usage error
    assert len(api.requests) == 2  # a bad type is refused before anything is sent


def test_read_commands_print_json_lines_for_scripts(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json`: whole values on one line each, whatever the terminal's width (a table folded long ids when piped)."""
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "40")
    long_token = "T" * 64
    # A field a newer server sends is printed as it came: "as the API returns it", and this SDK does not know it.
    newer = {"added_later": {"by": "a newer server"}}
    listed_model = {key: value for key, value in MODEL.items() if key != "created"} | {"token_id": long_token} | newer
    baseline = {"model_name": "hokusai-baseline-clf", "version": "2", "model_type": "clf", "run_id": None,
                "model_uri": "models:/hokusai-baseline-clf/2", "tags": {}} | newer  # fmt: skip
    token = {"token_id": long_token, "model_name": "churn", "owner": "alice", "created_at": "2026-11-29T09:00:00Z",
             "model_carries_token": True} | newer  # fmt: skip
    answer(
        api,
        httpx.Response(200, json={"models": [listed_model, listed_model], "next_page_token": None}),
        httpx.Response(200, json=listed_model),
        httpx.Response(200, json={"baselines": [baseline], "next_page_token": None}),
        httpx.Response(200, json={"models": [], "next_page_token": None}),
        httpx.Response(200, json=token),
    )
    # `hokusai tokens` calls the API through cli._api, which builds the SDK's client when called.
    monkeypatch.setattr("hokusai._client.HokusaiClient", functools.partial(HokusaiClient, transport=api.transport))
    app = typer.Typer()
    for module in (models, tokens):
        module.register(app)

    listed = run(["models", "list", "--json"], app=app)
    shown = run(["models", "show", "churn", "1", "--json"], app=app)
    baselines = run(["models", "baselines", "--json"], app=app)
    empty = run(["models", "list", "--json"], app=app)
    held = run(["tokens", "show", long_token, "--json"], app=app)

    expected_model = listed_model | {"run_id": None}
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [expected_model, expected_model]
    assert [json.loads(line) for line in shown.stdout.splitlines()] == [expected_model]
    assert [json.loads(line) for line in baselines.stdout.splitlines()] == [baseline]
    assert (empty.exit_code, empty.stdout) == (0, "")  # JSON Lines of nothing, not "No tokenized models found."
    assert [json.loads(line) for line in held.stdout.splitlines()] == [token]


@pytest.mark.parametrize(("carried", "noted"), [(True, False), (None, False), (False, True)])
def test_tokens_show_notes_a_model_that_no_longer_carries_the_token(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, carried: bool | None, noted: bool
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    token = {"token_id": "CHURN", "model_name": "churn", "owner": "ada", "created_at": "2026-11-29T10:00:00Z"}
    answer(api, httpx.Response(200, json={**token, "model_carries_token": carried}))
    app = typer.Typer()
    tokens.register(app)
    shown = run(["tokens", "show", "churn"], app=app)
    assert shown.exit_code == 0, shown.stderr
    assert "model    churn" in shown.stdout
    assert ("no version of this model carries the token any more" in shown.stdout) is noted


def test_tokens_show_in_mock_mode_answers_from_the_local_store(
    monkeypatch: pytest.MonkeyPatch, mock_store: Path, no_network: None
) -> None:
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "1")
    app = typer.Typer()
    tokens.register(app)
    free = run(["tokens", "show", "mock1"], app=app)
    ModelRegistry().register_tokenized_model(
        model_uri="s3://bucket/m", model_name="churn", token_id="mock1", metric_name="accuracy", baseline_value=0.9
    )
    held = run(["tokens", "show", "mock1"], app=app)
    assert free.exit_code == 1
    assert free.stderr.startswith("Not found: 404 RESOURCE_DOES_NOT_EXIST from local: Token 'MOCK1' is not claimed.")
    assert held.exit_code == 0, held.stderr
    assert "model    churn" in held.stdout and "no version of this model carries" not in held.stdout


def test_api_commands_in_mock_mode_say_there_is_no_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mock mode needs no key; asking for one there (`hokusai tokens transfer`) sent users to `hokusai login`."""
    monkeypatch.setenv("HOKUSAI_MOCK_MODE", "1")
    app = typer.Typer()
    tokens.register(app)
    outcome = run(["tokens", "transfer", "MOCK1", "--to", "bob"], app=app)
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Configuration problem: HOKUSAI_MOCK_MODE is on, so there is no API to send to.")
    assert "hokusai login" not in outcome.stderr


def test_a_hokusai_home_that_is_a_file_is_one_line_naming_it(
    api: FakeAPI, hokusai_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError from the home left `login`, `logout` and `sync` as tracebacks (a probe)."""
    blocker = hokusai_home.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HOKUSAI_HOME", str(blocker))
    monkeypatch.setenv("HOKUSAI_API_URL", API)
    answer(api, httpx.Response(200, json=WHOAMI))  # login checks the key before it saves it
    for args, doing in [
        (["logout"], "Cannot remove"),
        (["login", "--api-url", API], "Cannot save the login to"),
        (["sync"], "Cannot read the outbox"),
    ]:
        if args == ["sync"]:
            monkeypatch.setenv("HOKUSAI_API_KEY", KEY)  # no login could be saved
        outcome = run(args, input=KEY + "\n")
        assert outcome.exit_code == 1, (args, outcome)
        assert f"Configuration problem: {doing} {blocker}/" in outcome.stderr, (args, outcome.stderr)
        assert "(HINT: set HOKUSAI_HOME to a writable directory)" in outcome.stderr
        assert "Traceback" not in outcome.stderr and KEY not in outcome.stderr


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("HOKUSAI_MOCK_MODE", "ture", "is not a boolean"),
        ("HOKUSAI_OPTIONAL_MLFLOW", "ture", "is not a boolean"),
        ("HOKUSAI_MOCK_MODE", "true", "there is no API to send to"),
    ],
)
def test_whoami_reads_the_mode_flags_as_every_command_does(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, flag: str, value: str, says: str
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    monkeypatch.setenv(flag, value)
    outcome = run(["whoami", "--api-url", API])
    assert outcome.exit_code == 1 and says in outcome.stderr, outcome
    assert api.requests == []


def test_version_prints_the_installed_version() -> None:
    outcome = run(["--version"], app=hokusai_app)
    assert (outcome.exit_code, outcome.stdout) == (0, f"hokusai {__version__}\n")


MALFORMED = "The API key is malformed: Hokusai keys are `hk_live_` followed by at least 32 letters and digits."


@pytest.mark.parametrize("typed", [KEY[:20] + "\r" + KEY[20:], KEY[:20] + "\x00" + KEY[20:], "garbage"])
def test_login_refuses_a_malformed_key_before_sending_or_saving_it(api: FakeAPI, typed: str) -> None:
    write_credentials(api_key=KEY[:8] + KEY[:7:-1], api_url=API)
    piped = run(["login"], input=typed + "\n")
    option = run(["login", "--key", typed])

    assert piped.exit_code == 1
    assert piped.stderr.splitlines()[0] == (
        "Hokusai API key (read from standard input): "
        f"Configuration problem: {MALFORMED} Check that it was copied whole, without quotes or spaces. (HINT: the key "
        "was given to `hokusai login`, which saved nothing: run it again with the whole key)"
    )
    assert option.exit_code == 2  # a bad option value, as click reports one
    assert "Invalid value for '--key'" in option.stderr
    assert MALFORMED in " ".join(option.stderr.replace("│", "").split())
    for outcome in (piped, option):
        assert typed.strip() not in outcome.stdout + outcome.stderr and KEY[:20] not in outcome.stdout + outcome.stderr
    assert api.requests == []
    assert read_credentials()["api_key"] == KEY[:8] + KEY[:7:-1]


def test_a_malformed_key_in_the_environment_is_refused_without_a_request_or_showing_it(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY[:20] + "\n" + KEY[20:])
    outcome = run(["whoami"])
    assert (outcome.exit_code, outcome.stderr.splitlines()[0]) == (
        1,
        f"Configuration problem: {MALFORMED} Check that it was copied whole, without quotes or spaces. (HINT: the key "
        "is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login)",
    )
    assert KEY[:12] not in outcome.stderr and api.requests == []


@pytest.mark.parametrize(
    ("command", "key_id", "says"),
    [
        ("revoke", "", "'' is not a key id: ids are 'key_' and 16 hex digits"),
        ("rotate", "a/b", "'a/b' is not a key id: ids are 'key_' and 16 hex digits"),
        ("revoke", "key_0123456789ABCDEF", "'key_0123456789ABCDEF' is not a key id"),
        ("rotate", "key_01234567\x0089abcdef", "'key_01234567\\x0089abcdef' is not a key id"),
        ("revoke", KEY, "this is an API key, not a key id (it is not shown here)"),
    ],
)
@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.usefixtures("no_network")
def test_a_key_id_the_server_cannot_have_made_is_a_usage_error_sent_nowhere(
    monkeypatch: pytest.MonkeyPatch, command: str, key_id: str, says: str, offline: bool
) -> None:
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    outcome = run(["keys", command, key_id, *(["--offline"] if offline else [])], app=hokusai_app)
    assert outcome.exit_code == 2
    assert "Invalid value for 'key_id'" in outcome.stderr
    assert says in " ".join(outcome.stderr.replace("│", "").split())
    assert KEY[:12] not in outcome.stderr and "check the API URL" not in outcome.stderr


@pytest.mark.parametrize(("command", "option"), [("register", "--tag"), ("baseline", "--metadata")])
def test_a_repeated_pair_key_is_a_usage_error(command: str, option: str, no_network: None) -> None:
    args = (
        ["--model-uri", "s3://b/m", "--name", "n", "--token-id", "T", "--metric", "m", "--baseline", "1"]
        if command == "register"
        else ["--type", "clf", "--run-id", "r1"]
    )
    outcome = run(["models", command, *args, option, "a=1", option, " a=2"])
    assert outcome.exit_code == 2
    assert f"Invalid value for {option}: 'a' is given twice; give each key once" in outcome.stderr


def test_baseline_is_passed_on_exactly_as_typed(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as a float, 1e-400 was 0.0 before any rule saw it; the baseline rule gets the exact value to judge."""
    monkeypatch.setenv("HOKUSAI_API_KEY", KEY)
    given: list[object] = []
    validate = _registry.validate_registration

    def recording(**fields: Any) -> Any:
        given.append(fields["baseline_value"])
        return validate(**fields)

    monkeypatch.setattr(_registry, "validate_registration", recording)
    answer(api, httpx.Response(201, json=MODEL))
    args = ["models", "register", "--model-uri", "s3://b/m", "--name", "n", "--token-id", "T", "--metric", "m"]
    run([*args, "--baseline", "1e-400"])
    run([*args, "--baseline", "0.1"])
    assert given == [Decimal("1e-400"), Decimal("0.1")] and all(type(value) is Decimal for value in given)


@pytest.mark.parametrize("typed", ["0.9_0", "1_000", "0x10", "\u0661.\u0669", "1e", "sNaN", ""])
def test_a_baseline_python_alone_reads_as_a_number_is_a_usage_error(typed: str, no_network: None) -> None:
    args = ["models", "register", "--model-uri", "s3://b/m", "--name", "n", "--token-id", "T", "--metric", "m"]
    outcome = run([*args, "--baseline", typed])
    assert outcome.exit_code == 2
    assert f"Invalid value for '--baseline': {typed!r} is not a number" in outcome.stderr


def test_keys_offline_against_a_database_that_cannot_be_reached_is_one_paragraph(tmp_path: Path) -> None:
    """The real program, against a closed port: SQLAlchemy's OperationalError was a 153-line traceback."""
    env = {
        **os.environ,
        "HOKUSAI_HOME": str(tmp_path),
        "HOKUSAI_DATA_DIR": str(tmp_path / "data"),
        "HOKUSAI_DATABASE_URL": "postgresql+psycopg://u:s3cretpw@127.0.0.1:1/x",
    }
    command = [sys.executable, "-m", "hokusai", "keys", "create", "--offline", "--owner", "zed"]

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result
    first, hint = result.stderr.splitlines()
    assert first.startswith(
        "Cannot reach the server: The Hokusai database postgresql+psycopg://u:***@127.0.0.1:1/x could not be reached ("
    )
    assert first.endswith(
        "(HINT: start the database, or point HOKUSAI_DATABASE_URL (or HOKUSAI_DATA_DIR) at the server's: --offline "
        "works on the server's database directly)"
    )
    assert hint == DEBUG_HINT and "s3cretpw" not in result.stderr and result.stdout == ""
