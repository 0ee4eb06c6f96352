"""API keys: generation, keyed hashing, storage and the cached verification hot path."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from hokusai.errors import HokusaiValidationError
from hokusai.server.db import Database
from hokusai.server.models import ApiKey, utcnow
from hokusai.validation import (
    KEY_ID_HEX_DIGITS,
    KEY_ID_PREFIX,
    KEY_PREFIX,
    SCOPES,
    key_prefix,
    looks_like_key,
    looks_like_key_id,
    serialize_scopes,
)

KEY_RANDOM_LENGTH = 40
_BASE62 = string.ascii_letters + string.digits
_CACHE_MAX_ENTRIES = 100_000
# SCOPES is in rank order: admin implies write, and write implies read.
_SCOPE_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


class KeyRejected(Exception):
    """Verification failed; `reason` is one of the REASON_* constants and safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeyAlreadyRevoked(Exception):
    """Revoking or rotating a key that is revoked already: said with when, so the caller learns the key was already
    dead (and, when rotating, what to do instead); nothing changes."""

    def __init__(self, key_id: str, revoked_at: datetime, *, instead: str = "nothing changed") -> None:
        super().__init__(f"Key '{key_id}' was already revoked at {revoked_at:%Y-%m-%d %H:%M:%S} UTC; {instead}.")
        self.revoked_at = revoked_at

    @classmethod
    def on_rotation(cls, record: ApiKey) -> KeyAlreadyRevoked:
        assert record.revoked_at is not None
        instead = f"it cannot be rotated. Create a new key instead: {_create_command(record)}"
        return cls(record.id, record.revoked_at, instead=instead)


class KeyExpired(Exception):
    """Rotating a key that has expired: a rotation keeps the key's expiry, so its successor would be dead too."""

    def __init__(self, record: ApiKey, expires_at: datetime) -> None:
        super().__init__(
            f"Key '{record.id}' expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC and cannot be rotated: a rotation keeps "
            f"the key's expiry. Create a new key instead: {_create_command(record)}."
        )


def _create_command(record: ApiKey) -> str:
    """The command that makes a key like `record`, which the caller can run with a key holding its scopes."""
    return f"hokusai keys create --owner {record.owner} --scopes {record.scopes} [--expires-in-days N]"


REASON_MALFORMED = "malformed"
REASON_UNKNOWN = "unknown"
REASON_REVOKED = "revoked"
REASON_ROTATED = "rotated"
REASON_EXPIRED = "expired"


@dataclass(frozen=True)
class Principal:
    """Who a verified key belongs to, and what it may do."""

    key_id: str
    owner: str
    scopes: frozenset[str]
    prefix: str
    expires_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @cached_property
    def _rank(self) -> int:
        # Worked out once per key: a cached principal serves every request its key makes.
        return max((_SCOPE_RANK[held] for held in self.scopes if held in _SCOPE_RANK), default=-1)

    def has_scope(self, scope: str) -> bool:
        # A scope list never has to spell out the lower ones (see _SCOPE_RANK).
        return self._rank >= _SCOPE_RANK[scope]


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: `secret` is the only copy of the full key and is shown once."""

    record: ApiKey
    secret: str

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(id={self.record.id!r}, secret='**********')"


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(KEY_RANDOM_LENGTH))


def principal_of(record: ApiKey) -> Principal:
    return Principal(
        key_id=record.id,
        owner=record.owner,
        scopes=frozenset(record.scopes.split(",")),
        prefix=record.prefix,
        expires_at=record.expires_at,
    )


@dataclass
class _CacheEntry:
    principal: Principal | None
    reason: str | None
    fetched_at: float

    @property
    def expires_at_epoch(self) -> float | None:
        expires_at = self.principal.expires_at if self.principal else None
        return None if expires_at is None else expires_at.timestamp()


class KeyStore:
    """Keys in the database, looked up by keyed hash; verification results are cached for `cache_ttl` seconds.

    Revocation through this store takes effect at once; a revocation made elsewhere (another process, the
    offline CLI) is seen within `cache_ttl`.
    """

    def __init__(self, database: Database, pepper: bytes, *, cache_ttl: float) -> None:
        self._database = database
        self._pepper = pepper
        self._cache_ttl = cache_ttl
        # Cached verifications are found by a keyed BLAKE2b of the key under a per-process random key: on a
        # request's path the OpenSSL HMAC of the stored hash took 20 us (cProfile), BLAKE2b 6 us. The stored hash is
        # computed only to read the database, on a miss.
        self._cache_salt = secrets.token_bytes(32)
        self._cache: dict[bytes, _CacheEntry] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()
        # Bumped by every revocation: a lookup that read the database before one must not cache what it read.
        self._revocations = 0

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(database={self._database!r}, cache_ttl={self._cache_ttl})"

    def hash_key(self, key: str) -> str:
        return hmac.digest(self._pepper, key.encode(), "sha256").hex()

    # --- verification -----------------------------------------------------------------------------------

    def verify_cached(self, key: str) -> Principal | None:
        """The hot path: a hash and a dict lookup. `None` means "not cached, call `verify`"."""
        if not looks_like_key(key):
            raise KeyRejected(REASON_MALFORMED)
        entry = self._cache.get(self._cache_key(key))
        if entry is None or time.monotonic() - entry.fetched_at > self._cache_ttl:
            return None
        return self._accept(entry)

    def verify(self, key: str) -> Principal:
        """Verify with a database lookup on a cache miss (blocking: call it from a worker thread)."""
        if not looks_like_key(key):
            raise KeyRejected(REASON_MALFORMED)
        cache_key = self._cache_key(key)
        entry = self._cache.get(cache_key)
        if entry is None or time.monotonic() - entry.fetched_at > self._cache_ttl:
            entry = self._load(key, cache_key)
        return self._accept(entry)

    def _cache_key(self, key: str) -> bytes:
        return hashlib.blake2b(key.encode(), key=self._cache_salt).digest()

    def _accept(self, entry: _CacheEntry) -> Principal:
        if entry.principal is None:
            raise KeyRejected(entry.reason or REASON_UNKNOWN)
        now = time.time()
        if entry.expires_at_epoch is not None and entry.expires_at_epoch <= now:
            raise KeyRejected(REASON_EXPIRED)
        # Recorded in memory and flushed in batches: no database write per request.
        self._last_used[entry.principal.key_id] = now
        return entry.principal

    def _load(self, key: str, cache_key: bytes) -> _CacheEntry:
        revocations_before = self._revocations
        digest = self.hash_key(key)
        with self._database.session() as session:
            record = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        # The stored hash matched by an index; compare again in constant time so timing reveals nothing.
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            entry = _CacheEntry(None, REASON_UNKNOWN, time.monotonic())
        elif record.revoked_at is not None:
            reason = REASON_ROTATED if record.replaced_by else REASON_REVOKED
            entry = _CacheEntry(None, reason, time.monotonic())
        else:
            entry = _CacheEntry(principal_of(record), None, time.monotonic())
        with self._lock:
            if self._revocations != revocations_before:
                return entry  # this request raced a revocation; the next one reads the database again
            if len(self._cache) >= _CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[cache_key] = entry
        return entry

    def flush_last_used(self) -> int:
        """Write the batched last-used times; returns how many keys were updated."""
        with self._lock:
            pending, self._last_used = self._last_used, {}
        if not pending:
            return 0
        try:
            with self._database.session() as session:
                for key_id, used_at in pending.items():
                    stamp = datetime.fromtimestamp(used_at, UTC)
                    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=stamp))
        except SQLAlchemyError:
            with self._lock:  # kept for the next flush: the database may be back by then
                for key_id, used_at in pending.items():
                    self._last_used[key_id] = max(used_at, self._last_used.get(key_id, used_at))
            raise
        return len(pending)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._revocations += 1
            self._cache = {
                cache_key: entry
                for cache_key, entry in self._cache.items()
                if entry.principal is None or entry.principal.key_id != key_id
            }

    # --- lifecycle ----------------------------------------------------------------------------------------

    def create(
        self,
        *,
        owner: str,
        name: str,
        scopes: frozenset[str],
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        issued = self._new_key(owner=owner, name=name, scopes=serialize_scopes(scopes), expires_at=expires_at)
        with self._database.session() as session:
            self._refuse_a_case_twin(session, owner)
            session.add(issued.record)
        return issued

    def _new_key(self, *, owner: str, name: str, scopes: str, expires_at: datetime | None) -> IssuedKey:
        secret = generate_key()
        record = ApiKey(
            id=KEY_ID_PREFIX + secrets.token_hex(KEY_ID_HEX_DIGITS // 2),
            key_hash=self.hash_key(secret),
            prefix=key_prefix(secret),
            name=name,
            owner=owner,
            scopes=scopes,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        return IssuedKey(record=record, secret=secret)

    def case_twin(self, owner: str) -> str | None:
        """The existing account whose name differs from `owner` only in case, if there is one."""
        with self._database.session() as session:
            return self._case_twin(session, owner)

    @staticmethod
    def _case_twin(session: Session, owner: str) -> str | None:
        query = select(ApiKey.owner).where(func.lower(ApiKey.owner) == owner.lower(), ApiKey.owner != owner)
        return session.scalar(query.limit(1))

    @classmethod
    def _refuse_a_case_twin(cls, session: Session, owner: str) -> None:
        """Refuse a new `owner` when an account differs from it only in case: MLflow would hold two unrelated users.

        An existing account is never refused (twins made before this rule keep rotating and adding keys).
        """
        if session.scalar(select(ApiKey.id).where(ApiKey.owner == owner).limit(1)) is not None:
            return
        twin = cls._case_twin(session, owner)
        if twin is not None:
            raise HokusaiValidationError(
                "owner",
                f"'{owner}' differs from the existing account '{twin}' only in case; account names are MLflow "
                f"usernames, where case counts, so '{owner}' would be a second, unrelated user. Use '{twin}'.",
            )

    def get(self, key_id: str) -> ApiKey | None:
        if not looks_like_key_id(key_id):
            # No key has such an id; and PostgreSQL refuses text holding NUL with an error (a 500) instead of no row.
            return None
        with self._database.session() as session:
            return session.get(ApiKey, key_id)

    def list(self, *, owner: str | None = None) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if owner is not None:
            query = query.where(ApiKey.owner == owner)
        with self._database.session() as session:
            return list(session.scalars(query))

    def count(self) -> int:
        with self._database.session() as session:
            return session.scalar(select(func.count()).select_from(ApiKey)) or 0

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke the key; `None` when there is none, `KeyAlreadyRevoked` (nothing changes) when it is revoked."""
        with self._database.session() as session:
            record = session.get(ApiKey, key_id)
            if record is None:
                return None
            if record.revoked_at is not None:
                raise KeyAlreadyRevoked(key_id, record.revoked_at)
            record.revoked_at = utcnow()
        self._forget(key_id)
        return record

    def rotate(self, key_id: str) -> IssuedKey | None:
        """Issue a key with the same owner, name, scopes and remaining lifetime, and revoke the old one.

        One transaction that starts by revoking the old key, only if no one has yet: of two rotations at once, one
        issues the replacement and the other finds the key revoked (`KeyAlreadyRevoked`), never a second working key.
        An expired key is left as it is (`KeyExpired`): its successor would be born expired. `None`: no such key.
        """
        with self._database.session() as session:
            revoked = session.scalar(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .returning(ApiKey.id)
            )
            old = session.get(ApiKey, key_id)
            if old is None:
                return None
            if revoked is None:
                raise KeyAlreadyRevoked.on_rotation(old)
            if old.expires_at is not None and old.expires_at <= utcnow():
                raise KeyExpired(old, old.expires_at)  # rolls the revocation back
            issued = self._new_key(owner=old.owner, name=old.name, scopes=old.scopes, expires_at=old.expires_at)
            session.add(issued.record)
            session.flush()  # the replacement exists before the old key names it
            old.replaced_by = issued.record.id
        self._forget(key_id)
        return issued


def expiry_from_days(days: int | None) -> datetime | None:
    return None if days is None else utcnow() + timedelta(days=days)
