"""`hokusai keys …` against a running server (admin key) and offline against its database."""

from __future__ import annotations

import re
import subprocess
import time

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


def test_remote_without_a_key_or_with_a_user_key_fails_clearly(platform: LivePlatform) -> None:
    no_key = _hokusai(platform, "keys", "list")
    assert no_key.returncode == 1 and "HOKUSAI_API_KEY" in no_key.stderr
    user = platform.create_key(platform.unique_owner("cli-user"), "read")
    refused = _hokusai(platform, "keys", "create", "--owner", "someone-else", key=user)
    assert refused.returncode == 1 and "Error 403" in refused.stderr


def test_bad_scopes_are_a_usage_error(platform: LivePlatform) -> None:
    result = _hokusai(platform, "keys", "create", "--scopes", "root", "--offline")
    assert result.returncode == 2 and "scopes" in result.stderr
