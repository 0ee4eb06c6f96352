"""The auth store's hot reads (user row, grants), cached across MLflow's workers; part of `hokusai.mlflow_auth`.

For every request MLflow reads the caller's user row (`store.get_user`, two to four times: for the admin flag, then
for the id) and the caller's grants (`store.list_grants`). Each read opens a fresh SQLAlchemy session (three
PRAGMAs, a query, a commit): 1.5 ms for a user, 2.5 ms for the grants, measured on SQLite here. On the native
artifact routes, which otherwise never touch a database, those reads were most of MLflow's cost per request.

Both answers change only through the store's own write methods (users, grants, roles, permissions), so each write
method is wrapped to drop every cached answer once it returns, before the response that caused it is sent. A
write method is any public one that is not a read by name, so a write MLflow adds later is covered without a
change here. MLflow's workers are processes: dropping means bumping a counter in a file all of them map
(`HOKUSAI_MLFLOW_STORE_CACHE` names it; the Hokusai server sets it, and without it nothing is cached), and every
lookup compares it first. Edits made behind MLflow's back (another program writing the auth database) are seen
within `STORE_CACHE_SECONDS`. Failed reads (an unknown user) raise and are never cached.
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

STORE_CACHE_SECONDS = 10.0
_GENERATION_BYTES = 8
STORE_CACHE_MAX_ENTRIES = 10_000
_STORE_READ_PREFIXES = ("get_", "list_", "has_", "is_", "authenticate_")

_Value = TypeVar("_Value")


class LocalGeneration:
    """A change counter for one process."""

    def __init__(self) -> None:
        self._value = 0

    def value(self) -> int:
        return self._value

    def bump(self) -> None:
        self._value += 1


class SharedGeneration:
    """A change counter in a small file that every MLflow worker maps into memory: a bump in one is seen by all.

    Reading is a memory load, so every cache lookup can afford it; bumping takes an exclusive `flock`.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < _GENERATION_BYTES:
            os.ftruncate(self._fd, _GENERATION_BYTES)
        self._map = mmap.mmap(self._fd, _GENERATION_BYTES)

    def value(self) -> int:
        return int.from_bytes(self._map[:_GENERATION_BYTES], "little")

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._map[:_GENERATION_BYTES] = ((self.value() + 1) % 2**64).to_bytes(_GENERATION_BYTES, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class StoreReadCache:
    """Answers kept per key for `ttl` seconds, until the generation changes (`clear()` here, or in another worker).

    A read stores its answer only if the generation did not change while it ran, so a read that began before a
    write cannot keep its stale answer after it.
    """

    def __init__(
        self,
        *,
        generation: LocalGeneration | SharedGeneration | None = None,
        ttl: float = STORE_CACHE_SECONDS,
        max_entries: int = STORE_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._generation = generation or LocalGeneration()
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._seen = self._generation.value()

    def get(self, key: Hashable, load: Callable[[], _Value]) -> _Value:
        generation = self._generation.value()
        if generation != self._seen:
            with self._lock:
                self._entries.clear()
                self._seen = generation
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        with self._lock:
            if self._generation.value() == generation == self._seen:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
                self._entries[key] = (now + self._ttl, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._generation.bump()
            self._entries.clear()


def _clearing_after(method: Callable[..., Any], cache: StoreReadCache) -> Callable[..., Any]:
    @functools.wraps(method)
    def writing(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            cache.clear()

    return writing


def store_write_methods(store: object) -> list[str]:
    """The store's public methods that may change a user or a grant: every one not named as a read."""
    return [
        name
        for name in dir(type(store))
        if not name.startswith("_")
        and not name.startswith(_STORE_READ_PREFIXES)
        and callable(getattr(type(store), name))
    ]


def cache_store_reads(store: Any, cache: StoreReadCache | None = None) -> StoreReadCache:
    """Serve `store.get_user` and `store.list_grants` from `cache`, and clear it on every write to `store`."""
    cache = cache or StoreReadCache()
    for name in store_write_methods(store):
        setattr(store, name, _clearing_after(getattr(store, name), cache))
    get_user = store.get_user
    list_grants = store.list_grants

    def cached_get_user(username: str) -> Any:
        return cache.get(("user", username), lambda: get_user(username))

    def cached_list_grants(user_id: int, workspace: str, resource_types: Any) -> list[Any]:
        types = frozenset(resource_types)
        # Stored as a tuple and handed out as a new list, so no caller can change what the next one reads.
        rows = cache.get(("grants", user_id, workspace, types), lambda: tuple(list_grants(user_id, workspace, types)))
        return list(rows)

    store.get_user = cached_get_user
    store.list_grants = cached_list_grants
    store._hokusai_read_cache = cache
    return cache


def install_store_cache(mlflow_auth_app: Any, generation_file: Path) -> None:
    store = mlflow_auth_app.store
    if getattr(store, "_hokusai_read_cache", None) is None:
        cache_store_reads(store, StoreReadCache(generation=SharedGeneration(generation_file)))
