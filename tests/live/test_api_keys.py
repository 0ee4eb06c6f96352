"""API keys against the live platform: the three header forms, bad keys, the REST lifecycle and scopes."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import httpx
import pytest

from hokusai.server.request_head import NOT_HTTP_MESSAGE
from hokusai.server.upstream import basic_authorization
from tests.support.platform import LivePlatform
from tests.support.raw_http import get_request, raw_request

BAD_KEYS = {
    "empty": "",
    "truncated": "hk_live_abc",
    "wrong-prefix": "sk_live_" + "a" * 40,
    "10kb": "hk_live_" + "a" * 10_240,
    "non-ascii": "hk_live_" + "ü" * 40,
    "nul-bytes": "hk_live_" + "a" * 20 + "\x00" * 20,
    "unknown": "hk_live_" + "Z" * 40,
}


@pytest.fixture(scope="module")
def user_key(platform: LivePlatform) -> str:
    return platform.create_key(platform.unique_owner("keys-user"), "read,write")


@pytest.mark.parametrize("form", ["bearer", "x-api-key", "basic"])
def test_all_three_header_forms_authenticate(platform: LivePlatform, user_key: str, form: str) -> None:
    headers = {
        "bearer": {"Authorization": f"Bearer {user_key}"},
        "x-api-key": {"X-API-Key": user_key},
        "basic": {"Authorization": basic_authorization("anyone", user_key)},
    }[form]
    response = httpx.get(platform.url + "/api/v1/auth/whoami", headers=headers)
    assert response.status_code == 200
    assert response.json()["scopes"] == ["read", "write"]


@pytest.mark.parametrize("name", list(BAD_KEYS))
@pytest.mark.parametrize("form", ["bearer", "x-api-key", "basic"])
def test_bad_keys_get_401_with_the_envelope(platform: LivePlatform, name: str, form: str) -> None:
    key = BAD_KEYS[name]
    header = {
        "bearer": (b"Authorization", b"Bearer " + key.encode()),
        "x-api-key": (b"X-API-Key", key.encode()),
        "basic": (b"Authorization", basic_authorization("anyone", key).encode()),
    }[form]
    # Raw bytes: well-behaved clients refuse NULs and trailing spaces, attackers do not.
    response = raw_request(platform.port, get_request("/api/v1/auth/whoami", [header]))
    if response.status == 400:
        # uvicorn's HTTP parser rejected the header before the app saw it: the envelope, never a 500.
        assert name == "nul-bytes", response
        assert response.json() == {
            "error_code": "BAD_REQUEST",
            "message": NOT_HTTP_MESSAGE,
            "layer": "hokusai-api",
        }
        return
    assert response.status == 401, response
    body = response.json()
    assert isinstance(body, dict)
    assert body["error_code"] == "UNAUTHENTICATED" and body["layer"] == "hokusai-api"
    assert not key or key not in body["message"]


def test_messages_say_what_is_wrong_and_what_to_do(platform: LivePlatform) -> None:
    def message(headers: dict[str, str]) -> str:
        return str(httpx.get(platform.url + "/api/v1/keys", headers=headers).json()["message"])

    assert "No API key was sent" in message({})
    assert "malformed" in message({"Authorization": "Bearer hk_live_abc"})
    assert "not known" in message({"Authorization": "Bearer " + BAD_KEYS["unknown"]})
    assert "could not be read" in message({"Authorization": "Token abc"})


def test_401_offers_bearer_and_basic_each_on_its_own_line(platform: LivePlatform) -> None:
    for path in ("/api/v1/keys", "/api/mlflow/"):  # the API, and the MLflow UI a browser opens
        response = httpx.get(platform.url + path)
        assert response.status_code == 401
        assert response.headers.get_list("www-authenticate") == ["Bearer", 'Basic realm="hokusai"']


def test_key_in_query_string_is_refused_even_when_valid(platform: LivePlatform, user_key: str) -> None:
    response = httpx.get(platform.url + "/api/v1/auth/whoami", params={"api_key": user_key})
    assert response.status_code == 401
    assert "not accepted in the URL" in response.json()["message"]
    both = httpx.get(
        platform.url + "/api/v1/auth/whoami", params={"api_key": user_key}, headers={"X-API-Key": user_key}
    )
    assert both.status_code == 401


def test_two_different_keys_in_one_request_are_refused_not_guessed_between(
    platform: LivePlatform, user_key: str
) -> None:
    other = platform.create_key(platform.unique_owner("keys-other"), "read")
    whoami = platform.url + "/api/v1/auth/whoami"
    mixed = [
        [(b"Authorization", f"Bearer {user_key}".encode()), (b"X-API-Key", other.encode())],
        [
            (b"Authorization", f"Bearer {user_key}".encode()),
            (b"Authorization", basic_authorization("anyone", other).encode()),
        ],
        [(b"X-API-Key", user_key.encode()), (b"X-API-Key", other.encode())],
    ]
    for headers in mixed:
        refused = raw_request(platform.port, get_request("/api/v1/auth/whoami", headers))
        assert refused.status == 400, refused.body
        assert json.loads(refused.body)["message"].startswith("The request carries two different API keys")
        assert other.encode() not in refused.body and user_key.encode() not in refused.body
    # The same key twice names one caller: accepted, in the API and the gateway alike.
    same = {"Authorization": f"Bearer {user_key}", "X-API-Key": user_key}
    assert httpx.get(whoami, headers=same).status_code == 200
    assert httpx.get(
        platform.url + "/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1", headers=same
    ).is_success
    gateway = raw_request(
        platform.port, get_request("/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1", mixed[0])
    )
    assert gateway.status == 400


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("HEAD", "/api/v1/keys", "GET, POST"),
        ("OPTIONS", "/api/v1/keys", "GET, POST"),
        ("PUT", "/api/v1/tokens/SOMETOKEN", "DELETE, GET"),
        ("DELETE", "/health", "GET, HEAD"),
    ],
)
def test_a_method_a_path_does_not_take_is_a_405_naming_every_method_it_does(
    platform: LivePlatform, user_key: str, method: str, path: str, allowed: str
) -> None:
    with platform.client(user_key) as client:
        answer = client.request(method, path)

    assert (answer.status_code, answer.headers["allow"]) == (405, allowed)
    if method != "HEAD":
        assert answer.json()["message"] == f"{method} is not allowed here; this path takes {allowed}."


def test_a_keys_lifetime_is_a_json_integer(platform: LivePlatform, user_key: str) -> None:
    with platform.client(user_key) as client:
        for lifetime in (True, "5", 5.0):
            refused = client.post("/api/v1/keys", json={"expires_in_days": lifetime})
            assert refused.status_code == 400, refused.text
            assert refused.json()["field"] == "expires_in_days"


def test_an_unknown_key_id_is_quoted_back_at_most_64_characters_long(platform: LivePlatform, user_key: str) -> None:
    with platform.client(user_key) as client:
        answer = client.delete("/api/v1/keys/key_" + "f" * 10_000)

    assert (answer.status_code, answer.json()["message"]) == (404, f"No API key with id 'key_{'f' * 60}…'.")


def test_rest_lifecycle_create_list_rotate_revoke(platform: LivePlatform) -> None:
    owner = platform.unique_owner("lifecycle")
    with platform.client(platform.admin_key) as admin:
        created = admin.post("/api/v1/keys", json={"owner": owner, "scopes": ["read"], "name": "nb"})
        assert created.status_code == 201
        first = created.json()
        assert first["key"].startswith("hk_live_") and first["prefix"] == first["key"][:12]
        listed = admin.get("/api/v1/keys", params={"owner": owner}).json()["keys"]
        assert [item["id"] for item in listed] == [first["id"]] and "key" not in listed[0]
    with platform.client(first["key"]) as user:
        assert user.get("/api/v1/auth/whoami").json()["owner"] == owner
        rotated = user.post(f"/api/v1/keys/{first['id']}/rotate")
        assert rotated.status_code == 201
    second = rotated.json()
    with platform.client(second["key"]) as user:
        assert user.get("/api/v1/auth/whoami").status_code == 200
        assert user.post(f"/api/v1/keys/{first['id']}/rotate").status_code == 409
        assert user.delete(f"/api/v1/keys/{second['id']}").status_code == 200
    with platform.client(first["key"]) as old, platform.client(second["key"]) as revoked:
        rotated_away, revoked_outright = old.get("/api/v1/auth/whoami"), revoked.get("/api/v1/auth/whoami")
    assert (rotated_away.status_code, revoked_outright.status_code) == (401, 401)
    assert "revoked when it was rotated: use the key that replaced it" in rotated_away.json()["message"]
    assert revoked_outright.json()["message"] == (
        "This API key was revoked. Create a new one with another valid key of yours (`hokusai keys create`), or ask "
        "an admin for one."
    )
    with platform.client(platform.admin_key) as admin:
        again = admin.delete(f"/api/v1/keys/{second['id']}")
        trail = admin.get("/api/v1/audit", params={"action": "key.revoke", "max_results": 100})
    assert (again.status_code, again.json()["error_code"], again.json()["layer"]) == (
        409,
        "INVALID_STATE",
        "hokusai-api",
    )
    assert again.json()["message"].startswith(f"Key '{second['id']}' was already revoked at ")
    assert again.json()["message"].endswith(" UTC; nothing changed.")
    assert trail.status_code == 200, trail.text
    # The refused repeat leaves no second entry (the events are newest first; this test's are among the latest).
    assert [event["target"] for event in trail.json()["events"]].count(second["id"]) == 1


def test_users_manage_only_their_own_keys(platform: LivePlatform) -> None:
    alice = platform.create_key(platform.unique_owner("alice"), "read,write")
    bob_owner = platform.unique_owner("bob")
    bob = platform.create_key(bob_owner, "read,write")
    with platform.client(bob) as client:
        bob_key_id = client.get("/api/v1/auth/whoami").json()["key_id"]
    with platform.client(alice) as client:
        assert client.delete(f"/api/v1/keys/{bob_key_id}").status_code == 404
        assert client.get("/api/v1/keys", params={"owner": bob_owner}).status_code == 403
        for_bob = client.post("/api/v1/keys", json={"owner": bob_owner})
        assert (for_bob.status_code, for_bob.json()["error_code"]) == (403, "PERMISSION_DENIED")
        assert for_bob.json()["message"] == (
            f"This key lacks the 'admin' scope needed to create a key for another owner ('{bob_owner}'). Run "
            "`hokusai keys create` without `--owner` (or send no owner) to create a key for yourself, or ask an admin "
            "to create this one."
        )
        escalation = client.post("/api/v1/keys", json={"scopes": ["admin"]})
        assert escalation.status_code == 403 and escalation.json()["error_code"] == "PERMISSION_DENIED"
        assert "yours holds read,write: ask for those (`--scopes read,write`" in escalation.json()["message"]
        own = client.post("/api/v1/keys", json={"scopes": ["read"], "name": "read-only"})
        assert own.status_code == 201
    with platform.client(platform.admin_key) as admin:
        twin = admin.post("/api/v1/keys", json={"owner": bob_owner.upper(), "scopes": ["read"]})
    assert (twin.status_code, twin.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), twin.text
    assert twin.json()["message"].startswith(f"owner: '{bob_owner.upper()}' differs from the existing account")


def test_expired_key_gets_401_saying_so(platform: LivePlatform) -> None:
    owner = platform.unique_owner("expiring")
    key = platform.create_key(owner, "read", expires_in_days=1)
    with platform.client(key) as client:
        key_id = client.get("/api/v1/auth/whoami").json()["key_id"]
    # Move the expiry into the past behind the server's back, as the clock eventually would.
    with closing(sqlite3.connect(platform.data_dir / "hokusai.db")) as database, database:
        database.execute("UPDATE api_keys SET expires_at = '2000-01-01 00:00:00' WHERE id = ?", (key_id,))
    deadline = time.monotonic() + 10  # the fixture's key cache TTL is 2 s
    response = httpx.get(platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"})
    while response.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = httpx.get(platform.url + "/api/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert response.json()["message"] == (
        "This API key has expired. Create a new one with another valid key of yours (`hokusai keys create`), or "
        "ask an admin for one."
    )
    # A rotation keeps the key's expiry: an expired key is refused, not replaced by a key born expired.
    with platform.client(platform.admin_key) as admin:
        rotated = admin.post(f"/api/v1/keys/{key_id}/rotate")
        listed = admin.get("/api/v1/keys", params={"owner": owner})
    assert (rotated.status_code, rotated.json()["error_code"]) == (409, "INVALID_STATE"), rotated.text
    assert (
        "cannot be rotated" in rotated.json()["message"] and "hokusai keys create --owner" in rotated.json()["message"]
    )
    assert [(row["id"], row["revoked_at"]) for row in listed.json()["keys"]] == [(key_id, None)]


def test_a_key_cannot_outlive_the_non_admin_key_that_creates_it(platform: LivePlatform) -> None:
    """A key given for a week must not be able to create one that never expires."""
    weekly = platform.create_key(platform.unique_owner("weekly"), "read,write", expires_in_days=7)
    with platform.client(weekly) as client:
        limit = client.get("/api/v1/keys").json()["keys"][0]["expires_at"]
        unbounded = client.post("/api/v1/keys", json={"name": "no expiry asked"})
        longer = client.post("/api/v1/keys", json={"name": "a month", "expires_in_days": 30})
        shorter = client.post("/api/v1/keys", json={"name": "three days", "expires_in_days": 3})

    assert unbounded.status_code == 201 and unbounded.json()["expires_at"] == limit
    assert (longer.status_code, longer.json()["error_code"]) == (403, "PERMISSION_DENIED")
    assert longer.json()["message"].startswith("A key cannot outlive the key that creates it, and yours expires at ")
    assert (
        "leave out `--expires-in-days` (`expires_in_days`) for a key that expires with it, ask for at most 6 days "
        "(`--expires-in-days 6`), or ask an admin for a longer-lived key." in longer.json()["message"]
    )
    assert shorter.status_code == 201 and shorter.json()["expires_at"] < limit
    with platform.client(platform.admin_key) as admin:
        forever = admin.post("/api/v1/keys", json={"owner": platform.unique_owner("admin-made"), "scopes": ["read"]})
    assert forever.status_code == 201 and forever.json()["expires_at"] is None  # admins are not bound


def test_a_key_revokes_or_rotates_only_keys_it_could_have_created(platform: LivePlatform) -> None:
    """A read-only or short-lived key of an owner must not turn the owner's stronger keys into a secret of its own,
    nor revoke them; every key may rotate or revoke itself (found by a security review, 2026-11-28)."""
    owner = platform.create_key(platform.unique_owner("keyring"), "read,write")
    with platform.client(owner) as client:
        writer_id = client.get("/api/v1/auth/whoami").json()["key_id"]
        reader = client.post("/api/v1/keys", json={"name": "dashboard", "scopes": ["read"]}).json()
        weekly = client.post("/api/v1/keys", json={"name": "ci", "expires_in_days": 7}).json()
    with platform.client(reader["key"]) as as_reader:
        rotated_up = as_reader.post(f"/api/v1/keys/{writer_id}/rotate")
        revoked_up = as_reader.delete(f"/api/v1/keys/{writer_id}")
    with platform.client(weekly["key"]) as as_weekly:
        outlived = as_weekly.post(f"/api/v1/keys/{writer_id}/rotate")
        rotated_down = as_weekly.post(f"/api/v1/keys/{reader['id']}/rotate")  # the read key never expires either
    with platform.client(owner) as client:
        rotated_reader = client.post(f"/api/v1/keys/{reader['id']}/rotate")
        still_working = client.get("/api/v1/auth/whoami")
    with platform.client(weekly["key"]) as as_weekly:
        itself = as_weekly.post(f"/api/v1/keys/{weekly['id']}/rotate")

    for refused in (rotated_up, revoked_up):
        assert (refused.status_code, refused.json()["error_code"]) == (403, "PERMISSION_DENIED"), refused.text
        assert f"key '{writer_id}': it has scopes yours lacks (write)" in refused.json()["message"]
    for refused in (outlived, rotated_down):
        assert (refused.status_code, refused.json()["error_code"]) == (403, "PERMISSION_DENIED"), refused.text
        assert "it outlives yours" in refused.json()["message"]
    assert still_working.status_code == 200  # nothing the refused calls asked for happened
    assert rotated_reader.status_code == 201 and rotated_reader.json()["scopes"] == ["read"]
    assert itself.status_code == 201 and itself.json()["expires_at"] == weekly["expires_at"]


@pytest.mark.parametrize(
    "name",
    ["\x1b[2J\x1b[31mEVIL\r\n", "a\ud800", "admin\u202etxt.exe", "C1\x9b31m", "zero\u200bwidth"],
    ids=["escape-sequence", "surrogate", "right-to-left-override", "c1-control", "zero-width-space"],
)
def test_a_key_name_is_printable_text(platform: LivePlatform, user_key: str, name: str) -> None:
    """Names are shown in the admin's `hokusai keys list`: an escape sequence would rewrite their terminal."""
    with platform.client(user_key) as client:
        refused = client.post(
            "/api/v1/keys", content=json.dumps({"name": name}), headers={"Content-Type": "application/json"}
        )

    assert (refused.status_code, refused.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), refused.text
    assert "name" in refused.json()["message"]


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/api/v1/keys/%2F"), ("GET", "/api/v1/keys/")])
def test_a_path_one_slash_off_a_route_is_a_404_envelope_not_a_redirect(
    platform: LivePlatform, user_key: str, method: str, path: str
) -> None:
    with platform.client(user_key) as client:
        answer = client.request(method, path)

    assert (answer.status_code, answer.json()["error_code"], answer.json()["layer"]) == (
        404,
        "ENDPOINT_NOT_FOUND",
        "hokusai-api",
    ), answer.text
    assert answer.json()["message"] == (
        "No such endpoint. MLflow's API and web UI live under /api/mlflow/, the Hokusai API under /api/v1 (its "
        "reference: /docs)."
    )


@pytest.mark.parametrize(
    "path", ["/api/v1/models/tokenized/a%0Ab/versions/1", "/api/v1/models/tokenized/%0A/versions/latest"]
)
def test_a_newline_in_a_path_is_a_400_naming_the_control_character_not_a_404(
    platform: LivePlatform, user_key: str, path: str
) -> None:
    with platform.client(user_key) as client:
        answer = client.get(path)

    assert (answer.status_code, answer.json()["error_code"], answer.json()["layer"]) == (
        400,
        "INVALID_PARAMETER_VALUE",
        "hokusai-api",
    ), answer.text
    assert "control character" in answer.json()["message"]
