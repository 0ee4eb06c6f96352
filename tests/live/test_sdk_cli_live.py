"""The `hokusai` CLI's SDK commands against the live platform: login, whoami, auth status, models, tokens, audit.

Each command runs in a fresh interpreter with a private HOME/HOKUSAI_HOME and only the Hokusai variables it needs.
"""

from __future__ import annotations

import configparser
import re
import stat
from pathlib import Path

import pytest

from tests.support.platform import LivePlatform
from tests.support.sdk_live import (
    LoggedRun,
    User,
    hokusai_cli,
    log_run,
    minimal_env,
    new_user,
    token_holder,
    unique,
)

pytestmark = pytest.mark.live

UNKNOWN_KEY = "hk_live_" + "Y" * 40
DEBUG_HINT = "Set HOKUSAI_DEBUG=1 for the full traceback."
REQUEST_ID = r"\(Request ID: [^)]+\)"


@pytest.fixture(scope="module")
def carol(platform: LivePlatform) -> User:
    return new_user(platform, "cli-carol")


@pytest.fixture(scope="module")
def run(platform: LivePlatform, carol: User) -> LoggedRun:
    return log_run(platform, carol)


def _table(stdout: str) -> dict[str, str]:
    """The rows of a key/value table (two columns separated by at least two spaces); a title line is skipped."""
    cells = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in stdout.splitlines() if line.strip()]
    return {cell[0]: cell[1] for cell in cells if len(cell) == 2}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_login_validates_the_key_and_saves_it_owner_only(platform: LivePlatform, carol: User, tmp_path: Path) -> None:
    env = minimal_env(tmp_path, HOKUSAI_API_URL=platform.url)
    credentials = tmp_path / ".hokusai" / "credentials"

    logged_in = hokusai_cli(env, "login", "--key", carol.key)

    assert logged_in.returncode == 0, logged_in.stderr
    assert logged_in.stdout.splitlines() == [
        f"Logged in to {platform.url} as {carol.owner} (key {carol.key[:12]}…, scopes: read, write).",
        f"Saved to {credentials} (readable by you only).",
    ]
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    saved = configparser.ConfigParser(interpolation=None)
    saved.read(credentials)
    assert dict(saved["default"]) == {"api_key": carol.key, "api_url": platform.url}

    # A wrong key is refused by the server before anything is written: the working key stays.
    refused = hokusai_cli(env, "login", "--key", UNKNOWN_KEY)

    assert refused.returncode == 1
    first, hint = _error_lines(refused.stderr)
    assert re.fullmatch(
        rf"Authentication failed: 401 UNAUTHENTICATED from hokusai-api {REQUEST_ID}: This API key is not known to "
        r"this server\. Check the key sent \(HOKUSAI_API_KEY, MLFLOW_TRACKING_TOKEN or the saved login\)\. "
        rf"\(HINT: nothing was saved; check that the key was copied whole and that {re.escape(platform.url)} is the "
        r"server that issued it\)",
        first,
    ), first
    assert hint == DEBUG_HINT
    saved.read(credentials)
    assert saved["default"]["api_key"] == carol.key


def test_whoami_and_auth_status_use_the_saved_login(platform: LivePlatform, carol: User, tmp_path: Path) -> None:
    env = minimal_env(tmp_path)  # no HOKUSAI_API_KEY and no HOKUSAI_API_URL: both come from the saved file
    assert hokusai_cli({**env, "HOKUSAI_API_URL": platform.url}, "login", "--key", carol.key).returncode == 0

    whoami = hokusai_cli(env, "whoami")
    status = hokusai_cli(env, "auth", "status")

    assert whoami.returncode == 0, whoami.stderr
    assert _table(whoami.stdout) == {
        "owner": carol.owner,
        "key": f"{carol.key[:12]}… (from file)",
        "scopes": "read, write",
        "expires": "never",
        "api": platform.url,
    }
    assert status.returncode == 0, status.stdout + status.stderr
    # The saved key reaches MLflow only through hokusai.setup(): a note, since the stock client logs locally here.
    assert status.stdout.rstrip().endswith("No problems found, but read the note above.")
    assert "the stock MLflow client in other processes" in _words(status.stdout)
    report = _table(status.stdout)
    assert report == report | {
        "mode": "remote",
        "api url": platform.url,
        "key": f"{carol.key[:12]}…",
        "reachable": "yes",
        "key accepted": "yes",
        "owner": carol.owner,
        "scopes": "read, write",
        "mlflow tracking uri": f"{platform.tracking_uri} (hokusai-default)",
        "mlflow credential": "bearer (from the Hokusai key (file))",
        "mlflow accepted": "yes",
        "outbox": "0 pending",
    }
    # Pointing the stock client at Hokusai without a credential is refused, and the status says so and how to fix it.
    exported = {**env, "MLFLOW_TRACKING_URI": platform.tracking_uri}
    refused = platform.run_python("import mlflow; mlflow.search_experiments()", exported)
    flagged = hokusai_cli(exported, "auth", "status")
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr
    assert flagged.returncode == 1 and f"export MLFLOW_TRACKING_TOKEN=<your key, prefix {carol.key[:12]}…>" in _words(
        flagged.stdout
    )


def _words(output: str) -> str:
    """Rich table output with its borders and line breaks taken out, for phrases that a narrow table wraps."""
    return " ".join(output.replace("│", " ").split())


def test_auth_status_with_a_wrong_key_exits_1_and_prints_the_fix(platform: LivePlatform, tmp_path: Path) -> None:
    env = minimal_env(tmp_path, HOKUSAI_API_KEY=UNKNOWN_KEY, HOKUSAI_API_URL=platform.url)

    status = hokusai_cli(env, "auth", "status")
    whoami = hokusai_cli(env, "whoami")

    assert status.returncode == 1, status.stdout + status.stderr
    assert (_table(status.stdout)["key accepted"], _table(status.stdout)["mlflow accepted"]) == ("no", "not checked")
    problem = f"The API rejected the key {UNKNOWN_KEY[:12]}…: This API key is not known to this server."
    assert problem in status.stdout
    fix = f"the key {UNKNOWN_KEY[:12]}… is HOKUSAI_API_KEY's: set it to a valid key, or unset it to use the saved login"
    assert fix in status.stdout
    assert whoami.returncode == 1
    assert _error_lines(whoami.stderr)[0].startswith("Authentication failed: 401 UNAUTHENTICATED from hokusai-api")
    assert _error_lines(whoami.stderr)[0].endswith(f"(HINT: {fix})")
    nobody = hokusai_cli(minimal_env(tmp_path / "nobody", HOKUSAI_API_URL=platform.url), "whoami")
    assert (nobody.returncode, nobody.stderr.strip()) == (1, "Not logged in. Run `hokusai login` first.")


def test_models_register_list_and_show(platform: LivePlatform, carol: User, run: LoggedRun, tmp_path: Path) -> None:
    env = minimal_env(tmp_path, HOKUSAI_API_KEY=carol.key, HOKUSAI_API_URL=platform.url)
    model_name, token = unique("cli-model"), unique("cli-tok")
    register = ["models", "register", "--model-uri", f"runs:/{run.run_id}/model", "--name", model_name,
                "--token-id", token.lower(), "--metric", "accuracy", "--baseline", "0.93",
                "--tag", "team=cli"]  # fmt: skip

    first = hokusai_cli(env, *register)
    again = hokusai_cli(env, *register)
    listed = hokusai_cli(env, "models", "list", "--token-id", token)
    mine = hokusai_cli(env, "models", "list", "--owner", carol.owner)
    nobodys = hokusai_cli(env, "models", "list", "--owner", unique("nobody"))
    latest = hokusai_cli(env, "models", "show", model_name)
    numbered = hokusai_cli(env, "models", "show", model_name, "1")
    missing = hokusai_cli(env, "models", "show", model_name, "7")

    tail = f"{model_name} version 1 for token {token.upper()} (models:/{model_name}/1)."
    assert (first.returncode, first.stdout.strip(), first.stderr) == (0, f"Registered {tail}", "")
    assert (again.returncode, again.stdout.strip()) == (0, f"Already registered: {tail}"), again.stderr
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if model_name in line]
    assert re.split(r"\s*│\s*", row.strip(" │")) == [
        model_name, "1", token.upper(), "accuracy", "0.93", f"models:/{run.model_id}",
    ]  # fmt: skip
    assert mine.returncode == 0 and model_name in mine.stdout, mine.stderr
    # Who holds a token is the holder's and the admins' to know.
    assert (nobodys.returncode, nobodys.stdout) == (1, ""), nobodys.stderr
    assert "Only admin keys may list the models of another owner's tokens" in nobodys.stderr
    assert latest.returncode == 0 and latest.stdout == numbered.stdout, latest.stderr + numbered.stderr
    assert latest.stdout.splitlines()[0].strip() == f"{model_name} version 1"
    shown = _table(latest.stdout)
    assert {name: shown.get(name) for name in ("token", "metric", "baseline", "model uri", "source", "run")} == {
        "token": token.upper(),
        "metric": "accuracy",
        "baseline": "0.93",
        "model uri": f"models:/{model_name}/1",
        "source": f"models:/{run.model_id}",
        "run": run.run_id,
    }
    assert (shown["tag team"], shown["tag hokusai_token_id"]) == ("cli", token.upper())
    assert missing.returncode == 1 and _error_lines(missing.stderr)[0].startswith("Not found: 404 ")
    assert token_holder(platform, token.upper())["owner"] == carol.owner


def test_models_register_refusals_are_one_line_with_the_fix(
    platform: LivePlatform, carol: User, run: LoggedRun, tmp_path: Path
) -> None:
    reader = new_user(platform, "cli-reader", scopes="read")
    holder_model, token = unique("cli-holder"), unique("cli-held")
    common = ["--model-uri", f"runs:/{run.run_id}/model", "--token-id", token, "--metric", "accuracy",
              "--baseline", "0.93"]  # fmt: skip
    as_carol = minimal_env(tmp_path / "carol", HOKUSAI_API_KEY=carol.key, HOKUSAI_API_URL=platform.url)
    as_reader = minimal_env(tmp_path / "reader", HOKUSAI_API_KEY=reader.key, HOKUSAI_API_URL=platform.url)
    assert hokusai_cli(as_carol, "models", "register", "--name", holder_model, *common).returncode == 0

    read_only = hokusai_cli(as_reader, "models", "register", "--name", unique("cli-ro"), *common)
    conflict = hokusai_cli(as_carol, "models", "register", "--name", unique("cli-other"), *common)

    assert read_only.returncode == 1
    assert re.fullmatch(
        rf"Permission denied: 403 PERMISSION_DENIED from hokusai-api {REQUEST_ID}: This key lacks the 'write' scope "
        r"needed for POST /api/v1/models/tokenized\. Use a key with the 'write' scope: a key of yours that has it can "
        r"create one \(`hokusai keys create --scopes read,write`\), or ask an admin for one\.",
        _error_lines(read_only.stderr)[0],
    ), read_only.stderr
    assert conflict.returncode == 1
    claimed = token.upper()
    assert re.fullmatch(
        rf"Conflict: 409 TOKEN_ALREADY_CLAIMED from hokusai-api {REQUEST_ID}: Token '{claimed}' is already claimed "
        rf"by your model '{holder_model}'\. A token belongs to one model: register new versions under "
        rf"'{holder_model}', or choose another token id\.",
        _error_lines(conflict.stderr)[0],
    ), conflict.stderr
    assert _error_lines(conflict.stderr)[1:] == [DEBUG_HINT]


def test_models_baseline_registers_the_next_version_of_the_types_model(
    platform: LivePlatform, carol: User, run: LoggedRun, tmp_path: Path
) -> None:
    env = minimal_env(tmp_path, HOKUSAI_API_KEY=carol.key, HOKUSAI_API_URL=platform.url)
    model_type = unique("cli-type").lower()
    name = f"hokusai-baseline-{model_type}"

    first = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id,
                        "--metadata", "dataset=v1", "--metadata", "rows=4")  # fmt: skip
    again = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id)
    changed = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id,
                          "--metadata", "dataset=v2")  # fmt: skip
    second = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id,
                         "--artifact-path", "challenger")  # fmt: skip
    missing = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id,
                          "--artifact-path", "nothing-here")  # fmt: skip
    malformed = hokusai_cli(env, "models", "baseline", "--type", model_type, "--run-id", run.run_id,
                            "--metadata", "no-equals-sign")  # fmt: skip

    assert (first.returncode, first.stdout.strip()) == (
        0, f"Registered baseline {name} version 1 (models:/{name}/1).",
    ), first.stderr  # fmt: skip
    assert again.stdout.strip() == f"Already registered: baseline {name} version 1 (models:/{name}/1).", again.stderr
    assert (again.stderr, changed.stdout) == ("", again.stdout)
    assert changed.stderr.startswith(f"Warning: Model '{name}' version 1 is already this run's model as a baseline")
    assert second.stdout.strip() == f"Registered baseline {name} version 2 (models:/{name}/2).", second.stderr
    assert missing.returncode == 1 and "no model at 'nothing-here'" in missing.stderr
    assert malformed.returncode == 2 and "expected KEY=VALUE" in malformed.stderr
    assert "HokusaiRegistrationWarning" not in changed.stderr  # the command says it once, in its own words

    listed = hokusai_cli({**env, "COLUMNS": "200"}, "models", "baselines", "--type", model_type.upper())
    assert listed.returncode == 0, listed.stderr
    for version in ("1", "2"):
        assert re.search(rf"│ {model_type} +│ {version} +│ {run.run_id} │ {carol.owner} +│", listed.stdout), (
            listed.stdout
        )


def test_tokens_show_transfer_release_and_the_audit_trail(
    platform: LivePlatform, carol: User, run: LoggedRun, tmp_path: Path
) -> None:
    dave = new_user(platform, "cli-dave")
    as_carol = minimal_env(tmp_path / "carol", HOKUSAI_API_KEY=carol.key, HOKUSAI_API_URL=platform.url)
    as_admin = minimal_env(tmp_path / "admin", HOKUSAI_API_KEY=platform.admin_key, HOKUSAI_API_URL=platform.url)
    model_name, token = unique("cli-tokens"), unique("cli-tr")
    register = ["models", "register", "--model-uri", f"runs:/{run.run_id}/model", "--name", model_name,
                "--token-id", token, "--metric", "accuracy", "--baseline", "0.93"]  # fmt: skip
    assert hokusai_cli(as_carol, *register).returncode == 0
    claimed = token.upper()

    shown = hokusai_cli(as_carol, "tokens", "show", token.lower())
    refused = hokusai_cli(as_carol, "tokens", "transfer", token, "--to", dave.owner)
    moved = hokusai_cli(as_admin, "tokens", "transfer", token, "--to", dave.owner)
    unconfirmed = hokusai_cli(as_admin, "tokens", "release", token, answer="n\n")
    still_held = token_holder(platform, claimed)["owner"]
    released = hokusai_cli(as_admin, "tokens", "release", token, "--yes")
    gone = hokusai_cli(as_carol, "tokens", "show", token)
    bad = hokusai_cli(as_carol, "tokens", "show", "bad/token")
    trail = hokusai_cli(as_admin, "audit", "--action", "token.transfer", "--limit", "200")
    not_admin = hokusai_cli(as_carol, "audit")

    assert shown.returncode == 0, shown.stderr
    assert {k: v for k, v in _table(shown.stdout).items() if k != "claimed"} == {
        "model": model_name,
        "owner": carol.owner,
    }
    assert refused.returncode == 1 and "lacks the 'admin' scope" in refused.stderr
    assert moved.stdout.strip() == f"Token {claimed} now belongs to {dave.owner} (model {model_name}).", moved.stderr
    assert (unconfirmed.returncode, unconfirmed.stderr.strip()) == (1, "Aborted.") and still_held == dave.owner
    assert released.stdout.strip() == f"Released token {claimed}; it was held by model {model_name}.", released.stderr
    assert gone.returncode == 1
    assert _error_lines(gone.stderr)[0].endswith(
        "(HINT: no model holds this token: check its spelling, or claim it by registering a model with it)"
    )
    assert bad.returncode == 2  # a usage error, named by the argument typed
    assert "Invalid value for 'TOKEN_ID': may contain only" in " ".join(bad.stderr.replace("│", " ").split())
    assert trail.returncode == 0, trail.stderr
    [row] = [line for line in trail.stdout.splitlines() if claimed in line]
    assert re.split(r"\s*│\s*", row.strip(" │"))[1:5] == ["admin", "token.transfer", claimed, "ok"]
    assert not_admin.returncode == 1 and "lacks the 'admin' scope" in not_admin.stderr
