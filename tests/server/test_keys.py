"""The key store on SQLite and on a real PostgreSQL: lifecycle, keyed hashing, cache, expiry, last-used batching."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from hokusai.errors import HokusaiValidationError
from hokusai.server import keys as keys_module
from hokusai.server.db import Database
from hokusai.server.keys import (
    KEY_PREFIX,
    REASON_EXPIRED,
    REASON_MALFORMED,
    REASON_REVOKED,
    REASON_ROTATED,
    REASON_UNKNOWN,
    IssuedKey,
    KeyAlreadyRevoked,
    KeyExpired,
    KeyRejected,
    KeyStore,
    generate_key,
)
from hokusai.server.models import ApiKey, utcnow
from hokusai.validation import looks_like_key, parse_scopes

PEPPER = b"test-pepper"


@pytest.fixture
def store(database: Database) -> KeyStore:
    return KeyStore(database, PEPPER, cache_ttl=60.0)


def _reason(store: KeyStore, key: str) -> str:
    with pytest.raises(KeyRejected) as caught:
        store.verify(key)
    return caught.value.reason


def test_generated_keys_have_the_documented_format() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"hk_live_[A-Za-z0-9]{40}", key)
        assert looks_like_key(key)


def test_only_a_keyed_hash_and_a_short_prefix_are_stored(store: KeyStore, database: Database) -> None:
    issued = store.create(owner="alice", name="laptop", scopes=parse_scopes("read,write"))
    with database.session() as session:
        row = session.scalars(select(ApiKey)).one()
    assert row.key_hash == hmac.new(PEPPER, issued.secret.encode(), hashlib.sha256).hexdigest()
    assert row.prefix == issued.secret[: len(KEY_PREFIX) + 4]
    stored_text = " ".join(str(value) for value in vars(row).values())
    assert issued.secret not in stored_text
    assert issued.secret not in repr(issued)


def test_lifecycle_create_verify_revoke(store: KeyStore) -> None:
    issued = store.create(owner="alice", name="ci", scopes=parse_scopes("read"))
    principal = store.verify(issued.secret)
    assert (principal.owner, principal.scopes, principal.key_id) == ("alice", frozenset({"read"}), issued.record.id)
    assert store.verify_cached(issued.secret) == principal
    store.revoke(issued.record.id)
    assert store.verify_cached(issued.secret) is None  # revocation drops the cache entry at once
    assert _reason(store, issued.secret) == REASON_REVOKED
    revoked_at = store.get(issued.record.id).revoked_at  # type: ignore[union-attr]
    with pytest.raises(KeyAlreadyRevoked, match=r"was already revoked at .* UTC; nothing changed"):
        store.revoke(issued.record.id)
    assert store.get(issued.record.id).revoked_at == revoked_at  # type: ignore[union-attr]
    assert store.revoke("key_nosuch") is None


def test_a_lookup_that_raced_a_revocation_is_not_cached(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verification read the key before the revocation committed; it must not cache what it read."""
    issued = store.create(owner="rita", name="ci", scopes=parse_scopes("read"))
    principal_of = keys_module.principal_of

    def revoked_meanwhile(record: ApiKey) -> object:
        monkeypatch.setattr(keys_module, "principal_of", principal_of)  # only this once
        store.revoke(issued.record.id)  # commits and clears the cache between the read and the insert
        return principal_of(record)

    monkeypatch.setattr(keys_module, "principal_of", revoked_meanwhile)
    raced = store.verify(issued.secret)

    assert raced.key_id == issued.record.id  # the request that raced it went through, as it began first
    assert store.verify_cached(issued.secret) is None
    assert _reason(store, issued.secret) == REASON_REVOKED


def test_rotate_issues_a_replacement_and_revokes_the_old_key(store: KeyStore) -> None:
    old = store.create(owner="bob", name="svc", scopes=parse_scopes("read,write"), expires_at=utcnow() + timedelta(1))
    new = store.rotate(old.record.id)
    assert new is not None and new.secret != old.secret
    assert store.verify(new.secret).owner == "bob"
    assert new.record.scopes == old.record.scopes and new.record.expires_at == old.record.expires_at
    assert _reason(store, old.secret) == REASON_ROTATED  # its 401 points to the replacement
    assert store.get(old.record.id).replaced_by == new.record.id  # type: ignore[union-attr]
    with pytest.raises(KeyAlreadyRevoked) as again:
        store.rotate(old.record.id)
    revoked_at = store.get(old.record.id).revoked_at  # type: ignore[union-attr]
    assert str(again.value) == (
        f"Key '{old.record.id}' was already revoked at {revoked_at:%Y-%m-%d %H:%M:%S} UTC; it cannot be rotated. "
        f"Create a new key instead: hokusai keys create --owner bob --scopes {old.record.scopes} [--expires-in-days N]."
    )
    assert [record.replaced_by for record in store.list(owner="bob")].count(new.record.id) == 1  # nothing else issued
    assert store.rotate("key_unknown") is None


def test_an_expired_key_is_not_rotated_into_a_key_born_expired(store: KeyStore, database: Database) -> None:
    issued = store.create(owner="carol", name="ci", scopes=parse_scopes("read"), expires_at=utcnow() + timedelta(1))
    with database.session() as session:  # the clock moving past the expiry
        session.get(ApiKey, issued.record.id).expires_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]

    with pytest.raises(KeyExpired) as refused:
        store.rotate(issued.record.id)

    assert "cannot be rotated" in str(refused.value) and "hokusai keys create --owner carol" in str(refused.value)
    unchanged = store.get(issued.record.id)
    assert unchanged is not None and unchanged.revoked_at is None and unchanged.replaced_by is None
    assert [record.id for record in store.list(owner="carol")] == [issued.record.id]  # no successor was stored


def test_two_rotations_at_once_issue_one_replacement(store: KeyStore) -> None:
    for attempt in range(5):
        issued = store.create(owner="rosa", name=f"r{attempt}", scopes=parse_scopes("read"))
        start = threading.Barrier(2)

        def rotate(key_id: str = issued.record.id, start: threading.Barrier = start) -> object:
            start.wait()
            try:
                return store.rotate(key_id)
            except KeyAlreadyRevoked as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: rotate(), range(2)))

        replacements = [result for result in results if isinstance(result, IssuedKey)]
        assert len(replacements) == 1, results
        assert [type(result) for result in results].count(KeyAlreadyRevoked) == 1, results
        assert store.get(issued.record.id).replaced_by == replacements[0].record.id  # type: ignore[union-attr]


def test_an_owner_differing_from_an_account_only_in_case_is_refused(store: KeyStore) -> None:
    store.create(owner="alice", name="first", scopes=parse_scopes("read"))

    with pytest.raises(HokusaiValidationError) as twin:
        store.create(owner="Alice", name="twin", scopes=parse_scopes("read"))

    assert twin.value.field == "owner" and "Use 'alice'" in twin.value.problem
    assert [record.owner for record in store.list()] == ["alice"]  # nothing stored
    assert store.create(owner="alice", name="second", scopes=parse_scopes("read")).record.owner == "alice"


def test_twins_made_before_the_rule_keep_rotating_and_adding_keys(store: KeyStore, database: Database) -> None:
    first = store.create(owner="bob", name="first", scopes=parse_scopes("read"))
    with database.session() as session:  # an account from before the rule, written behind the store's back
        twin = ApiKey(id="key_legacytwin0000", key_hash="0" * 64, prefix="hk_live_xxxx", name="old", owner="Bob",
                      scopes="read", created_at=utcnow())  # fmt: skip
        session.add(twin)

    rotated = store.rotate(first.record.id)

    assert rotated is not None and rotated.record.owner == "bob"
    assert store.create(owner="Bob", name="more", scopes=parse_scopes("read")).record.owner == "Bob"


def test_expired_keys_are_refused(store: KeyStore) -> None:
    issued = store.create(
        owner="carol", name="short", scopes=parse_scopes("read"), expires_at=utcnow() + timedelta(seconds=1)
    )
    assert store.verify(issued.secret).owner == "carol"
    time.sleep(1.1)
    assert _reason(store, issued.secret) == REASON_EXPIRED
    with pytest.raises(KeyRejected):
        store.verify_cached(issued.secret)  # a cached entry does not outlive the key


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "hk_live_",
        "hk_live_short",
        "hk_test_" + "a" * 40,
        "sk_live_" + "a" * 40,
        "hk_live_" + "a" * 10_000,
        "hk_live_" + "é" * 40,
        "hk_live_" + "a" * 20 + "\x00" + "a" * 19,
        " hk_live_" + "a" * 40,
    ],
    ids=["empty", "prefix-only", "truncated", "wrong-env-prefix", "wrong-prefix", "10kb", "non-ascii", "nul", "space"],
)
def test_malformed_keys_never_reach_the_database(store: KeyStore, candidate: str) -> None:
    assert _reason(store, candidate) == REASON_MALFORMED


def test_unknown_and_other_pepper_keys_are_refused(store: KeyStore, database: Database) -> None:
    assert _reason(store, generate_key()) == REASON_UNKNOWN
    issued = store.create(owner="dan", name="x", scopes=parse_scopes("read"))
    other_server = KeyStore(database, b"another-pepper", cache_ttl=60.0)
    assert _reason(other_server, issued.secret) == REASON_UNKNOWN


def test_revocation_elsewhere_is_seen_after_the_cache_ttl(database: Database) -> None:
    api = KeyStore(database, PEPPER, cache_ttl=0.5)
    cli = KeyStore(database, PEPPER, cache_ttl=10.0)
    issued = api.create(owner="erin", name="x", scopes=parse_scopes("read"))
    api.verify(issued.secret)
    cli.revoke(issued.record.id)
    assert api.verify_cached(issued.secret) is not None  # still cached in the other process
    time.sleep(0.6)
    assert _reason(api, issued.secret) == REASON_REVOKED


def test_last_used_is_batched_not_written_per_request(store: KeyStore) -> None:
    issued = store.create(owner="fay", name="x", scopes=parse_scopes("read"))
    for _ in range(50):
        store.verify(issued.secret)
    assert store.get(issued.record.id).last_used_at is None  # type: ignore[union-attr]
    assert store.flush_last_used() == 1
    assert store.get(issued.record.id).last_used_at is not None  # type: ignore[union-attr]
    assert store.flush_last_used() == 0


def test_listing_is_per_owner(store: KeyStore) -> None:
    store.create(owner="gus", name="a", scopes=parse_scopes("read"))
    store.create(owner="gus", name="b", scopes=parse_scopes("read"))
    store.create(owner="hal", name="c", scopes=parse_scopes("read"))
    assert [record.name for record in store.list(owner="gus")] == ["a", "b"]
    assert len(store.list()) == 3


@pytest.mark.parametrize("scopes", ["", "read,root", "ADMIN,superuser"])
def test_unknown_scopes_are_rejected(scopes: str) -> None:
    with pytest.raises(ValueError, match="must be one or more of read, write, admin"):
        parse_scopes(scopes)


def test_scopes_imply_lower_ones(store: KeyStore) -> None:
    issued = store.create(owner="ivy", name="x", scopes=parse_scopes("admin"))
    principal = store.verify(issued.secret)
    assert principal.has_scope("read") and principal.has_scope("write") and principal.is_admin
