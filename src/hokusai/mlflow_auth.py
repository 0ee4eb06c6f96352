"""MLflow-side authentication: the `authorization_function` of the embedded MLflow's auth app.

MLflow calls `authenticate_request()` with no arguments inside a Flask request context, several times per
request. It accepts the gateway's short-lived assertion (`Authorization: Bearer <jwt>`) and hands HTTP Basic
(operators logging in to MLflow directly) to MLflow's own check. Everything else is refused with a 401 in the
JSON shape the MLflow client understands. The shared secret is read once from the file (mode 0600) named by
`HOKUSAI_ASSERTION_SECRET_FILE`, set by the Hokusai server when it starts MLflow.

Importing the module also adjusts four things in MLflow's auth app (see the sections below): refusals of missing
resources become MLflow's own 404, the auth store's per-request reads (user row, grants) are cached, and so is the
experiment each run belongs to; and the caller is an MLflow admin only when their key is an admin key. All replace
MLflow internals by name: recheck them when the MLflow pin changes.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import mmap
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import jwt
from flask import Response, g, request
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import HTTPException

from hokusai.server.assertion import Identity, verify_assertion

SECRET_FILE_ENV = "HOKUSAI_ASSERTION_SECRET_FILE"
STORE_CACHE_ENV = "HOKUSAI_MLFLOW_STORE_CACHE"
_MEMO_ATTRIBUTE = "_hokusai_authorization"
# The identity the current request's assertion names. A context variable rather than `flask.g`: MLflow's native
# routes run their permission checks in worker threads outside any Flask context, and asyncio copies contexts there.
_asserted_identity: ContextVar[Identity | None] = ContextVar("hokusai_asserted_identity", default=None)
_LOGGED_MODEL_ID = re.compile(r"/mlflow/logged-models/(m-[0-9a-f]+)")

logger = logging.getLogger(__name__)


@functools.cache
def _secret() -> str:
    path = os.environ.get(SECRET_FILE_ENV)
    if not path:
        # Fail closed: without the secret no assertion can be checked, so none is accepted.
        raise RuntimeError(f"{SECRET_FILE_ENV} is not set; the Hokusai assertion secret is unknown")
    return Path(path).read_text(encoding="utf-8").strip()


def _unauthenticated(message: str) -> Response:
    body = json.dumps({"error_code": "UNAUTHENTICATED", "message": message, "layer": "mlflow"})
    return Response(body, status=401, mimetype="application/json", headers={"WWW-Authenticate": 'Basic realm="mlflow"'})


def _authenticate() -> Authorization | Response:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    _asserted_identity.set(None)
    if scheme.lower() == "basic":
        # Operators keep MLflow's own username/password login.
        from mlflow.server.auth import authenticate_request_basic_auth

        return authenticate_request_basic_auth()
    if scheme.lower() != "bearer" or not credentials:
        return _unauthenticated("This MLflow server only accepts requests through the Hokusai API (or Basic login).")
    try:
        identity = verify_assertion(credentials.strip(), _secret())
    except jwt.InvalidTokenError:
        # Expired, forged, wrong audience or garbage: the reason stays in the server, not in the response.
        return _unauthenticated("The Hokusai identity assertion is invalid or expired.")
    _asserted_identity.set(identity)
    return Authorization("basic", {"username": identity.username})


def authenticate_request() -> Authorization | Response:
    """MLflow's hook; memoised per request because MLflow calls it two to five times."""
    memo = g.get(_MEMO_ATTRIBUTE)
    if memo is None:
        memo = _authenticate()
        setattr(g, _MEMO_ATTRIBUTE, memo)
    return memo


# --- 404 instead of 403 for what does not exist -------------------------------------------------------------------
#
# MLflow's auth app refuses (403 "Permission denied") a request that names an experiment, run, registered model,
# logged model or trace that does not exist: with no grant on a missing resource only the default permission
# applies, and missing runs, logged models and traces are denied on purpose so that answers are no oracle for which
# ids exist. It also fails closed (403) on a path or method no route serves. A plain MLflow answers all of these
# with 404 (or 405), and so should we: "permission denied" for a mistyped run id sends users after the wrong fault.
#
# The answer changes only when MLflow has already decided to refuse, and only from a refusal to a not-found: nothing
# is ever allowed that MLflow denies. Existence is revealed only when every user may read everything anyway
# (`default_permission` READ or higher, Hokusai's setting); with NO_PERMISSIONS MLflow's answer stands.
# MLflow builds every such refusal with `make_forbidden_response()`, looked up by name at call time, so wrapping
# that module attribute covers every call site without a per-request cost.


def _request_params() -> dict[str, Any]:
    params: dict[str, Any] = dict(request.args.items())
    if request.method in ("POST", "PATCH", "DELETE", "PUT") and request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update(body)
    params.update(request.view_args or {})
    return params


def _resource_lookups(params: dict[str, Any]) -> list[Callable[[], object]]:
    """Fetches of every resource the request names, in the order MLflow's handlers look them up."""
    from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

    tracking = _get_tracking_store()
    lookups: list[Callable[[], object]] = []
    if isinstance(params.get("experiment_id"), str) and params["experiment_id"]:
        lookups.append(functools.partial(tracking.get_experiment, params["experiment_id"]))
    if ("/registered-models/" in request.path or "/model-versions/" in request.path) and params.get("name"):
        lookups.append(functools.partial(_get_model_registry_store().get_registered_model, str(params["name"])))
    run_id = params.get("run_id") or params.get("run_uuid")
    if isinstance(run_id, str) and run_id:
        lookups.append(functools.partial(tracking.get_run, run_id))
    model = _LOGGED_MODEL_ID.search(request.path)
    if model is not None:
        lookups.append(functools.partial(tracking.get_logged_model, model.group(1)))
    trace_id = params.get("trace_id") or params.get("request_id")
    if "/traces/" in request.path and isinstance(trace_id, str) and trace_id:
        lookups.append(functools.partial(tracking.get_trace_info, trace_id))
    return lookups


def _not_found_instead() -> Response | None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
    from mlflow.server import auth as mlflow_auth_app
    from mlflow.server.auth.permissions import get_permission

    routing = request.routing_exception
    if isinstance(routing, HTTPException):
        return routing.get_response()  # no such route or method: MLflow's own 404 / 405 page, as without auth
    if not get_permission(mlflow_auth_app.auth_config.default_permission).can_read:
        return None
    for lookup in _resource_lookups(_request_params()):
        try:
            lookup()
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            return Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")
    return None


def _install_not_found_answers() -> None:
    # MLflow's auth app imports this module on its first request; anywhere else there is nothing to wrap, and
    # importing the auth app would start its stores.
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    if mlflow_auth_app is None:
        return
    original = getattr(mlflow_auth_app, "make_forbidden_response", None)
    if original is None or getattr(original, "_hokusai_wrapped", False):
        return

    def make_forbidden_response() -> Response:
        try:
            replacement = _not_found_instead()
        except Exception:  # never let the courtesy check break a refusal
            logger.exception("checking whether a refused request names a missing resource failed")
            replacement = None
        return replacement if replacement is not None else original()

    make_forbidden_response._hokusai_wrapped = True  # type: ignore[attr-defined]
    mlflow_auth_app.make_forbidden_response = make_forbidden_response


# --- the auth store's hot reads, cached ---------------------------------------------------------------------------
#
# For every request MLflow reads the caller's user row (`store.get_user`, two to four times: for the admin flag, then
# for the id) and the caller's grants (`store.list_grants`). Each read opens a fresh SQLAlchemy session (three
# PRAGMAs, a query, a commit): 1.5 ms for a user, 2.5 ms for the grants, measured on SQLite here. On the native
# artifact routes, which otherwise never touch a database, those reads were most of MLflow's cost per request.
#
# Both answers change only through the store's own write methods (users, grants, roles, permissions), so each write
# method is wrapped to drop every cached answer once it returns, before the response that caused it is sent. A
# write method is any public one that is not a read by name, so a write MLflow adds later is covered without a
# change here. MLflow's workers are processes: dropping means bumping a counter in a file all of them map
# (`HOKUSAI_MLFLOW_STORE_CACHE` names it; the Hokusai server sets it, and without it nothing is cached), and every
# lookup compares it first. Edits made behind MLflow's back (another program writing the auth database) are seen
# within `STORE_CACHE_SECONDS`. Failed reads (an unknown user) raise and are never cached.

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

    writing._hokusai_clears_cache = True  # type: ignore[attr-defined]
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


def _install_store_cache() -> None:
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    store = getattr(mlflow_auth_app, "store", None)
    generation_file = os.environ.get(STORE_CACHE_ENV)
    if generation_file and store is not None and getattr(store, "_hokusai_read_cache", None) is None:
        cache_store_reads(store, StoreReadCache(generation=SharedGeneration(Path(generation_file))))


# --- which experiment a run belongs to, remembered --------------------------------------------------------------
#
# Before any call on a run (log-metric, log-batch, set-tag, ...) MLflow's auth app fetches the whole run (params,
# metrics, tags, inputs) with `_fetch_or_none(tracking_store.get_run, run_id)`, only to read `run.info.experiment_id`
# (the one use of that fetch in 3.17.2); the fetch cost about as much as logging the metric. A run never moves to
# another experiment and run ids are never reused, so the answer is kept per run id: later checks get a `Run` that
# carries the first fetch's `info` and no data. Runs that do not exist are never remembered.

RUN_CACHE_MAX_ENTRIES = 100_000


def remember_run_experiments(original: Callable[[Callable[[str], Any], str], Any]) -> Callable[..., Any]:
    from mlflow.entities import Run, RunData

    run_infos: dict[str, Any] = {}

    def fetch_or_none(fetch: Callable[[str], Any], resource_id: str) -> Any:
        if getattr(fetch, "__name__", None) != "get_run":
            return original(fetch, resource_id)
        info = run_infos.get(resource_id)
        if info is not None:
            return Run(run_info=info, run_data=RunData())
        run = original(fetch, resource_id)
        if run is not None:
            if len(run_infos) >= RUN_CACHE_MAX_ENTRIES:
                run_infos.clear()
            run_infos[resource_id] = run.info
        return run

    fetch_or_none._hokusai_wrapped = True  # type: ignore[attr-defined]
    return fetch_or_none


def _install_run_cache() -> None:
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    original = getattr(mlflow_auth_app, "_fetch_or_none", None)
    if original is None or getattr(original, "_hokusai_wrapped", False) or not os.environ.get(STORE_CACHE_ENV):
        return
    mlflow_auth_app._fetch_or_none = remember_run_experiments(original)  # type: ignore[union-attr]


# --- MLflow admin power follows the key -------------------------------------------------------------------------
#
# MLflow keeps one admin flag per user, and an owner becomes an MLflow admin the first time one of their admin keys
# is used. Left alone, that flag would also empower the same owner's read/write keys, and would outlive the revocation
# of the admin key. So for the user the current request's assertion names, the admin flag MLflow reads is the
# flag in its store AND the assertion's `adm` claim (set only for admin keys). Rows of other users (targets of admin
# calls, listings) and Basic logins are left as stored.


def admin_only_if_asserted(user: Any) -> Any:
    """`user` as the current request may act: an admin only if its assertion says so too."""
    identity = _asserted_identity.get()
    if not user.is_admin or identity is None or identity.username != user.username or identity.is_admin:
        return user
    from mlflow.server.auth.entities import User

    return User(id_=user.id, username=user.username, password_hash=user.password_hash, is_admin=False)


def _install_admin_claim() -> None:
    mlflow_auth_app = sys.modules.get("mlflow.server.auth")
    store = getattr(mlflow_auth_app, "store", None)
    if store is None or getattr(store.get_user, "_hokusai_admin_claim", False):
        return
    get_user = store.get_user

    def get_user_as_asserted(username: str) -> Any:
        return admin_only_if_asserted(get_user(username))

    get_user_as_asserted._hokusai_admin_claim = True  # type: ignore[attr-defined]
    store.get_user = get_user_as_asserted


_install_not_found_answers()
_install_store_cache()
_install_run_cache()
_install_admin_claim()
