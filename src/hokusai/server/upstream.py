"""The gateway's side of MLflow: one pooled HTTP client, the identity it presents, and user provisioning."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets

import aiohttp
import httpx
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from yarl import URL

from hokusai.errors import ErrorCode
from hokusai.server.assertion import AssertionSigner, Identity
from hokusai.server.db import Database
from hokusai.server.keys import Principal
from hokusai.server.models import Account
from hokusai.server.secrets import PlatformSecrets
from hokusai.server.settings import Settings

logger = logging.getLogger(__name__)

MLFLOW_ADMIN_USERNAME = "admin"
# The platform itself, for what no single user owns (the shared baseline models): MLflow's admin, acting through
# the same identity path as a key would. It never comes from a request.
PLATFORM = Principal(
    key_id="platform", owner=MLFLOW_ADMIN_USERNAME, scopes=frozenset({"admin"}), prefix="", expires_at=None
)
USERS_CREATE = "/api/2.0/mlflow/users/create"
USERS_UPDATE_ADMIN = "/api/2.0/mlflow/users/update-admin"
EXPERIMENTS_CREATE = "/api/2.0/mlflow/experiments/create"
EXPERIMENTS_GET = "/api/2.0/mlflow/experiments/get"
PERMISSIONS_GRANT = "/api/3.0/mlflow/users/permissions/grant"
PERMISSIONS_REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
_DEFAULT_EXPERIMENT_ATTEMPTS = 5


class UpstreamError(Exception):
    """MLflow answered a provisioning call with an unexpected status."""


def build_client(base_url: str, settings: Settings) -> httpx.AsyncClient:
    """The client of the API's own calls to MLflow: small JSON requests, so a hung MLflow is a 504 in seconds."""
    timeout = httpx.Timeout(
        connect=settings.upstream_connect_timeout_seconds,
        read=settings.upstream_call_timeout_seconds,
        write=settings.upstream_call_timeout_seconds,
        pool=settings.upstream_connect_timeout_seconds,
    )
    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them under us.
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=settings.upstream_keepalive_seconds,
    )
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)


# Headers aiohttp would add on its own; left out so the client's own (or none) pass unchanged. `Content-Type` is the
# `application/octet-stream` aiohttp's payloads would claim for a body sent without one.
_NO_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")
# h11 (the previous client) accepted response header lines up to 64 KiB; aiohttp's default is 8 KiB.
_MAX_RESPONSE_HEADER_LINE = 64 * 1024
# What aiohttp reads from MLflow at a time; it stops reading a connection at twice this. Read eagerly, not in batches:
# MLflow's download route (Starlette's FileResponse) hands each 64 KiB block from a worker thread to its event loop,
# and it spends up to 70% more CPU per byte once its socket backs up. A 1 MiB `SO_RCVLOWAT` batch halved the
# gateway's CPU and held 500 MB downloads at 0.80x of direct; eager reads gave 0.78x-1.45x (docs/architecture.md).
READ_BUFFER_BYTES = 512 * 1024


def build_session(settings: Settings) -> aiohttp.ClientSession:
    """The gateway's data-path client: proxied requests and responses stream through it, bytes untouched.

    Must be created inside the running event loop (see `Upstream.start`). `connect` bounds the wait for a pooled
    connection as well as the TCP connect; `sock_read` is per chunk, and there is no total deadline, so a multi-GB
    artifact is never cut off. aiohttp has no write timeout: the gateway's `StreamedBody` keeps one. No cookie jar
    (MLflow's cookies are not the caller's), no decompression (the raw bytes are relayed with MLflow's
    Content-Encoding and Content-Length).
    """
    keepalive = settings.upstream_keepalive_seconds
    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them under us.
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections,
        limit_per_host=0,
        keepalive_timeout=keepalive if keepalive > 0 else None,
        force_close=keepalive <= 0,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_connect_timeout_seconds,
        sock_connect=settings.upstream_connect_timeout_seconds,
        sock_read=settings.upstream_read_timeout_seconds,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        trust_env=False,
        max_line_size=_MAX_RESPONSE_HEADER_LINE,
        max_field_size=_MAX_RESPONSE_HEADER_LINE,
        read_bufsize=READ_BUFFER_BYTES,
    )


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Upstream:
    """How the gateway reaches MLflow and who it says it is there (see docs/architecture.md, "Identity")."""

    def __init__(
        self, base_url: str, settings: Settings, platform_secrets: PlatformSecrets, database: Database
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.mode = settings.identity_mode
        # Control-plane calls (provisioning, probes, the registry's REST calls) use httpx; proxied traffic uses
        # `session` (aiohttp), which costs the gateway well under half the CPU per request.
        self.client = build_client(self.base_url, settings)
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._database = database
        self._signer = AssertionSigner(platform_secrets.assertion_secret, ttl_seconds=settings.assertion_ttl_seconds)
        self._service_authorization = (
            basic_authorization(settings.mlflow_username, settings.mlflow_password.get_secret_value())
            if settings.mlflow_username and settings.mlflow_password
            else None
        )
        self._accounts: dict[str, Account] = {}
        # Owners made MLflow admins by this process. Separate from `_accounts`: an owner's admin key may come long
        # after their first request, and must still make them an admin (`hokusai.mlflow_auth.admin_claim` keeps
        # that power to their admin keys).
        self._admins: set[str] = set()
        self._provision_lock = asyncio.Lock()
        self._default_experiment_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(base_url={self.base_url!r}, mode={self.mode!r})"

    async def start(self) -> None:
        """Open the data-path session at lifespan startup, inside the running loop."""
        _ = self.session

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # an app run without its lifespan: opened on first use, still inside the loop
            self._session = build_session(self._settings)
        return self._session

    def url_for(self, raw_path: str, query_string: bytes) -> URL:
        """The upstream URL with the path and query exactly as received: nothing re-encoded or normalised."""
        query = query_string.decode("latin-1")
        return URL(self.base_url + raw_path + ("?" + query if query else ""), encoded=True)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- identity -----------------------------------------------------------------------------------------

    def authorization_for(self, principal: Principal) -> str | None:
        """The Authorization header MLflow sees for `principal`; the caller's own key is never forwarded."""
        if self.mode == "assertion":
            return "Bearer " + self._signer.assertion_for(Identity(principal.owner, principal.is_admin))
        return self._service_authorization

    def headers_for(self, principal: Principal) -> dict[str, str]:
        authorization = self.authorization_for(principal)
        return {} if authorization is None else {"authorization": authorization}

    # --- provisioning ---------------------------------------------------------------------------------------

    async def ensure_account(self, principal: Principal) -> Account | None:
        """Make sure MLflow knows the owner, as an admin for an admin key (assertion mode only).

        Cheap after the first call per owner (and the first admin key's call) in this process.
        """
        if self.mode != "assertion":
            return None
        owner = principal.owner
        account = self._accounts.get(owner)
        if account is not None and (owner in self._admins or not principal.is_admin):
            return account
        async with self._provision_lock:
            account = self._accounts.get(owner)
            if account is None:
                account = await self._provision(owner)
                self._accounts[owner] = account
            if principal.is_admin and owner not in self._admins:
                await self._call("PATCH", USERS_UPDATE_ADMIN, json={"username": owner, "is_admin": True}, ok=(200,))
                self._admins.add(owner)
        return account

    async def _provision(self, owner: str) -> Account:
        stored = await run_in_threadpool(self._load_account, owner)
        await self._create_mlflow_user(owner)
        if stored is None:
            stored = await run_in_threadpool(self._save_account, Account(owner=owner))
        return stored

    async def _create_mlflow_user(self, username: str) -> None:
        # The password is never used (the user authenticates through assertions) and is thrown away.
        body = {"username": username, "password": secrets.token_urlsafe(24)}
        response = await self.client.post(USERS_CREATE, json=body, headers=self.headers_for(PLATFORM))
        if response.status_code == 200:
            logger.info("provisioned MLflow user %s", username)
            return
        if response.status_code == 400 and ErrorCode.RESOURCE_ALREADY_EXISTS in response.text:
            return
        raise UpstreamError(f"creating MLflow user {username!r} failed with {response.status_code}")

    async def default_experiment_id(self, principal: Principal) -> str | None:
        """The owner's private default experiment, created on first use and remembered in our database."""
        account = await self.ensure_account(principal)
        if account is None:
            return None
        if account.default_experiment_id is not None:
            return account.default_experiment_id
        # First calls can come at once (a bare trace sends its start and its spans together): they must share one
        # experiment, not create one each and scatter the user's work.
        async with self._default_experiment_lock:
            if account.default_experiment_id is None:
                account.default_experiment_id = await self._create_default_experiment(principal)
                await run_in_threadpool(self._save_account, account)
        return account.default_experiment_id

    async def existing_default_experiment_id(self, principal: Principal) -> str | None:
        """The owner's default experiment if one was made already: a read never creates it."""
        account = await self.ensure_account(principal)
        return None if account is None else account.default_experiment_id

    async def _create_default_experiment(self, principal: Principal) -> str:
        headers = self.headers_for(principal)
        for attempt in range(_DEFAULT_EXPERIMENT_ATTEMPTS):
            # A name taken by someone else is skipped, never adopted: adopting it would hand them our runs. The next
            # ones carry a random suffix: numbered ones could all be taken in advance by another user, and the owner
            # would be locked out of bare runs for good.
            name = f"Default ({principal.owner})" + (f" {secrets.token_hex(4)}" if attempt else "")
            response = await self.client.post(EXPERIMENTS_CREATE, json={"name": name}, headers=headers)
            if response.status_code == 200:
                return str(response.json()["experiment_id"])
            if ErrorCode.RESOURCE_ALREADY_EXISTS not in response.text:
                break
        raise UpstreamError(f"creating the default experiment of {principal.owner!r} failed")

    async def hand_over_registered_model(self, model_name: str, *, new_owner: str, previous_owner: str | None) -> None:
        """Give `new_owner` MANAGE on a registered model and withdraw `previous_owner`'s grant, unless that is `None`
        (assertion mode only).

        MLflow has no "update grant" call, so any grant the new owner already holds is revoked first; revoking a
        grant or user that does not exist answers 404, which is the state we want anyway.
        """
        if self.mode != "assertion":
            return
        await self._create_mlflow_user(new_owner)
        resource = {"resource_type": "registered_model", "resource_id": model_name}
        await self._call("POST", PERMISSIONS_REVOKE, json={"username": new_owner, **resource}, ok=(200, 404))
        await self._call(
            "POST", PERMISSIONS_GRANT, json={"username": new_owner, "permission": "MANAGE", **resource}, ok=(200,)
        )
        if previous_owner is not None and previous_owner != new_owner:
            await self._call("POST", PERMISSIONS_REVOKE, json={"username": previous_owner, **resource}, ok=(200, 404))

    async def _call(self, method: str, path: str, *, json: dict[str, object], ok: tuple[int, ...]) -> None:
        response = await self.client.request(method, path, json=json, headers=self.headers_for(PLATFORM))
        if response.status_code not in ok:
            raise UpstreamError(f"{method} {path} failed with {response.status_code}")

    def _load_account(self, owner: str) -> Account | None:
        with self._database.session() as session:
            return session.scalar(select(Account).where(Account.owner == owner))

    def _save_account(self, account: Account) -> Account:
        with self._database.session() as session:
            return session.merge(account)

    # --- probes ---------------------------------------------------------------------------------------------

    async def check_ready(self) -> str | None:
        """`None` when MLflow answers, accepts our credentials and reads its tracking store, else what is wrong (no
        internal URLs)."""
        headers = self.headers_for(PLATFORM)
        try:
            health = await self.client.get("/health", timeout=5.0)
            if health.status_code != 200:
                return f"MLflow health check answered {health.status_code}"
            version = await self.client.get("/version", headers=headers, timeout=5.0)
            if version.status_code in (401, 403):
                return (
                    f"MLflow refused the gateway's credentials ({version.status_code}): {_CREDENTIALS_FIX[self.mode]}"
                )
            if version.status_code != 200:
                # MLflow's auth app answers 503 when its auth store (users, permissions) cannot be read.
                return f"MLflow answered {version.status_code}: its auth store may be unavailable (see MLflow's log)"
            # /health and /version never touch the tracking store; a read of experiment 0 does (a 404 is an answer).
            store = await self.client.get(EXPERIMENTS_GET, params={"experiment_id": "0"}, headers=headers, timeout=5.0)
        except httpx.HTTPError:
            return "MLflow is not reachable"
        if store.status_code >= 500:
            return f"MLflow answered {store.status_code}: its tracking store is unavailable (see MLflow's log)"
        return None


# For the operator, on GET /ready and in the log at start: which settings to look at (never their values).
_CREDENTIALS_FIX = {
    "assertion": "the embedded MLflow does not share the API's assertion secret; restart the API",
    "service-account": "check HOKUSAI_MLFLOW_USERNAME and HOKUSAI_MLFLOW_PASSWORD against MLflow's users (an admin)",
    "none": "it asks for a login and none is set: set HOKUSAI_MLFLOW_USERNAME and HOKUSAI_MLFLOW_PASSWORD (an admin)",
}
