"""The caches `hokusai.mlflow_auth` puts into MLflow's auth app: auth-store reads (expiry, clearing on writes, no
stale answers) and the experiment of each run.

A small in-memory store stands in for MLflow's here; `tests/live/test_gateway_mlflow_client.py` shows grants and
admin changes made through the real MLflow taking effect on the next request.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run, RunInfo
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from hokusai.mlflow_auth.run_cache import remember_run_experiments
from hokusai.mlflow_auth.store_cache import SharedGeneration, StoreReadCache, cache_store_reads, store_write_methods


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryAuthStore:
    """The read and write methods of MLflow's auth store that the cache touches, counting the reads."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {"ana": {"id": 1, "is_admin": False}}
        self.grants: dict[int, list[tuple[str, str, str]]] = {1: [("experiment", "7", "MANAGE")]}
        self.reads = 0

    def get_user(self, username: str) -> dict[str, Any]:
        self.reads += 1
        if username not in self.users:
            raise LookupError(username)
        return dict(self.users[username])

    def list_grants(self, user_id: int, workspace: str, resource_types: Any) -> list[tuple[str, str, str]]:
        self.reads += 1
        return [grant for grant in self.grants.get(user_id, []) if grant[0] in resource_types]

    def update_user(self, username: str, is_admin: bool) -> None:
        self.users[username]["is_admin"] = is_admin

    def grant_user_resource_permission(self, user_id: int, resource_id: str, permission: str) -> None:
        self.grants.setdefault(user_id, []).append(("experiment", resource_id, permission))

    def fail_to_write(self) -> None:
        raise RuntimeError("constraint violated")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryAuthStore:
    store = MemoryAuthStore()
    cache_store_reads(store, StoreReadCache(ttl=10.0, clock=clock))
    return store


def test_repeated_reads_within_the_ttl_hit_the_store_once(store: MemoryAuthStore) -> None:
    for _ in range(5):
        assert store.get_user("ana") == {"id": 1, "is_admin": False}
        assert store.list_grants(1, "default", {"experiment", "run"}) == [("experiment", "7", "MANAGE")]
    assert store.reads == 2


def test_reads_expire_after_the_ttl(store: MemoryAuthStore, clock: FakeClock) -> None:
    store.get_user("ana")
    clock.now += 9.9
    store.get_user("ana")
    assert store.reads == 1
    clock.now += 0.2
    store.get_user("ana")
    assert store.reads == 2


def test_grant_sets_are_keyed_by_content_not_by_order_or_type(store: MemoryAuthStore) -> None:
    store.list_grants(1, "default", {"experiment", "run"})
    store.list_grants(1, "default", ["run", "experiment"])
    assert store.reads == 1
    store.list_grants(1, "default", {"experiment"})
    store.list_grants(1, "other-workspace", {"experiment"})
    assert store.reads == 3


def test_every_write_clears_what_was_cached(store: MemoryAuthStore) -> None:
    assert store.get_user("ana")["is_admin"] is False
    store.update_user("ana", is_admin=True)
    assert store.get_user("ana")["is_admin"] is True
    assert store.list_grants(1, "default", {"experiment"}) == [("experiment", "7", "MANAGE")]
    store.grant_user_resource_permission(1, "8", "EDIT")
    assert store.list_grants(1, "default", {"experiment"}) == [
        ("experiment", "7", "MANAGE"),
        ("experiment", "8", "EDIT"),
    ]


def test_a_failed_write_still_clears(store: MemoryAuthStore) -> None:
    store.get_user("ana")
    with pytest.raises(RuntimeError):
        store.fail_to_write()
    store.get_user("ana")
    assert store.reads == 2


def test_unknown_users_are_not_cached(store: MemoryAuthStore) -> None:
    for _ in range(2):
        with pytest.raises(LookupError):
            store.get_user("nobody")
    assert store.reads == 2
    store.users["nobody"] = {"id": 2, "is_admin": False}
    assert store.get_user("nobody")["id"] == 2


def test_callers_cannot_change_a_cached_grant_list(store: MemoryAuthStore) -> None:
    store.list_grants(1, "default", {"experiment"}).append(("experiment", "99", "MANAGE"))
    assert store.list_grants(1, "default", {"experiment"}) == [("experiment", "7", "MANAGE")]


def test_a_read_overtaken_by_a_write_is_not_kept(clock: FakeClock) -> None:
    """The read began before the write and returns the old row: it is handed out once, never stored."""
    cache = StoreReadCache(ttl=10.0, clock=clock)
    loading, resume = threading.Event(), threading.Event()
    answers = iter(["old", "new"])

    def slow_load() -> str:
        loading.set()
        resume.wait(5)
        return next(answers)

    results: list[str] = []
    reader = threading.Thread(target=lambda: results.append(cache.get("ana", slow_load)))
    reader.start()
    assert loading.wait(5)
    cache.clear()  # the write lands while the read is in flight
    resume.set()
    reader.join(5)
    assert results == ["old"]
    assert cache.get("ana", lambda: next(answers)) == "new"


def test_a_write_in_another_worker_clears_this_workers_cache(tmp_path: Path, clock: FakeClock) -> None:
    """MLflow workers are processes: a write in one bumps the shared counter, and the others drop their answers."""
    counter = tmp_path / "auth-cache.generation"
    cache = StoreReadCache(generation=SharedGeneration(counter), ttl=10.0, clock=clock)
    answers = iter(["before", "after"])
    assert cache.get("ana", lambda: next(answers)) == "before"
    assert cache.get("ana", lambda: next(answers)) == "before"
    other_worker = (
        f"from pathlib import Path; from hokusai.mlflow_auth.store_cache import SharedGeneration; "
        f"SharedGeneration(Path({str(counter)!r})).bump()"
    )
    subprocess.run([sys.executable, "-c", other_worker], check=True, timeout=120)
    assert cache.get("ana", lambda: next(answers)) == "after"
    assert counter.stat().st_mode & 0o777 == 0o600


def test_the_cache_never_grows_past_its_bound(clock: FakeClock) -> None:
    cache = StoreReadCache(ttl=10.0, max_entries=3, clock=clock)
    loads = []
    for name in ["a", "b", "c", "d", "a"]:
        cache.get(name, lambda name=name: loads.append(name) or name)
    assert len(cache._entries) <= 3
    assert loads == ["a", "b", "c", "d", "a"]  # reaching the bound emptied the cache, so "a" was read again


def test_mlflows_store_write_methods_are_all_wrapped() -> None:
    """Classification of the pinned MLflow store: every method that changes users, roles or grants clears."""
    writes = set(store_write_methods(SqlAlchemyStore()))
    assert {
        "create_user",
        "update_user",
        "delete_user",
        "grant_user_resource_permission",
        "revoke_user_resource_permission",
        "create_experiment_permission",
        "update_experiment_permission",
        "delete_experiment_permission",
        "create_registered_model_permission",
        "delete_grants_for_resource",
        "rename_grants_for_resource",
        "assign_role_to_user",
        "unassign_role_from_user",
        "add_role_permission",
        "remove_role_permission",
        "update_role_permission",
        "delete_role",
    } <= writes
    assert not writes & {"get_user", "list_grants", "list_users", "has_user", "authenticate_user"}


class RunFetches:
    """`get_run` and another fetch, counting calls; unknown ids answer None, as MLflow's `_fetch_or_none` does."""

    def __init__(self) -> None:
        self.runs = {"r1": Run(RunInfo("r1", "7", "ana", "RUNNING", 1, None, "active"), run_data=None)}
        self.calls: list[str] = []

    def get_run(self, run_id: str) -> Run:
        self.calls.append(run_id)
        return self.runs[run_id]

    def get_trace_info(self, trace_id: str) -> str:
        self.calls.append(trace_id)
        return trace_id


def _fetch_or_none(fetch: Any, resource_id: str) -> Any:
    try:
        return fetch(resource_id)
    except KeyError:
        return None


def test_a_runs_experiment_is_fetched_once() -> None:
    store, fetch_or_none = RunFetches(), remember_run_experiments(_fetch_or_none)
    first = fetch_or_none(store.get_run, "r1")
    again = fetch_or_none(store.get_run, "r1")
    assert store.calls == ["r1"]
    assert first.info.experiment_id == again.info.experiment_id == "7"
    assert again.data.metrics == {}  # the remembered run carries its info only


def test_missing_runs_and_other_fetches_are_not_remembered() -> None:
    store, fetch_or_none = RunFetches(), remember_run_experiments(_fetch_or_none)
    assert fetch_or_none(store.get_run, "r2") is None
    store.runs["r2"] = Run(RunInfo("r2", "8", "ana", "RUNNING", 1, None, "active"), run_data=None)
    assert fetch_or_none(store.get_run, "r2").info.experiment_id == "8"
    fetch_or_none(store.get_trace_info, "t1")
    fetch_or_none(store.get_trace_info, "t1")
    assert store.calls == ["r2", "r2", "t1", "t1"]
