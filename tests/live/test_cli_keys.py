"""`hokusai keys …` against a running server (admin key) and offline against its database."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.platform import LivePlatform, base_env, hokusai_command

KEY_LINE = re.compile(r"hk_live_[A-Za-z0-9]{40}")


def _hokusai(platform: LivePlatform, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = base_env(platform.data_dir, HOKUSAI_API_URL=platform.url, COLUMNS="200")
    if key is not None:
        env["HOKUSAI_API_KEY"] = key
    return subprocess.run(hokusai_command(*args), env=env, capture_output=True, text=True, timeout=120)


def _whoami(platform: LivePlatform, key: str) -> dict[str, object]:
    return httpx.get(platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"}).json()


def _whoami_status(platform: LivePlatform, key: str) -> int:
    return httpx.get(platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"}).status_code


def test_quiet_create_prints_the_key_alone_remote_and_offline(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli")
    remote = _hokusai(platform, "keys", "create", "--owner", owner, "--scopes", "read,write", "--quiet",
                      key=platform.admin_key)  # fmt: skip
    offline = _hokusai(platform, "keys", "create", "--owner", owner, "--scopes", "read", "--quiet", "--offline")
    for result in (remote, offline):
        assert result.returncode == 0, result.stderr
        assert KEY_LINE.fullmatch(result.stdout.strip()), "only the key, on one line"
    assert _whoami(platform, remote.stdout.strip())["scopes"] == ["read", "write"]
    assert _whoami(platform, offline.stdout.strip())["owner"] == owner


def test_list_shows_prefixes_never_keys(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-list")
    key = platform.create_key(owner, "read")
    result = _hokusai(platform, "keys", "list", "--owner", owner, key=platform.admin_key)
    assert result.returncode == 0, result.stderr
    assert owner in result.stdout and key not in result.stdout and key[:8] in result.stdout
    # For scripts: one JSON object per key, every field, as the API returns it.
    as_json = _hokusai(platform, "keys", "list", "--owner", owner, "--json", key=platform.admin_key)
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (row["owner"], row["prefix"], row["scopes"], row["revoked_at"]) == (owner, key[:12], ["read"], None)
    assert key not in as_json.stdout


def test_key_names_print_as_typed_never_as_markup(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-markup")
    name = "ci [/deploy] [red]x[/red]"  # rich markup, and an unbalanced closing tag that made rich raise
    created = _hokusai(platform, "keys", "create", "--owner", owner, "--name", name, key=platform.admin_key)
    listed = _hokusai(platform, "keys", "list", "--owner", owner, key=platform.admin_key)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created key key_")
    assert f" ({name}) for {owner} with scopes read,write." in created.stdout  # the name as stored, as typed
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout


def test_key_ids_stay_whole_in_a_narrow_terminal(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-narrow")
    key_id = str(_whoami(platform, platform.create_key(owner, "read"))["key_id"])
    env = base_env(platform.data_dir, COLUMNS="80")
    result = subprocess.run(
        hokusai_command("keys", "list", "--offline", "--owner", owner),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if key_id in line]
    # The columns that fit stay whole, one line per key; the rest are named, not folded into slivers.
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:4] == [key_id, owner, "read", "active"]
    assert "need a terminal at least" in result.stdout


def test_revoke_and_rotate_through_the_cli(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-rot")
    key = platform.create_key(owner, "read,write")
    key_id = str(_whoami(platform, key)["key_id"])
    rotated = _hokusai(platform, "keys", "rotate", key_id, "--quiet", key=platform.admin_key)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert _whoami(platform, new_key)["owner"] == owner
    new_id = str(_whoami(platform, new_key)["key_id"])
    revoked = _hokusai(platform, "keys", "revoke", new_id, "--offline")
    assert revoked.returncode == 0, revoked.stderr
    # Offline revocation reaches the running server within its key cache TTL (2 s in the test platform).
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = httpx.get(
            platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {new_key}"}
        ).status_code
        time.sleep(0.25)
    assert status == 401

    # Revoking a dead key says so, offline and online, instead of claiming to have revoked it.
    again_offline = _hokusai(platform, "keys", "revoke", new_id, "--offline")
    assert again_offline.returncode == 1
    assert f"Key '{new_id}' was already revoked at " in again_offline.stderr, again_offline.stderr
    rotated_away = _hokusai(platform, "keys", "revoke", key_id, key=platform.admin_key)
    assert rotated_away.returncode == 1
    assert f"Key '{key_id}' was already revoked at " in rotated_away.stderr, rotated_away.stderr
    assert "Revoked" not in rotated_away.stdout + again_offline.stdout
    # Rotating one says when it died and what to do instead.
    for rotated_again in (
        _hokusai(platform, "keys", "rotate", key_id, key=platform.admin_key),
        _hokusai(platform, "keys", "rotate", new_id, "--offline"),
    ):
        assert rotated_again.returncode == 1
        assert " was already revoked at " in rotated_again.stderr, rotated_again.stderr
        assert "cannot be rotated. Create a new key instead: hokusai keys create --owner" in " ".join(
            rotated_again.stderr.split()
        )


def test_rotating_the_key_in_use_says_so_and_updates_the_saved_login(platform: LivePlatform, tmp_path: Path) -> None:
    """After `keys rotate` of their own key a user's next command failed with a 401 (new-user review)."""
    old_key = platform.create_key(platform.unique_owner("cli-own"), "read,write")
    old_id = str(_whoami(platform, old_key)["key_id"])
    home = {"HOKUSAI_HOME": str(tmp_path / "home")}
    env = base_env(platform.data_dir, HOKUSAI_API_URL=platform.url, COLUMNS="200", **home)
    logged_in = subprocess.run(hokusai_command("login", "--key", old_key), env=env, capture_output=True, text=True)
    assert logged_in.returncode == 0, logged_in.stderr
    env["MLFLOW_TRACKING_TOKEN"] = old_key  # as the README has users export it

    rotated = subprocess.run(hokusai_command("keys", "rotate", old_id), env=env, capture_output=True, text=True)
    whoami = subprocess.run(hokusai_command("whoami"), env=env, capture_output=True, text=True)

    assert rotated.returncode == 0, rotated.stderr
    assert f"Revoked {old_id}: it no longer works." in rotated.stdout
    assert "The rotated key was your saved login; the new key replaces it there" in rotated.stderr
    assert (
        "MLFLOW_TRACKING_TOKEN still holds the old key for the MLflow client: export the new key there too."
        in rotated.stderr
    )
    new_key = KEY_LINE.findall(rotated.stdout)[0]
    assert new_key in (tmp_path / "home" / "credentials").read_text()
    assert (tmp_path / "home" / "credentials").stat().st_mode & 0o777 == 0o600
    assert whoami.returncode == 0, whoami.stderr
    events = httpx.get(
        platform.url + "/api/v1/audit",
        params={"action": "key.rotate", "max_results": 1000},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    ).json()["events"]
    [event] = [event for event in events if event["target"] == old_id]
    assert event["detail"] == {"replaced_by": _whoami(platform, new_key)["key_id"]}


def test_revoking_the_key_in_use_says_so(platform: LivePlatform, tmp_path: Path) -> None:
    """Revoking one's own saved key left the next command to fail with a bare 401 (walkthrough, 2026-11-29)."""
    key = platform.create_key(platform.unique_owner("cli-revoke-own"), "read,write")
    key_id = str(_whoami(platform, key)["key_id"])
    other = platform.create_key(platform.unique_owner("cli-revoke-other"), "read,write")
    env = base_env(platform.data_dir, HOKUSAI_API_URL=platform.url, HOKUSAI_HOME=str(tmp_path / "home"))
    assert subprocess.run(hokusai_command("login", "--key", key), env=env, capture_output=True).returncode == 0
    env["MLFLOW_TRACKING_PASSWORD"] = key
    other_id = str(_whoami(platform, other)["key_id"])

    own = subprocess.run(hokusai_command("keys", "revoke", key_id), env=env, capture_output=True, text=True)
    foreign = _hokusai(platform, "keys", "revoke", other_id, key=other)

    assert own.returncode == 0, own.stderr
    assert own.stdout == f"Revoked {key_id}.\n"
    assert "That was the key this command used (your saved login); it no longer works" in own.stderr
    assert "MLFLOW_TRACKING_PASSWORD still holds the old key for the MLflow client: put another key" in own.stderr
    assert _whoami_status(platform, key) == 401
    assert (
        foreign.returncode == 0 and "That was the key this command used (the one in HOKUSAI_API_KEY)" in foreign.stderr
    )


def test_an_unknown_key_id_points_to_keys_list(platform: LivePlatform) -> None:
    result = _hokusai(platform, "keys", "revoke", "key_0000000000000000", key=platform.admin_key)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].endswith(
        "No API key with id 'key_0000000000000000'. (HINT: `hokusai keys list` shows the ids of your keys (`--all` "
        "every account's, for admins))"
    ), result.stderr
    # An id no key could have is the argument's fault, said before anything is sent.
    not_an_id = _hokusai(platform, "keys", "revoke", "key_nosuch", key=platform.admin_key)
    assert not_an_id.returncode == 2
    assert "'key_nosuch' is not a key id" in " ".join(not_an_id.stderr.replace("│", " ").split())


def test_remote_without_a_key_or_with_a_user_key_fails_clearly(platform: LivePlatform) -> None:
    no_key = _hokusai(platform, "keys", "list")
    assert no_key.returncode == 1 and "No Hokusai API key provided" in no_key.stderr
    assert "run `hokusai login` or set HOKUSAI_API_KEY" in no_key.stderr
    user = platform.create_key(platform.unique_owner("cli-user"), "read")
    refused = _hokusai(platform, "keys", "create", "--owner", "someone-else", key=user)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Permission denied: 403 PERMISSION_DENIED from hokusai-api (Request ID: req_")
    assert "needed to create a key for another owner ('someone-else'). Run `hokusai keys create` without" in (
        " ".join(refused.stderr.split())
    )


def test_a_user_lists_their_own_keys_and_only_admins_list_everyones(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-own")
    key = platform.create_key(owner, "read")
    other = platform.create_key(platform.unique_owner("cli-other"), "read")
    own = _hokusai(platform, "keys", "list", key=key)
    assert own.returncode == 0, own.stderr
    assert key[:12] in own.stdout and other[:12] not in own.stdout
    everyone = _hokusai(platform, "keys", "list", "--all", key=key)
    assert everyone.returncode == 1 and "Only admin keys may list other accounts' keys." in everyone.stderr
    admin = _hokusai(platform, "keys", "list", "--all", key=platform.admin_key)
    assert admin.returncode == 0 and key[:12] in admin.stdout and other[:12] in admin.stdout


def test_remote_commands_use_the_key_saved_by_login(platform: LivePlatform, tmp_path: Path) -> None:
    owner = platform.unique_owner("cli-login")
    key = platform.create_key(owner, "read")
    env = base_env(platform.data_dir, HOKUSAI_HOME=str(tmp_path), COLUMNS="200")
    login = subprocess.run(
        hokusai_command("login", "--key", key, "--api-url", platform.url),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    listed = subprocess.run(hokusai_command("keys", "list"), env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert owner in listed.stdout and key[:12] in listed.stdout


def test_bad_scopes_are_a_usage_error(platform: LivePlatform) -> None:
    result = _hokusai(platform, "keys", "create", "--scopes", "root", "--offline")
    assert result.returncode == 2 and "scopes" in result.stderr


def test_offline_create_without_owner_uses_the_admin_owner_setting_from_dot_env(
    platform: LivePlatform, tmp_path: Path
) -> None:
    admin_owner = platform.unique_owner("ops")
    (tmp_path / ".env").write_text(f"HOKUSAI_ADMIN_OWNER={admin_owner}\n")
    env = base_env(platform.data_dir, COLUMNS="200")

    created = subprocess.run(
        hokusai_command("keys", "create", "--scopes", "read", "--quiet", "--offline"),
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip

    assert created.returncode == 0, created.stderr
    assert _whoami(platform, created.stdout.strip())["owner"] == admin_owner


def test_offline_refuses_a_directory_without_platform_data_unless_it_is_named(tmp_path: Path) -> None:
    """Run elsewhere, `--offline` would peg a key to a new, empty database that no server reads."""
    env = {k: v for k, v in base_env(tmp_path).items() if k != "HOKUSAI_DATA_DIR"}
    stray = tmp_path / "elsewhere"
    stray.mkdir()

    refused = subprocess.run(
        hokusai_command("keys", "create", "--offline", "--owner", "dave"),
        env=env, cwd=stray, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    named = subprocess.run(
        hokusai_command("keys", "create", "--offline", "--owner", "dave", "--quiet"),
        env={**env, "HOKUSAI_DATA_DIR": str(tmp_path / "new-platform")}, cwd=stray,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert refused.returncode == 1
    assert f"No Hokusai platform here: {stray / '.hokusai'} holds no platform data." in refused.stderr
    assert "set HOKUSAI_DATA_DIR" in refused.stderr
    assert not (stray / ".hokusai").exists() and KEY_LINE.search(refused.stdout + refused.stderr) is None
    assert named.returncode == 0, named.stderr
    assert KEY_LINE.fullmatch(named.stdout.strip()) and (tmp_path / "new-platform" / "secrets.json").exists()


def test_a_value_only_the_server_refuses_is_a_usage_error_naming_the_option(platform: LivePlatform) -> None:
    # The server's 400 names its field; the CLI reports it against the option typed, as click does (exit code 2).
    cases = [
        (("keys", "create", "--owner", "usage-bounds", "--expires-in-days", "99999999"), "--expires-in-days"),
        (("keys", "create", "--owner", "usage-bounds", "--name", "n" * 5000), "--name"),
        (("audit", "--actor", "bad actor!"), "--actor"),
        (("audit", "--action", "token.claimed"), "--action"),  # a filter no event could ever match
    ]
    for args, option in cases:
        result = _hokusai(platform, *args, key=platform.admin_key)
        assert result.returncode == 2, (args[:3], result.returncode, result.stderr)
        assert f"Invalid value for '{option}'" in result.stderr, result.stderr


def test_offline_key_changes_are_in_the_audit_log(platform: LivePlatform) -> None:
    owner = platform.unique_owner("cli-audit")
    created = _hokusai(platform, "keys", "create", "--owner", owner, "--quiet", "--offline")
    assert created.returncode == 0, created.stderr
    key_id = next(row["id"] for row in _admin_keys(platform, owner))
    rotated = _hokusai(platform, "keys", "rotate", key_id, "--quiet", "--offline")
    assert rotated.returncode == 0, rotated.stderr
    new_id = next(row["id"] for row in _admin_keys(platform, owner) if row["id"] != key_id)
    assert _hokusai(platform, "keys", "revoke", new_id, "--offline").returncode == 0

    events = httpx.get(
        platform.url + "/api/v1/audit",
        params={"actor": "offline-cli", "max_results": 1000},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    ).json()["events"]
    trail = [(event["action"], event["target"]) for event in events if event["target"] in (key_id, new_id)]
    assert sorted(trail) == [("key.create", key_id), ("key.revoke", new_id), ("key.rotate", key_id)]
    assert all("os_user" in event["detail"] for event in events)


def _admin_keys(platform: LivePlatform, owner: str) -> list[dict[str, str]]:
    listed = httpx.get(
        platform.url + "/api/v1/keys",
        params={"owner": owner},
        headers={"Authorization": f"Bearer {platform.admin_key}"},
    )
    assert listed.status_code == 200, listed.text
    return list(listed.json()["keys"])
