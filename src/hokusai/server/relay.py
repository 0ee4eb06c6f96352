"""MLflow's answer on its way back to the client: headers filtered, small bodies sent whole, large ones streamed
under a send deadline, errors in the common envelope and marked `layer: mlflow`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai._printable import printable
from hokusai.errors import LAYER_MLFLOW, ErrorCode, error_envelope
from hokusai.server.errors import (
    error_code_for_status,
    mlflow_refused_the_apis_credentials,
    mlflow_timed_out,
    mlflow_unavailable,
    readable_error_text,
    service_account_refused,
)
from hokusai.server.keys import Principal
from hokusai.server.middleware.request_id import REQUEST_ID_HEADER
from hokusai.server.paths import Access, RoutedPath

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
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
# uvicorn writes its own Date ahead of the app's headers, and the API its own X-Request-ID (middleware.request_id):
# relaying MLflow's too would send two.
_STRIPPED_RESPONSE = frozenset(
    name.encode() for name in HOP_BY_HOP | {"set-cookie", "www-authenticate", "date", REQUEST_ID_HEADER}
)
_VIA = (b"via", b"1.1 hokusai")
_ERROR_BODY_LIMIT = 64 * 1024
# Answers (and request bodies) up to this size are read whole and sent in one piece; larger ones stream.
BUFFERED_BODY_LIMIT = 64 * 1024


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


class UpstreamBroke(Exception):
    """MLflow's streamed answer ended before its end: MLflow died, dropped the connection or stopped sending."""


class SendDeadline:
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


async def client_answer(
    response: aiohttp.ClientResponse,
    method: str,
    principal: Principal | None,
    routed: RoutedPath,
    *,
    body_unread: bool,
    identity_mode: str,
) -> ASGIApp:
    """MLflow's answer for the client; `body_unread` when MLflow answered before taking the whole request body;
    `identity_mode` as the gateway acts upstream (settings), which decides whom MLflow refused.

    For a HEAD, MLflow's answer to the GET: uvicorn sends its head only, and a body too large to read whole is
    left unread (releasing the response closes that MLflow connection rather than download a model for nothing).
    """
    if response.status >= 400:
        return await _relay_error(response, principal, routed, body_unread=body_unread, identity_mode=identity_mode)
    length = response.content_length
    if method == "HEAD" and (length is None or length > BUFFERED_BODY_LIMIT):
        response.release()
        return _Buffered(response.status, _response_headers(response), b"")
    if response.status in (204, 304) or (length is not None and length <= BUFFERED_BODY_LIMIT):
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
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamBroke(type(exc).__name__) from exc
    finally:
        response.release()


_MLFLOW_REFUSAL = "Permission denied"
# MLflow's table of HTTP statuses has no entry for FEATURE_DISABLED, so it answers 500, which clients log as a server
# fault and the stock client retries for minutes. It is the request that asks for a feature this MLflow has off (an
# `X-MLflow-Workspace` header without `--enable-workspaces`): the caller's to change, as a 400 says.
_CALLERS_ERRORS_MLFLOW_ANSWERS_AS_500 = frozenset({"FEATURE_DISABLED"})


# MLflow answers a store it cannot reach with the driver's own text: its database's host, port and name.
_DATABASE_DRIVER_ERROR = "OperationalError"
_MLFLOW_DATABASE_UNAVAILABLE = "MLflow's database is unavailable right now; retry shortly."


def _withhold_database_details(payload: dict[str, Any], routed: RoutedPath) -> None:
    """The operator reads the driver's error in the log; the caller learns only that MLflow's store is down."""
    first_line = str(payload["message"]).strip().splitlines()[0]
    logger.warning("MLflow's database is unavailable (%s): %s", printable(routed.decoded), first_line)
    payload["message"] = _MLFLOW_DATABASE_UNAVAILABLE


def _refusal_explained(owner: str, routed: RoutedPath, identity_mode: str) -> str:
    if identity_mode == "service-account":
        return f"{_MLFLOW_REFUSAL}: {service_account_refused('do this')}"
    refused = f"{_MLFLOW_REFUSAL}: MLflow refused this to user '{owner}'."
    if "/webhooks" in routed.decoded:
        # MLflow's auth app lets only its admins manage model-registry webhooks (`sender_is_admin`).
        return f"{refused} Model-registry webhooks are for MLflow admins: use a Hokusai key with the 'admin' scope."
    owned = f"{refused} Experiments, runs, models, prompts, traces and jobs belong to the user who created them"
    if routed.access is Access.READ:
        # Under the default permission READ, MLflow still keeps some things to their owner (jobs, for one); below it
        # (HOKUSAI_MLFLOW_DEFAULT_PERMISSION) it keeps everything. The wording holds for both.
        return f"{owned}, and this one is not open to other users; ask an admin for access."
    # Registry names are shared by everyone, so the usual way into someone else's model is a name that was taken.
    registry = "/registered-models" in routed.decoded or "/model-versions" in routed.decoded
    own = "a model or prompt name" if registry else "an experiment"  # a prompt is a registered model in MLflow
    return f"{owned}, and others may not change them; ask an admin for access, or use {own} of your own."


async def _relay_error(
    response: aiohttp.ClientResponse,
    principal: Principal | None,
    routed: RoutedPath,
    *,
    body_unread: bool,
    identity_mode: str,
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
    status = response.status
    if status == 401 and principal is not None:
        return _credentials_refused(response, headers, identity_mode)
    length = response.content_length
    if length is None or length > _ERROR_BODY_LIMIT:
        return _streamed(response, headers)  # too large (or of unknown size) to rewrite: relayed as it is
    body = await _read_whole(response)
    try:
        payload: object = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        _complete_envelope(payload, status)
        code = payload["error_code"]
        if status == 500 and isinstance(code, str) and code in _CALLERS_ERRORS_MLFLOW_ANSWERS_AS_500:
            status = 400
        if status >= 500 and _DATABASE_DRIVER_ERROR in str(payload["message"]):
            _withhold_database_details(payload, routed)
    else:
        text = readable_error_text(body, response.headers.get("content-type"))
        if status == 403 and text == _MLFLOW_REFUSAL and principal is not None:
            text = _refusal_explained(principal.owner, routed, identity_mode)
        payload = error_envelope(error_code_for_status(status), text or "MLflow refused.", LAYER_MLFLOW)
    return _enveloped(status, headers, payload)


def _enveloped(status: int, headers: list[tuple[bytes, bytes]], payload: dict[str, Any]) -> _Buffered:
    rewritten = (b"content-length", b"content-encoding", b"content-type")
    kept = [(name, value) for name, value in headers if name not in rewritten]
    encoded = json.dumps(payload).encode()
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    return _Buffered(status, kept, encoded)


def _credentials_refused(
    response: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]], identity_mode: str
) -> _Buffered:
    """MLflow's 401 to a caller whose key the gateway accepted: MLflow refused the gateway's own credentials.

    `headers` come without MLflow's `WWW-Authenticate` (`_response_headers`): a browser would ask the user for a login
    that cannot help.
    """
    logger.warning("MLflow answered 401 to the gateway: it refuses the API's credentials (GET /ready)")
    response.release()
    payload = error_envelope(
        ErrorCode.UNAUTHENTICATED, mlflow_refused_the_apis_credentials(identity_mode), LAYER_MLFLOW
    )
    return _enveloped(401, headers, payload)


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
