"""The MLflow gateway: authenticate the Hokusai key, check the path and scope, stream to MLflow as the user."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import httpx
from sqlalchemy.exc import SQLAlchemyError
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai._printable import printable
from hokusai.server.audit import Caller, audit_event
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
    LAYER_MLFLOW,
    ApiError,
    error_code_for_status,
    error_response,
    mlflow_timed_out,
    mlflow_unavailable,
    readable_error_text,
)
from hokusai.server.keys import Principal
from hokusai.server.mlflow_rest import provisioning_errors
from hokusai.server.paths import (
    READ_METHODS,
    Access,
    PathInvalid,
    PathRejected,
    RoutedPath,
    check_artifact_query,
    rest_and_ajax,
    route_path,
)
from hokusai.server.registry.claims import follow_rename
from hokusai.validation import BASELINE_MODEL_PREFIX, is_baseline_model_name, is_reserved_tag

if TYPE_CHECKING:
    from hokusai.server.state import AppState

logger = logging.getLogger(__name__)

MOUNTS = ("/api/mlflow", "/mlflow")
_T = TypeVar("_T")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Credentials and client-supplied forwarding claims never reach MLflow; the gateway sets its own.
_STRIPPED_REQUEST = _HOP_BY_HOP | {
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
    "x-request-id",
}
# uvicorn writes its own Date ahead of the app's headers; relaying MLflow's too would send two.
_STRIPPED_RESPONSE = frozenset(name.encode() for name in _HOP_BY_HOP | {"set-cookie", "www-authenticate", "date"})
_VIA = (b"via", b"1.1 hokusai")
_REWRITTEN_BODY_LIMIT = 1024 * 1024
MLFLOW_USER_TAG = "mlflow.user"
_ERROR_BODY_LIMIT = 64 * 1024
_BUFFERED_BODY_LIMIT = 64 * 1024
# uvicorn's h11 limit only applies while a head is incomplete, so a 64 KB header arriving in one read was relayed
# to MLflow. The stock client sends ~10 small headers; a browser on the UI, cookies included, stays far below these.
MAX_REQUEST_HEADERS = 100
MAX_REQUEST_HEADER_BYTES = 32 * 1024


_Refusal = Callable[[dict[str, Any]], str | None]


def _baseline_name_refused(field: str) -> _Refusal:
    """Refuse naming a registered model under the baselines' prefix, held in `field`.

    Baseline models belong to the platform (see `registry.baselines.register_baseline`); a user who created one
    first would own every later baseline of its type, and could delete them.
    """

    def refusal(payload: dict[str, Any]) -> str | None:
        name = payload.get(field)
        if not (isinstance(name, str) and is_baseline_model_name(name)):
            return None
        return (
            f"Registered model names starting with '{BASELINE_MODEL_PREFIX}' are reserved for Hokusai's baselines. "
            "Register a baseline with POST /api/v1/models/baseline (the SDK's register_baseline_via_api), or "
            "choose another name."
        )

    return refusal


def _hokusai_tags_refused(tag_keys: Callable[[dict[str, Any]], list[object]]) -> _Refusal:
    """Refuse setting or removing the version tags Hokusai writes at registration, named by `tag_keys`.

    A tokenized version's token, metric and baseline are fixed when it is registered; the owner holds MANAGE on the
    model, so MLflow alone would let them rewrite the baseline, or tag a version with another user's token.
    """

    def refusal(payload: dict[str, Any]) -> str | None:
        reserved = sorted({key for key in tag_keys(payload) if isinstance(key, str) and is_reserved_tag(key)})
        if not reserved:
            return None
        return (
            f"Tag '{reserved[0]}' belongs to Hokusai: it is set when a model is registered through "
            "POST /api/v1/models/tokenized, and a registered version's token, metric and baseline never change. "
            "Register a new version to change them."
        )

    return refusal


def _artifact_location_refused(payload: dict[str, Any]) -> str | None:
    """Refuse choosing where a new experiment's artifacts go.

    MLflow writes a run's uploads under its experiment's `artifact_location`, on the server's own disk when that is a
    plain path: any directory MLflow's OS user can reach. The platform keeps every experiment under its artifact
    store instead.
    """
    # MLflow's parser takes a field under its JSON name too: `artifactLocation` sets the same field.
    if all(payload.get(field) in (None, "") for field in ("artifact_location", "artifactLocation")):
        return None
    return (
        "Only admins may set an experiment's artifact_location: MLflow would store the experiment's artifacts "
        "wherever it points, on the server's own disk too. Leave it out and the platform stores them with everyone "
        "else's, or ask an admin to create the experiment."
    )


def _tag_key(payload: dict[str, Any]) -> list[object]:
    return [payload.get("key")]


def _version_tag_keys(payload: dict[str, Any]) -> list[object]:
    tags = payload.get("tags")
    return [tag.get("key") for tag in tags if isinstance(tag, dict)] if isinstance(tags, list) else []


# Calls whose body a non-admin may not send as it is when its check finds a reason (a 403; MLflow never sees it).
_GUARDED_CALLS: dict[str, _Refusal] = {
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/experiments/create"), _artifact_location_refused),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/registered-models/create"), _baseline_name_refused("name")),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/registered-models/rename"), _baseline_name_refused("new_name")),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/set-tag"), _hokusai_tags_refused(_tag_key)),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/delete-tag"), _hokusai_tags_refused(_tag_key)),
    **dict.fromkeys(rest_and_ajax("/2.0/mlflow/model-versions/create"), _hokusai_tags_refused(_version_tag_keys)),
}
# A registered model renamed through the gateway takes its token claims along (see `_follow_rename`).
_RENAME_CALLS = frozenset(rest_and_ajax("/2.0/mlflow/registered-models/rename"))


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
            if _declares_body(request) and not request.scope.get("hokusai.body_read"):
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
            logger.info(
                "request body ended early (client gone or stalled): %s %s", scope["method"], printable(scope["path"])
            )
            return
        except Exception:
            # The gateway runs outside FastAPI (see main.HokusaiApp), so its catch-all handler is repeated here.
            logger.exception("unhandled error on %s %s", scope["method"], printable(scope["path"]))
            response = error_response(500, INTERNAL_ERROR_MESSAGE)
        try:
            await response(scope, receive, send)
        except ClientStalled:
            # uvicorn closes the connection, since the answer is incomplete; the MLflow connection was released.
            logger.warning(
                "client took nothing of the answer for %g s; connection closed: %s %s",
                self._state.settings.client_send_timeout_seconds,
                scope["method"],
                printable(scope["path"]),
            )

    async def _handle(self, request: Request) -> ASGIApp:
        _check_header_size(request.scope["headers"])
        raw_path = _mount_relative(request.scope.get("raw_path", b"").decode("latin-1"))
        try:
            routed = route_path(raw_path, request.method)
            if request.scope["query_string"]:
                check_artifact_query(routed, request.query_params)
        except PathInvalid as exc:
            raise ApiError(400, f"{exc}; nothing was sent to MLflow.", error_code="INVALID_PARAMETER_VALUE") from exc
        except PathRejected as exc:
            raise ApiError(
                404, f"No such MLflow endpoint through the gateway ({exc}).", error_code="ENDPOINT_NOT_FOUND"
            ) from exc
        if routed.access is Access.REFUSED:
            raise ApiError(
                403,
                "This MLflow feature (AI gateway, assistant, MCP, secrets, demo data) is not offered by Hokusai.",
                error_code="PERMISSION_DENIED",
            )
        _refuse_foreign_page(request, self._state.settings.browser_origins)
        principal = None
        if routed.access is not Access.PUBLIC:
            principal = await self._state.authenticate(request)
            await self._state.require_scope(request, principal, routed.access.value)
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
        if principal is not None and not principal.is_admin and path in _GUARDED_CALLS:
            return await _guarded_body(request, _GUARDED_CALLS[path])  # first: no rewrite below may skip a guard
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
        if path in _RENAME_CALLS:
            return await _read_limited(request, _REWRITTEN_BODY_LIMIT)
        if _declared_length(request) <= _BUFFERED_BODY_LIMIT:
            # Small bodies (most MLflow calls) are read whole and sent with the head in one write, which costs
            # aiohttp less than a streamed payload; anything larger or chunked streams through untouched.
            return await _read_limited(request, _BUFFERED_BODY_LIMIT)
        return StreamedBody(request)

    async def _rewrite_create(self, request: Request, path: str, principal: Principal) -> bytes:
        """Stamp the authenticated owner on new runs, logged models and datasets, and send the Default experiment to
        the owner's own one.

        MLflow trusts whatever creator a client claims; and a non-admin may not write to experiment 0, so a
        bare `mlflow.start_run()` or `@mlflow.trace` would fail (see `default_experiment`). A body that needs
        neither change goes out byte for byte.
        """
        body = await _read_limited(request, _REWRITTEN_BODY_LIMIT)
        payload = _json_object(body) if body else {}
        if payload is None:
            return body
        changed = False
        if path in RUN_CREATE:
            _stamp_owner(payload, principal.owner)
            changed = True
        elif path in LOGGED_MODEL_CREATE:
            changed = _owner_in_tag_list(payload, principal.owner, add=True)
        elif path in DATASET_CREATE:
            changed = _owner_in_dataset_tags(payload, principal.owner)
        field = CREATION_CALLS[path]
        if not principal.is_admin and field.names_default(payload):
            experiment_id = await self._state.upstream.default_experiment_id(principal)
            if experiment_id is not None:
                field.point_at(payload, experiment_id)
                changed = True
        return json.dumps(payload).encode() if changed else body

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
        body = await _read_limited(request, _REWRITTEN_BODY_LIMIT)
        payload = _json_object(body)
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
        return json.dumps(payload).encode()

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
        # a GET without the body: MLflow is asked for the GET, and `_relay` sends on only its head.
        method = "GET" if request.method == "HEAD" else request.method
        try:
            sending = upstream.session.request(method, url, headers=headers, data=body, allow_redirects=False)
            if isinstance(body, StreamedBody):
                response = await body.within_write_timeout(sending, self._state.settings.upstream_write_timeout_seconds)
            else:
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
        if routed.decoded in _RENAME_CALLS and response.status == 200 and principal is not None:
            await self._follow_rename(request, principal, body)
        body_unread = isinstance(body, StreamedBody) and not request.scope.get("hokusai.body_read")
        relay = await _relay(response, request.method, principal, routed, body_unread=body_unread)
        if isinstance(relay, StreamingResponse):
            return _SendDeadline(relay, self._state.settings.client_send_timeout_seconds, release=response.release)
        return relay

    async def _follow_rename(self, request: Request, principal: Principal, body: bytes | StreamedBody | None) -> None:
        """Point the renamed model's token claims at its new name, so its tokens stay its own.

        MLflow has renamed the model by now; a claim left on the old name would hold nothing, and the owner would
        need an admin to get the token back (see docs/architecture.md, "Tokens follow their model").
        """
        payload = _json_object(body) if isinstance(body, bytes) else None
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


def _stamp_owner(payload: dict[str, Any], owner: str) -> None:
    """Record `owner` as the creator of a new run, as `user_id` and in the `mlflow.user` tag the client sent.

    MLflow keeps whatever a client claims in both (the stock client sends the local OS user), and its web UI shows
    the tag as the run's user.
    """
    payload["user_id"] = owner
    _owner_in_tag_list(payload, owner)


def _owner_in_tag_list(payload: dict[str, Any], owner: str, *, add: bool = False) -> bool:
    """`owner` as the value of the `mlflow.user` tag in the body's list of tags where the client sent one (a run's,
    whose record is its `user_id`), or in any case (`add`: a logged model's, which has no other record of its
    creator); whether that changed the body. A `tags` that is not a list is left for MLflow's handler to refuse."""
    tags = payload.get("tags")
    if tags is None and add:
        tags = payload["tags"] = []
    if not isinstance(tags, list):
        return False
    named = [tag for tag in tags if isinstance(tag, dict) and tag.get("key") == MLFLOW_USER_TAG]
    if not named and add:
        tags.append({"key": MLFLOW_USER_TAG, "value": owner})
        return True
    changed = False
    for tag in named:
        if tag.get("value") != owner:
            tag["value"] = owner
            changed = True
    return changed


def _owner_in_dataset_tags(payload: dict[str, Any], owner: str) -> bool:
    """`owner` as a new dataset's `mlflow.user` tag, sent or not: MLflow records that tag as the dataset's
    `created_by`. Its tags come as a JSON object in a string; one that is not is left for MLflow's handler to refuse.
    Whether that changed the body."""
    sent = payload.get("tags")
    if sent is not None and not isinstance(sent, str):
        return False
    try:
        tags = json.loads(sent) if sent else None
    except ValueError:
        return False
    if tags is None:  # no tags, or the JSON `null`
        tags = {}
    if not isinstance(tags, dict) or tags.get(MLFLOW_USER_TAG) == owner:
        return False
    tags[MLFLOW_USER_TAG] = owner
    payload["tags"] = json.dumps(tags)
    return True


async def _guarded_body(request: Request, refusal: _Refusal) -> bytes:
    """The body of a guarded call (see `_GUARDED_CALLS`), unless its check refuses it."""
    body = await _read_limited(request, _REWRITTEN_BODY_LIMIT)
    payload = _json_object(body)
    reason = refusal(payload) if payload is not None else None
    if reason is not None:
        raise ApiError(403, reason, error_code="PERMISSION_DENIED")
    return body


def _refuse_foreign_page(request: Request, allowed: tuple[str, ...]) -> None:
    """A browser's write sent by a page other than the API's own: refused, whatever credentials the browser added.

    Browsers send `Origin` on writes; the MLflow client and other programs send none, and reads are left to CORS.
    """
    origin = request.headers.get("origin")
    if origin is None or origin in allowed or request.method in READ_METHODS:
        return
    raise ApiError(
        403,
        f"Cross-origin request blocked: a page at {origin} may not write to MLflow through this API. Use MLflow's "
        f"web UI at {allowed[0]}/api/mlflow/ (or set HOKUSAI_PUBLIC_URL to the address browsers use).",
        error_code="PERMISSION_DENIED",
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as MLflow's handlers read it; None when that is not a JSON object, and MLflow answers it as without
    the gateway.

    MLflow decodes a body that is a JSON string once more (`_get_normalized_request_json`, for legacy clients that
    double-encode): `"{\"name\": …}"` is an object to MLflow, so the checks and rewrites here must read it as one.
    """
    try:
        payload = json.loads(body)
        if isinstance(payload, str):
            payload = json.loads(payload)
    except ValueError:
        return None
    except RecursionError:  # thousands of nested brackets: no MLflow call is shaped so, and MLflow's parser fails too
        raise ApiError(400, _TOO_DEEP, error_code="INVALID_PARAMETER_VALUE") from None
    return payload if isinstance(payload, dict) else None


def _check_header_size(headers: list[tuple[bytes, bytes]]) -> None:
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if len(headers) > MAX_REQUEST_HEADERS or size > MAX_REQUEST_HEADER_BYTES:
        raise ApiError(
            431,
            f"Request headers too large: at most {MAX_REQUEST_HEADERS} headers and "
            f"{MAX_REQUEST_HEADER_BYTES // 1024} KiB in total are accepted.",
            error_code="BAD_REQUEST",
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
            raise ApiError(400, f"The {name} header is neither ASCII nor UTF-8.", error_code="BAD_REQUEST") from exc
        headers.append((name, value))
    client = request.client.host if request.client else "unknown"
    headers.append(("x-forwarded-for", client))
    headers.append(("via", "1.1 hokusai"))
    headers.extend(identity.items())
    return headers


def _declared_length(request: Request) -> int:
    """The declared Content-Length; unbounded when the body is chunked or the length is not a plain number."""
    value = request.headers.get("content-length", "").strip()
    if "transfer-encoding" in request.headers or not value.isdigit():
        return sys.maxsize
    return int(value)


def _declares_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


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
        self._request.scope["hokusai.body_read"] = True

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
                    raise ApiError(504, "MLflow stopped reading the upload.", error_code="DEADLINE_EXCEEDED")
        finally:
            task.cancel()


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks = bytearray()
    async for chunk in request.stream():
        chunks.extend(chunk)
        if len(chunks) > limit:
            raise ApiError(
                413, f"Request body larger than {limit} bytes for this endpoint.", error_code="INVALID_PARAMETER_VALUE"
            )
    request.scope["hokusai.body_read"] = True
    return bytes(chunks)


def _response_headers(response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    """MLflow's headers as received (repeated ones kept, values byte for byte), minus hop-by-hop and cookies."""
    headers = []
    for name, value in response.raw_headers:
        lowered = name.lower()
        if lowered not in _STRIPPED_RESPONSE:
            headers.append((lowered, value))
    headers.append(_VIA)
    return headers


class ClientStalled(Exception):
    """The client took nothing of a streamed answer within the send timeout."""


class _SendDeadline:
    """A streamed answer whose every piece must be taken by the client within `timeout` seconds.

    uvicorn waits as long as it takes for a client's socket to drain, and meanwhile the answer holds one of the pooled
    MLflow connections: a few clients that open downloads and never read would take them all, and every other caller
    would get a 503. Time between pieces spent waiting for MLflow is not counted (that is the read timeout's job).
    """

    def __init__(self, app: ASGIApp, timeout: float, *, release: Callable[[], None]) -> None:
        self._app = app
        self._timeout = timeout
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_within_deadline(message: Message) -> None:
            try:
                async with asyncio.timeout(self._timeout):  # no task per piece, unlike wait_for
                    await send(message)
            except TimeoutError as exc:
                raise ClientStalled from exc

        try:
            await self._app(scope, receive, send_within_deadline)
        except ClientStalled:
            self._release()  # at once, not when the abandoned body iterator is collected: closes the MLflow connection
            raise


class _Buffered:
    """A relayed response already read whole: one start message and one body message."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _relay(
    response: aiohttp.ClientResponse,
    method: str,
    principal: Principal | None,
    routed: RoutedPath,
    *,
    body_unread: bool,
) -> ASGIApp:
    """MLflow's answer for the client; `body_unread` when MLflow answered before taking the whole request body.

    For a HEAD, MLflow's answer to the GET: uvicorn sends its head only, and a body too large to read whole is
    left unread (releasing the response closes that MLflow connection rather than download a model for nothing).
    """
    if response.status >= 400:
        return await _relay_error(response, principal, routed, body_unread=body_unread)
    length = response.content_length
    if method == "HEAD" and (length is None or length > _BUFFERED_BODY_LIMIT):
        response.release()
        return _Buffered(response.status, _response_headers(response), b"")
    if response.status in (204, 304) or (length is not None and length <= _BUFFERED_BODY_LIMIT):
        # Most MLflow answers are small JSON with a Content-Length. Reading them whole (bounded by the limit) and
        # sending one body message costs far less than a StreamingResponse, which under uvicorn's ASGI spec 2.3
        # starts a task group and a disconnect listener per response. MLflow's headers, Content-Length included,
        # are relayed as they are; the bytes are the raw ones (no decompression).
        return _Buffered(response.status, _response_headers(response), await _read_whole(response))
    return _streamed(response, _response_headers(response))


async def _read_whole(response: aiohttp.ClientResponse) -> bytes:
    """The body of an answer known to be small; MLflow failing mid-answer is a 504 or a 503, as before it answered."""
    try:
        return await response.read()
    except TimeoutError as exc:
        raise mlflow_timed_out() from exc
    except aiohttp.ClientError as exc:  # MLflow dropped the connection mid-answer
        raise mlflow_unavailable() from exc
    finally:
        response.release()


def _streamed(response: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]]) -> StreamingResponse:
    relay = StreamingResponse(
        _relay_body(response), status_code=response.status, background=BackgroundTask(response.release)
    )
    relay.raw_headers = headers
    return relay


async def _relay_body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    # Released here as well as in the background task: on a server speaking ASGI spec 2.4, Starlette skips the
    # background task when the client disconnects mid-download (uvicorn 0.54 speaks 2.3, where it still runs), and
    # an unreleased response would keep its pooled upstream connection forever. Releasing a response whose body was
    # not read to the end closes its connection instead of pooling it.
    try:
        while chunk := await response.content.readany():
            yield chunk
    finally:
        response.release()


_MLFLOW_REFUSAL = "Permission denied"
# MLflow's table of HTTP statuses has no entry for FEATURE_DISABLED, so it answers 500, which clients log as a server
# fault and the stock client retries for minutes. It is the request that asks for a feature this MLflow has off (an
# `X-MLflow-Workspace` header without `--enable-workspaces`): the caller's to change, as a 400 says.
_CALLERS_ERRORS_MLFLOW_ANSWERS_AS_500 = frozenset({"FEATURE_DISABLED"})
_TOO_DEEP = "The request body nests JSON too deeply to be read (MLflow's calls take flat objects); nothing was sent."


def _refusal_explained(owner: str, routed: RoutedPath) -> str:
    refused = f"{_MLFLOW_REFUSAL}: MLflow refused this to user '{owner}'."
    if "/webhooks" in routed.decoded:
        # MLflow's auth app lets only its admins manage model-registry webhooks (`sender_is_admin`).
        return f"{refused} Model-registry webhooks are for MLflow admins: use a Hokusai key with the 'admin' scope."
    owned = f"{refused} Experiments, runs, models, prompts, traces and jobs belong to the user who created them"
    if routed.access is Access.READ:
        # Under the default permission READ, MLflow still keeps some things to their owner (jobs, for one); below it
        # (HOKUSAI_MLFLOW_DEFAULT_PERMISSION) it keeps everything. The wording holds for both.
        return f"{owned}, and this one is not open to other users; ask its owner or an admin for access."
    # Registry names are shared by everyone, so the usual way into someone else's model is a name that was taken.
    registry = "/registered-models" in routed.decoded or "/model-versions" in routed.decoded
    own = "a model name" if registry else "an experiment"
    return f"{owned}, and others may not change them; ask the owner or an admin for access, or use {own} of your own."


async def _relay_error(
    response: aiohttp.ClientResponse, principal: Principal | None, routed: RoutedPath, *, body_unread: bool
) -> ASGIApp:
    """MLflow's errors, unchanged but marked `layer: mlflow`; plain-text ones wrapped in the JSON envelope.

    MLflow's auth app refuses with a bare "Permission denied" that names neither the user nor a way out; the stock
    client shows only that. The wrapped message says which user MLflow refused and what to do. An error that came
    before MLflow took the whole upload closes the connection, as the gateway's own refusals do: otherwise uvicorn
    would read the rest of a multi-GB body for nothing before the next request.
    """
    headers = _response_headers(response)
    if body_unread:
        headers.append((b"connection", b"close"))
    length = response.content_length
    if length is None or length > _ERROR_BODY_LIMIT:
        return _streamed(response, headers)  # too large (or of unknown size) to rewrite: relayed as it is
    body = await _read_whole(response)
    try:
        payload: object = json.loads(body)
    except ValueError:
        payload = None
    status = response.status
    if isinstance(payload, dict):
        _complete_envelope(payload, status)
        code = payload["error_code"]
        if status == 500 and isinstance(code, str) and code in _CALLERS_ERRORS_MLFLOW_ANSWERS_AS_500:
            status = 400
    else:
        text = readable_error_text(body, response.headers.get("content-type"))
        if status == 403 and text == _MLFLOW_REFUSAL and principal is not None:
            text = _refusal_explained(principal.owner, routed)
        payload = {
            "error_code": error_code_for_status(status),
            "message": text or "MLflow refused.",
            "layer": LAYER_MLFLOW,
        }
    rewritten = (b"content-length", b"content-encoding", b"content-type")
    kept = [(name, value) for name, value in headers if name not in rewritten]
    encoded = json.dumps(payload).encode()
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    return _Buffered(status, kept, encoded)


def _complete_envelope(payload: dict[str, Any], status: int) -> None:
    """MLflow's JSON error, marked `layer: mlflow`, with `error_code` and `message` where it has none.

    MLflow's Flask handlers answer with both; its FastAPI routes (proxied artifacts, OTLP) answer FastAPI's
    `{"detail": ...}`, which is kept beside them.
    """
    payload.setdefault("layer", LAYER_MLFLOW)
    payload.setdefault("error_code", error_code_for_status(status))
    if "message" not in payload:
        detail = payload.get("detail")
        if isinstance(detail, str) and detail:
            payload["message"] = detail
        else:  # FastAPI's validation errors list their problems; anything else is said as it came
            payload["message"] = json.dumps(detail) if detail not in (None, "") else "MLflow refused."
