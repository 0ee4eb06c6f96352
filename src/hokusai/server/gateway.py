"""The MLflow gateway: authenticate the Hokusai key, check the path and scope, stream to MLflow as the user."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import httpx
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hokusai.errors import ErrorCode
from hokusai.server.audit import Caller, audit_event
from hokusai.server.client_watch import ClientLeft, ClientWatch
from hokusai.server.credentials import refuse_key_in_query
from hokusai.server.default_experiment import (
    BODY_EXPERIMENT_FIELD,
    CREATION_CALLS,
    DATASET_CREATE,
    DEFAULT_EXPERIMENT_ID,
    LOGGED_MODEL_CREATE,
    OTLP_EXPERIMENT_HEADER,
    OTLP_TRACES,
    PROMPT_LINK_CALLS,
    RUN_CREATE,
    SCORER_CALLS,
    SEARCH_CALLS,
    TRACE_DELETE_CALLS,
    link_prompt_to,
    links_prompt_to_default,
    query_pointed_at,
)
from hokusai.server.errors import (
    INTERNAL_ERROR_MESSAGE,
    ApiError,
    database_unavailable,
    error_response,
    mlflow_timed_out,
    mlflow_unavailable,
)
from hokusai.server.keys import Principal
from hokusai.server.middleware.request_id import REQUEST_ID_HEADER, logged_path
from hokusai.server.mlflow_rest import provisioning_errors
from hokusai.server.paths import (
    Access,
    PathInvalid,
    PathRejected,
    RoutedPath,
    check_artifact_query,
    route_path,
)
from hokusai.server.registry.claims import follow_rename
from hokusai.server.relay import (
    BUFFERED_BODY_LIMIT,
    HOP_BY_HOP,
    ClientStalled,
    SendDeadline,
    UpstreamBroke,
    client_answer,
)
from hokusai.server.request_bodies import (
    BODY_READ,
    GUARDED_CALLS,
    RENAME_CALLS,
    REWRITTEN_BODY_LIMIT,
    guarded_body,
    json_object,
    owner_in_dataset_tags,
    owner_in_tag_list,
    read_limited,
    rewritten_body,
    stamp_owner,
)
from hokusai.server.request_head import ABORT_CONNECTION, MAX_REQUEST_HEADER_BYTES, declares_body

if TYPE_CHECKING:
    from hokusai.server.state import AppState

logger = logging.getLogger(__name__)

MLFLOW_MOUNT = "/api/mlflow"  # where MLflow clients are pointed; `/mlflow` is an alias
MOUNTS = (MLFLOW_MOUNT, "/mlflow")
_T = TypeVar("_T")
# Credentials and client-supplied forwarding claims never reach MLflow; the gateway sets its own.
_STRIPPED_REQUEST = HOP_BY_HOP | {
    "host",
    "authorization",
    "x-api-key",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
    "x-mlflow-authorization",
    REQUEST_ID_HEADER,
}
# uvicorn's h11 limit only applies while a head is incomplete, so a 64 KB header arriving in one read was relayed
# to MLflow. The stock client sends ~10 small headers; a browser on the UI, cookies included, stays far below these.
MAX_REQUEST_HEADERS = 100


class MlflowGateway:
    """A plain ASGI app mounted at each of `MOUNTS`."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._in_flight: Counter[str] = Counter()  # per owner: requests admitted and not yet answered in full

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._serve(scope, receive, send)
        finally:
            self._leave(scope)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except ApiError as exc:
            headers = dict(exc.headers)
            if declares_body(scope["headers"]) and not scope.get(BODY_READ):
                # Refused (or MLflow died) before the body was read: close, so the client learns now instead of
                # uploading the rest for nothing (clients send the whole body before reading the answer, and
                # uvicorn would drain it to keep the connection alive).
                headers["Connection"] = "close"
            response = error_response(
                exc.status, exc.message, error_code=exc.error_code, layer=exc.layer, headers=headers
            )
        except ClientDisconnect:
            # The client hung up (or stalled: see middleware.body_timeout) before its body was read: nobody to
            # answer, and nothing went to MLflow.
            logger.info("request body ended early (client gone or stalled): %s %s", scope["method"], logged_path(scope))
            return
        except ClientLeft:
            # Nobody to answer; the MLflow connection was closed, and the owner's share freed.
            logger.info("client hung up before MLflow answered: %s %s", scope["method"], logged_path(scope))
            return
        except OperationalError as exc:
            response = database_unavailable(scope, exc)
        except Exception:
            # The gateway runs outside FastAPI (see main.HokusaiApp), so its catch-all handler is repeated here.
            logger.exception("unhandled error on %s %s", scope["method"], logged_path(scope))
            response = error_response(500, INTERNAL_ERROR_MESSAGE)
        try:
            await response(scope, receive, send)
        except ClientStalled:
            # The MLflow connection was released; the client's goes at once, with what was queued for it.
            _abort_connection(scope)
            logger.warning(
                "client took nothing of the answer for %g s; connection closed: %s %s",
                self._state.settings.client_send_timeout_seconds,
                scope["method"],
                logged_path(scope),
            )
        except UpstreamBroke as exc:
            # Too late for an error answer: the cut connection (and a body short of its Content-Length) says it.
            _abort_connection(scope)
            logger.warning(
                "MLflow's answer broke off (%s); connection closed: %s %s",
                exc,
                scope["method"],
                logged_path(scope),
            )

    async def _handle(self, request: Request) -> ASGIApp:
        _check_header_size(request.scope["headers"])
        raw_path = _mount_relative(request.scope.get("raw_path", b"").decode("latin-1"))
        try:
            routed = route_path(raw_path, request.method)
            if request.scope["query_string"]:
                check_artifact_query(routed, request.query_params)
        except PathInvalid as exc:
            raise ApiError(
                400, f"{exc}; nothing was sent to MLflow.", error_code=ErrorCode.INVALID_PARAMETER_VALUE
            ) from exc
        except PathRejected as exc:
            raise ApiError(
                404, f"No such MLflow endpoint through the gateway ({exc}).", error_code=ErrorCode.ENDPOINT_NOT_FOUND
            ) from exc
        if routed.access is Access.REFUSED:
            raise ApiError(
                403,
                "This MLflow feature (AI gateway, assistant, MCP, secrets, demo data) is not offered by Hokusai.",
                error_code=ErrorCode.PERMISSION_DENIED,
            )
        _refuse_foreign_page(request, self._state.settings.browser_origins)
        principal = None
        if routed.access is not Access.PUBLIC:
            principal = await self._state.authenticate(request)
            await self._state.require_scope(request, principal, routed.access.value)
            if routed.counted:
                self._admit(request.scope, principal)
        elif request.scope["query_string"]:
            # MLflow's own access log writes the whole URL, so a key there would reach its log file.
            refuse_key_in_query(request.query_params)
        # The caller's MLflow account and default experiment are set up on the way (control-plane calls).
        with provisioning_errors(principal):
            body = await self._request_body(request, routed.decoded, principal)
            return await self._forward(request, routed, principal, body)

    def _admit(self, scope: Scope, principal: Principal) -> None:
        """Count the request against its owner's share of the MLflow connections, or refuse it with a 429.

        The pool is shared: without a share per user, one client holding many uploads or downloads open would leave
        every other user with 503s. The count is released once the answer has gone out in full (`_leave`).
        """
        owner, limit = principal.owner, self._state.settings.upstream_max_connections_per_user
        if self._in_flight[owner] >= limit:
            raise ApiError(
                429,
                f"User '{owner}' already has {limit} MLflow requests in progress through the gateway, the most one "
                "user may have at once (HOKUSAI_UPSTREAM_MAX_CONNECTIONS_PER_USER). Retry once some have finished.",
            )  # no Retry-After: the MLflow client would wait exactly that, instead of its own backoff (up to ~4 min)
        self._in_flight[owner] += 1
        scope["hokusai.admitted"] = owner

    def _leave(self, scope: Scope) -> None:
        owner = scope.pop("hokusai.admitted", None)
        if owner is None:
            return
        self._in_flight[owner] -= 1
        if not self._in_flight[owner]:
            del self._in_flight[owner]  # the counter holds only owners with requests in progress

    async def _request_body(
        self, request: Request, path: str, principal: Principal | None
    ) -> bytes | StreamedBody | None:
        headers = request.headers
        has_body = "content-length" in headers or "transfer-encoding" in headers
        if not has_body:
            return None
        if principal is not None and request.method == "POST":
            if path in CREATION_CALLS:
                return await self._rewrite_create(request, path, principal)
            if path in SEARCH_CALLS and not principal.is_admin:
                scope = SEARCH_CALLS[path]
                return await self._body_pointed_at_default(
                    request, principal, names_default=scope.names_default, point=scope.widen
                )
        if principal is not None and not principal.is_admin and path in GUARDED_CALLS:
            return await guarded_body(request, GUARDED_CALLS[path])  # first: no rewrite below may skip a guard
        if principal is not None and not principal.is_admin and (path in SCORER_CALLS or path in TRACE_DELETE_CALLS):
            return await self._body_pointed_at_default(
                request,
                principal,
                names_default=BODY_EXPERIMENT_FIELD.names_default,
                point=BODY_EXPERIMENT_FIELD.point_at,
            )
        if principal is not None and not principal.is_admin and path in PROMPT_LINK_CALLS:
            return await self._body_pointed_at_default(
                request, principal, names_default=links_prompt_to_default, point=link_prompt_to, create=True
            )
        if path in RENAME_CALLS:
            return await read_limited(request, REWRITTEN_BODY_LIMIT)
        if _declared_length(request) <= BUFFERED_BODY_LIMIT:
            # Small bodies (most MLflow calls) are read whole and sent with the head in one write, which costs
            # aiohttp less than a streamed payload; anything larger or chunked streams through untouched.
            return await read_limited(request, BUFFERED_BODY_LIMIT)
        return StreamedBody(request)

    async def _rewrite_create(self, request: Request, path: str, principal: Principal) -> bytes:
        """Stamp the authenticated owner on new runs, logged models and datasets, and send the Default experiment to
        the owner's own one.

        MLflow trusts whatever creator a client claims; and a non-admin may not write to experiment 0, so a
        bare `mlflow.start_run()` or `@mlflow.trace` would fail (see `default_experiment`). A body that needs
        neither change goes out byte for byte.
        """
        body = await read_limited(request, REWRITTEN_BODY_LIMIT)
        payload = json_object(body) if body else {}
        if payload is None:
            return body
        changed = False
        if path in RUN_CREATE:
            stamp_owner(payload, principal.owner)
            changed = True
        elif path in LOGGED_MODEL_CREATE:
            changed = owner_in_tag_list(payload, principal.owner, add=True)
        elif path in DATASET_CREATE:
            changed = owner_in_dataset_tags(payload, principal.owner)
        field = CREATION_CALLS[path]
        if not principal.is_admin and field.names_default(payload):
            experiment_id = await self._state.upstream.default_experiment_id(principal)
            if experiment_id is not None:
                field.point_at(payload, experiment_id)
                changed = True
        return rewritten_body(payload) if changed else body

    async def _body_pointed_at_default(
        self,
        request: Request,
        principal: Principal,
        *,
        names_default: Callable[[dict[str, Any]], bool],
        point: Callable[[dict[str, Any], str], None],
        create: bool = False,
    ) -> bytes:
        """The body with experiment 0 pointed at the owner's default experiment by `point`, where `names_default`.

        A search of 0 also covers the default experiment, where the owner's bare calls went; a scorer call or a
        trace deletion on 0 acts on the default; a prompt a bare client uses is linked to it. Only the prompt link
        creates the default experiment (`create`): a read, a scorer call or a deletion has nothing to find in one that
        does not exist yet.
        """
        body = await read_limited(request, REWRITTEN_BODY_LIMIT)
        payload = json_object(body)
        if payload is None or not names_default(payload):
            return body
        upstream = self._state.upstream
        if create:
            experiment_id = await upstream.default_experiment_id(principal)
        else:
            experiment_id = await upstream.existing_default_experiment_id(principal)
        if experiment_id is None:
            return body
        point(payload, experiment_id)
        return rewritten_body(payload)

    async def _scorer_query_to_default(self, query_string: bytes, principal: Principal) -> bytes:
        """`list_scorers` and `get_scorer` of experiment 0 read where the owner's bare scorers were registered."""
        experiment_id = await self._state.upstream.existing_default_experiment_id(principal)
        if experiment_id is None:
            return query_string
        return query_pointed_at(query_string, experiment_id) or query_string

    async def _otlp_to_default_experiment(
        self, headers: list[tuple[str, str]], principal: Principal
    ) -> list[tuple[str, str]]:
        """Spans exported to experiment 0 go to the owner's default experiment, like the trace they belong to."""
        named = [value.strip() for name, value in headers if name == OTLP_EXPERIMENT_HEADER]
        if named != [DEFAULT_EXPERIMENT_ID]:
            return headers
        experiment_id = await self._state.upstream.default_experiment_id(principal)
        if experiment_id is None:
            return headers
        return [(name, experiment_id if name == OTLP_EXPERIMENT_HEADER else value) for name, value in headers]

    async def _forward(
        self, request: Request, routed: RoutedPath, principal: Principal | None, body: bytes | StreamedBody | None
    ) -> ASGIApp:
        upstream = self._state.upstream
        if principal is not None:
            await upstream.ensure_account(principal)
        headers = _upstream_headers(request, upstream.headers_for(principal) if principal else {})
        if routed.decoded == OTLP_TRACES and principal is not None and not principal.is_admin:
            headers = await self._otlp_to_default_experiment(headers, principal)
        if isinstance(body, bytes):
            headers = [(k, v) for k, v in headers if k not in ("content-length", "transfer-encoding")]
            headers.append(("content-length", str(len(body))))
        query_string = request.scope.get("query_string", b"")
        if query_string and routed.decoded in SCORER_CALLS and principal is not None and not principal.is_admin:
            query_string = await self._scorer_query_to_default(query_string, principal)
        url = upstream.url_for(routed.raw, query_string)
        # MLflow's auth app has no rule for HEAD and refuses it on every route, while a plain MLflow answers HEAD as
        # a GET without the body: MLflow is asked for the GET, and `relay` sends on only its head.
        method = "GET" if request.method == "HEAD" else request.method
        try:
            sending = upstream.session.request(method, url, headers=headers, data=body, allow_redirects=False)
            if isinstance(body, StreamedBody):
                response = await body.within_write_timeout(sending, self._state.settings.upstream_write_timeout_seconds)
            else:
                with ClientWatch(request.receive):
                    response = await sending
        except aiohttp.ConnectionTimeoutError as exc:  # no pooled connection or no TCP connect in time
            raise mlflow_unavailable() from exc
        except TimeoutError as exc:  # aiohttp's read timeouts subclass it
            raise mlflow_timed_out() from exc
        except aiohttp.ClientError as exc:
            if isinstance(exc.__cause__, ClientDisconnect):
                # aiohttp wraps whatever ends a streamed body; here the client hung up (or stalled) mid-upload.
                raise ClientDisconnect from exc
            # Connection refused or dropped: MLflow is down or restarting; the supervisor brings it back.
            raise mlflow_unavailable() from exc
        if routed.decoded in RENAME_CALLS and response.status == 200 and principal is not None:
            await self._follow_rename(request, principal, body)
        body_unread = isinstance(body, StreamedBody) and not request.scope.get(BODY_READ)
        relay = await client_answer(
            response,
            request.method,
            principal,
            routed,
            body_unread=body_unread,
            identity_mode=upstream.mode,
        )
        if isinstance(relay, StreamingResponse):
            return SendDeadline(relay, self._state.settings.client_send_timeout_seconds, release=response.release)
        return relay

    async def _follow_rename(self, request: Request, principal: Principal, body: bytes | StreamedBody | None) -> None:
        """Point the renamed model's token claims at its new name, so its tokens stay its own.

        MLflow has renamed the model by now; a claim left on the old name would hold nothing, and the owner would
        need an admin to get the token back (see docs/architecture.md, "Tokens follow their model").
        """
        payload = json_object(body) if isinstance(body, bytes) else None
        old_name, new_name = (payload or {}).get("name"), (payload or {}).get("new_name")
        if not (isinstance(old_name, str) and isinstance(new_name, str)):
            return
        state = self._state
        try:
            moved = await follow_rename(
                database=state.database,
                upstream=state.upstream,
                principal=principal,
                old_name=old_name,
                new_name=new_name,
            )
            caller, detail = Caller.of(request, principal), {"from": old_name, "to": new_name}
            for token_id in moved:
                await audit_event(state.audit, caller, "token.model_renamed", "ok", token_id, detail)
        except (SQLAlchemyError, ApiError, httpx.HTTPError):
            # MLflow's answer stands (the model is renamed); the owner can still take the token to the new name.
            logger.exception("the token claims of renamed model %r could not follow it", old_name)


def _refuse_foreign_page(request: Request, allowed: tuple[str, ...]) -> None:
    """A browser's request sent by a page other than the API's own: refused, whatever credentials the browser added.

    Browsers send `Origin` on writes and on cross-origin reads that a page's script could see; the UI's own reads
    carry none, nor do the MLflow client and other programs. Reads were once left to CORS, but MLflow lets a page on
    any `localhost` port read with the browser's credentials (`Access-Control-Allow-Credentials`), so a page any
    local program served could read all that the logged-in user may (UI probe, 2026-11-29).
    """
    # Read off the raw headers: most calls have no Origin, and Starlette's `get` finds a missing one through a KeyError.
    origins = [value for name, value in request.scope["headers"] if name == b"origin"]
    if not origins or (origin := origins[0].decode("latin-1")) in allowed:
        return
    raise ApiError(
        403,
        f"Cross-origin request blocked: a page at {origin} may not use MLflow through this API. Use MLflow's "
        f"web UI at {allowed[0]}/api/mlflow/ (or set HOKUSAI_PUBLIC_URL to the address browsers use).",
        error_code=ErrorCode.PERMISSION_DENIED,
    )


def _abort_connection(scope: Scope) -> None:
    abort = scope.get(ABORT_CONNECTION)  # set by the server's protocol (request_head); absent under other servers
    if abort is not None:
        abort()


def _check_header_size(headers: list[tuple[bytes, bytes]]) -> None:
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if len(headers) > MAX_REQUEST_HEADERS or size > MAX_REQUEST_HEADER_BYTES:
        raise ApiError(
            431,
            f"Request headers too large: at most {MAX_REQUEST_HEADERS} headers and "
            f"{MAX_REQUEST_HEADER_BYTES // 1024} KiB in total are accepted.",
            error_code=ErrorCode.BAD_REQUEST,
        )


def _mount_relative(raw_path: str) -> str:
    for mount in MOUNTS:
        if raw_path == mount or raw_path.startswith(mount + "/"):
            return raw_path[len(mount) :] or "/"
    return raw_path


def _upstream_headers(request: Request, identity: dict[str, str]) -> list[tuple[str, str]]:
    named = ",".join(request.headers.getlist("connection"))  # every Connection header, should one be repeated
    connection_tokens = {token.strip().lower() for token in named.split(",")}
    headers = []
    for raw_name, raw_value in request.scope["headers"]:
        name = raw_name.decode("latin-1")
        if name in _STRIPPED_REQUEST or name in connection_tokens:
            continue
        try:
            # aiohttp writes header values as UTF-8: decoding them as UTF-8 sends the client's bytes unchanged.
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(
                400, f"The {name} header is neither ASCII nor UTF-8.", error_code=ErrorCode.BAD_REQUEST
            ) from exc
        headers.append((name, value))
    client = request.scope.get("client")
    headers.append(("x-forwarded-for", client[0] if client else "unknown"))
    headers.append(("via", "1.1 hokusai"))
    headers.extend(identity.items())
    return headers


def _declared_length(request: Request) -> int:
    """The declared Content-Length; unbounded when the body is chunked or the length is not a plain number."""
    value = request.headers.get("content-length", "").strip()
    if "transfer-encoding" in request.headers or not value.isdigit():
        return sys.maxsize
    return int(value)


class StreamedBody:
    """A request body streamed to MLflow as it arrives, and the write timeout that aiohttp does not have.

    aiohttp bounds connecting and each read, but a write waits for as long as MLflow keeps its socket open without
    reading. The body therefore notes when it handed a chunk over: aiohttp asks for the next one only once the last
    is written, so a chunk still held after the write timeout means MLflow stopped reading. Time spent waiting for
    the client's next chunk is not counted.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._handed_at: float | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for chunk in self._request.stream():
            if chunk:
                self._handed_at = loop.time()
                yield chunk
                self._handed_at = None
        self._request.scope[BODY_READ] = True

    async def within_write_timeout(self, sending: Awaitable[_T], timeout: float) -> _T:
        """Await `sending`; a 504 once one chunk has waited `timeout` seconds for MLflow to take it."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(sending)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=min(1.0, timeout / 4))
                if done:
                    return task.result()
                if self._handed_at is not None and loop.time() - self._handed_at >= timeout:
                    raise ApiError(504, "MLflow stopped reading the upload.", error_code=ErrorCode.DEADLINE_EXCEEDED)
        finally:
            task.cancel()
