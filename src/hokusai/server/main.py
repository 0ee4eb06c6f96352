"""The Hokusai API application: `create_app()` wires settings, storage, the MLflow upstream and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hokusai import __version__
from hokusai.server.audit import AuditLog
from hokusai.server.db import Database
from hokusai.server.deps import query_as_declared
from hokusai.server.errors import install_error_handlers
from hokusai.server.gateway import MOUNTS, MlflowGateway
from hokusai.server.keys import KeyStore
from hokusai.server.middleware.body_timeout import ClientBodyTimeoutMiddleware
from hokusai.server.middleware.request_id import RequestIdMiddleware
from hokusai.server.middleware.trusted_host import TrustedHostMiddleware
from hokusai.server.routes import audit, auth, health, keys, models, tokens
from hokusai.server.schemas import with_key_security, without_fastapis_422
from hokusai.server.secrets import PlatformSecrets
from hokusai.server.settings import Settings
from hokusai.server.state import AppState
from hokusai.server.upstream import Upstream

logger = logging.getLogger(__name__)


def build_state(settings: Settings, platform_secrets: PlatformSecrets, mlflow_url: str) -> AppState:
    database = Database(settings.resolved_database_url)
    return AppState(
        settings=settings,
        secrets=platform_secrets,
        database=database,
        keys=KeyStore(database, platform_secrets.key_pepper, cache_ttl=settings.key_cache_ttl_seconds),
        audit=AuditLog(database),
        upstream=Upstream(mlflow_url, settings, platform_secrets, database),
    )


async def _flush_last_used(state: AppState) -> None:
    try:
        await run_in_threadpool(state.keys.flush_last_used)
    except SQLAlchemyError as exc:
        # An outage must neither end the flushing for the life of the process nor stop a shutdown; the times wait
        # for the next round.
        logger.warning("last-used times not written (the Hokusai database is unavailable): %s", type(exc).__name__)


async def _flush_last_used_forever(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.settings.last_used_flush_seconds)
        await _flush_last_used(state)


async def _report_an_unready_mlflow(state: AppState) -> None:
    """An external MLflow that refuses the gateway is said at start, in the log, not first by a user's failed call.

    It does not stop the start: MLflow may be restarting, and GET /ready keeps telling until it answers.
    """
    problem = await state.upstream.check_ready()
    if problem is not None:
        logger.error("the external MLflow is not ready for the gateway: %s (GET /ready rechecks)", problem)


class HokusaiApp:
    """The outer ASGI app: MLflow traffic goes straight to the gateway, everything else to the FastAPI app.

    Proxied requests are the hot path; routing them here skips FastAPI's middleware stack and its router (which
    tried every API route before reaching the mount). The prefixes are the ones Starlette's `Mount` matched
    (`/api/mlflow/...`, `/mlflow/...` on the decoded path). A bare mount (`/api/mlflow`, what a browser is given) is
    redirected to its trailing slash, where MLflow's web UI answers.
    """

    def __init__(self, api: FastAPI, gateway: MlflowGateway) -> None:
        self.api = api
        self.gateway = gateway
        self._prefixes = tuple(mount + "/" for mount in MOUNTS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._prefixes):
            await self.gateway(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in MOUNTS:
            query = scope["query_string"].decode("latin-1")
            await RedirectResponse(scope["path"] + "/" + (f"?{query}" if query else ""))(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _document_as_served(app: FastAPI) -> None:
    """Build the OpenAPI document FastAPI's way (once, cached on the app), minus the 422 this API never sends, plus
    the key its routes need."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_key_security(without_fastapis_422(build()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings, platform_secrets: PlatformSecrets, mlflow_url: str) -> ASGIApp:
    """The ASGI app; `mlflow_url` is the MLflow it fronts (the embedded child's address, or an external one)."""
    state = build_state(settings, platform_secrets, mlflow_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.upstream.start()
        if not settings.embedded_mlflow:
            await _report_an_unready_mlflow(state)
        flusher = asyncio.create_task(_flush_last_used_forever(state))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await _flush_last_used(state)
            await state.aclose()

    app = FastAPI(
        title="Hokusai API",
        version=__version__,
        description="Tokenized model registry in front of MLflow. MLflow clients use `/api/mlflow`.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry layer would wrap every proxied request; nothing here exports it.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # A path that matches no route only once a slash is added or removed is a 404 envelope, not an empty 307:
        # the SDK and the CLI send exact paths, and `/api/v1/keys/%2F` redirected to the list of keys.
        redirect_slashes=False,
        dependencies=[Depends(query_as_declared)],
    )
    app.state.hokusai = state
    install_error_handlers(app)
    _document_as_served(app)
    for router in (health.router, auth.router, keys.router, tokens.router, models.router, audit.router):
        app.include_router(router)
    # Every request, API or MLflow, gets its id, its access-log line, its Host check and its body timeout here,
    # outside the dispatch.
    dispatch = HokusaiApp(app, MlflowGateway(state))
    body_timeout = ClientBodyTimeoutMiddleware(dispatch, settings.client_body_timeout_seconds)
    return RequestIdMiddleware(TrustedHostMiddleware(body_timeout, settings.trusted_hosts))
