"""Contains the HTTP client of the Hokusai API: the key header, bounded retries and the one error mapper."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Generator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from hokusai import __version__
from hokusai.errors import (
    LAYER_MLFLOW,
    TRANSIENT_STATUSES,
    ErrorCode,
    HokusaiAPIError,
    HokusaiAuthError,
    HokusaiConfigurationError,
    HokusaiConflictError,
    HokusaiConnectionError,
    HokusaiInvalidRequestError,
    HokusaiNotFoundError,
    HokusaiPermissionError,
    HokusaiRateLimitError,
)
from hokusai.validation import key_prefix

if TYPE_CHECKING:
    from httpx._client import UseClientDefault

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "IDEMPOTENCY_HEADER",
    "WHOAMI_PATH",
    "BearerAuth",
    "HokusaiClient",
    "api_error",
    "fetch_identity",
    "json_body",
    "unexpected_response",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 5.0
USER_AGENT = f"hokusai-sdk/{__version__}"
REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
WHOAMI_PATH = "/api/v1/auth/whoami"
LAYER_UNKNOWN = "unknown"  # the body was not the Hokusai envelope: a proxy, a load balancer, or a wrong URL

# 408: the API gave up on a request body that stopped arriving; nothing was stored, so sending it again is safe.
# A rate limit is left to the caller, who can wait out its `retry_after`; the SDK's own retries would add to the load.
_RETRY_STATUSES = TRANSIENT_STATUSES - {429}
# Requests that may be sent again after they might have reached the server. DELETE is not among them: a revoked key
# or a released token answers its repeat with 409 or 404, which would report a success as a failure.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})
# Failures that prove the request never reached the server: sending it again is safe whatever it does.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BODY_EXCERPT_LENGTH = 500
# How the API names a scope a key lacks ("lacks the 'write' scope"); its other refusals say what to do themselves.
_MISSING_SCOPE_RE = re.compile(r"the '(read|write|admin)' scope")
_ERROR_CLASSES: dict[int, type[HokusaiAPIError]] = {
    401: HokusaiAuthError,
    403: HokusaiPermissionError,
    404: HokusaiNotFoundError,
    409: HokusaiConflictError,
}
CONNECTION_HINT = (
    "is the Hokusai API running? `hokusai server` / check the API URL (--api-url, HOKUSAI_API_URL or the saved login)"
)
SLOW_ANSWER_HINT = (
    "the API is up but slow to answer, most likely waiting on its MLflow: retry shortly; if it persists, its "
    "/ready endpoint says whether MLflow is answering"
)
_MLFLOW_403_HINT = (
    "MLflow refused this resource: it belongs to another user, or (where the message says so) may not exist; "
    "check its name or id, use your own experiment/model, or ask an admin for access (grants need an admin key)"
)

RequestAuth: TypeAlias = "httpx.Auth | UseClientDefault | None"

logger = logging.getLogger(__name__)

# Indirection so tests can record the backoff instead of sleeping.
_sleep = time.sleep


class BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <token>``; the token never appears in a repr."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return f"{class_name}(token='**********')"


class HokusaiClient:
    """A small client for the Hokusai API; every error comes out as a :mod:`hokusai.errors` class.

    Usage::

        with HokusaiClient(api_key, api_url="http://127.0.0.1:8000") as client:
            identity = json_body(client.request("GET", "/api/v1/auth/whoami"))

    Parameters:
        api_key: sent as ``Authorization: Bearer <key>`` on every request (unless a request overrides ``auth``);
            ``None`` sends no credential.
        api_url: the API root; relative request URLs are joined to it, absolute ones are used as given.
        timeout: an :class:`httpx.Timeout`; on by default (:data:`DEFAULT_TIMEOUT`).
        max_retries: extra attempts after a failure to connect (any request: it never reached the server), and
            after any other connection error or a 408/502/503/504 for GET, HEAD, OPTIONS and PUT and for POSTs that
            carry an ``Idempotency-Key`` header.
        transport: an httpx transport, e.g. ``httpx.MockTransport`` in tests.
        refused_key_hint: the hint of the API's 401, when the caller knows where the key came from
            (:func:`hokusai._credentials.refused_key_fix`).
    """

    def __init__(
        self,
        api_key: str | None,
        *,
        api_url: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        refused_key_hint: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._refused_key_hint = refused_key_hint
        self.key_prefix = key_prefix(api_key) if api_key else None  # displayable; names the key without revealing it
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=self.api_url,
            auth=BearerAuth(api_key) if api_key else None,
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            transport=transport,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: RequestAuth = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send one request (with retries where safe) and return the successful response, or raise."""
        request = self._http.build_request(method, url, params=params, json=json, headers=headers)
        response = self._send(request, auth)
        try:
            _raise_for_status(response)
        except HokusaiAuthError as exc:
            # MLflow's 401 refuses the API's own credentials: no key of the caller's is at fault.
            if self._refused_key_hint is None or exc.layer == LAYER_MLFLOW:
                raise
            raise exc.with_hint(self._refused_key_hint) from None
        return response

    def _send(self, request: httpx.Request, auth: RequestAuth) -> httpx.Response:
        # A POST is replayed only when its caller marked it with an idempotency key, stating that the server answers a
        # repeat as the original (registrations: it finds the version an identical earlier request created).
        retryable = request.method in _IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in request.headers
        attempt = 0
        while True:
            try:
                response = self._http.send(request, auth=auth)
            except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:
                raise _unsendable_header(request) from exc
            except httpx.TransportError as exc:
                if not (retryable or isinstance(exc, _NOT_SENT)) or attempt >= self.max_retries:
                    raise _connection_error(request, exc) from exc
                delay = _backoff(attempt)
                logger.debug("%s %s failed (%s); retrying", request.method, request.url, exc.__class__.__name__)
            else:
                logger.debug("%s %s -> %d", request.method, request.url, response.status_code)
                wait = _retry_delay(response, attempt) if retryable and attempt < self.max_retries else None
                if wait is None:
                    return response
                response.close()
                delay = wait
            _sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HokusaiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return f"{class_name}(api_url={self.api_url!r}, api_key='**********')"


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON of a successful response; a typed error when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise unexpected_response(response, "a body that is not JSON") from exc


def fetch_identity(client: HokusaiClient) -> dict[str, Any]:
    """The key's identity (`GET /api/v1/auth/whoami`): `owner`, `key_id`, `key_prefix`, `scopes`, `expires_at`.

    Checked for the fields every Hokusai API sends: any server that answers 200 with JSON (another service on the
    port, a wrong path behind a proxy) must not pass for the API, nor have a key saved for it.
    """
    response = client.request("GET", WHOAMI_PATH)
    identity = json_body(response)
    if not (
        isinstance(identity, dict)
        and isinstance(identity.get("owner"), str)
        and isinstance(identity.get("key_id"), str)
        and isinstance(identity.get("scopes"), list)
    ):
        raise unexpected_response(response, "no Hokusai identity (owner, key_id, scopes): not the Hokusai API")
    return identity


def unexpected_response(response: httpx.Response, what: str) -> HokusaiAPIError:
    """An error for a 2xx answer the SDK cannot use, e.g. an HTML login page from a proxy."""
    return HokusaiAPIError(
        f"{response.request.url} answered {response.status_code} with {what}: {_excerpt(response)}",
        status=response.status_code,
        error_code="INVALID_RESPONSE",
        layer=LAYER_UNKNOWN,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        hint="check that the API URL (--api-url, HOKUSAI_API_URL or the saved login) is the Hokusai API root",
    )


def _raise_for_status(response: httpx.Response) -> None:
    """The one place that turns an error response into a typed exception.

    It reads the server's envelope ``{"error_code", "message", "layer"}`` (falling back to the status and the
    start of the body when there is none) and the ``X-Request-ID`` header; :func:`api_error` adds the hint.
    """
    if response.status_code < 400:
        return
    error_code, message, layer, field = _read_envelope(response)
    raise api_error(
        message,
        status=response.status_code,
        error_code=error_code,
        layer=layer,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        retry_after=_retry_after(response),
        field=field,
    )


def api_error(
    message: str,
    *,
    status: int,
    error_code: str,
    layer: str,
    request_id: str | None = None,
    retry_after: float | None = None,
    field: str | None = None,
) -> HokusaiAPIError:
    """The typed error for a status, with a hint naming the fix; the local backend uses it too.

    ``field`` is the input field a 400 names (the server's envelope carries it for its own validation errors).
    """
    common: dict[str, Any] = {
        "status": status,
        "error_code": error_code,
        "layer": layer,
        "request_id": request_id,
        "hint": _hint(status, error_code, layer, message, retry_after, field),
    }
    if status == 429:
        return HokusaiRateLimitError(message, retry_after=retry_after, **common)
    if status == 400:
        return HokusaiInvalidRequestError(message, field=field, **common)
    return _ERROR_CLASSES.get(status, HokusaiAPIError)(message, **common)


def _read_envelope(response: httpx.Response) -> tuple[str, str, str, str | None]:
    """The envelope's error code, message, layer and (for input errors) field."""
    fallback_code = f"HTTP_{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        field = body.get("field")
        return (
            str(body.get("error_code") or fallback_code),
            body["message"],
            str(body.get("layer") or LAYER_UNKNOWN),
            field if isinstance(field, str) else None,
        )
    message = f"{response.status_code} {response.reason_phrase} with a body that is not a Hokusai error: "
    return fallback_code, message + _excerpt(response), LAYER_UNKNOWN, None


def _excerpt(response: httpx.Response) -> str:
    # httpx decodes with errors="replace", so building the message never raises a second error.
    text = response.text.strip()
    return repr(text[:_BODY_EXCERPT_LENGTH]) if text else "(empty body)"


def _not_found_hint(message: str) -> str | None:
    # The server's messages name what is missing: a run (registering from it), a token or a model version.
    if message.startswith("No account '"):
        return None  # a transfer's target: the message says how an account comes to exist
    if "run '" in message.lower():
        return "check the run id and the model's artifact path (the `name` given to log_model)"
    if message.startswith("No API key with id"):
        return "`hokusai keys list` shows the ids of your keys (`--all` every account's, for admins)"
    if message.startswith("Token '"):
        return "no model holds this token: check its spelling, or claim it by registering a model with it"
    return "check the model name and version; `hokusai models list` shows the models you can see"


# `None`: the message itself says what to do (the server's and the local store's alike).
_CONFLICT_HINTS: dict[str, str | None] = {
    ErrorCode.TOKEN_ALREADY_CLAIMED: None,
    ErrorCode.INVALID_STATE: None,
    ErrorCode.REGISTRATION_CONFLICT: None,
    ErrorCode.TOKEN_MODEL_GONE: "name the model the token should move to: `hokusai tokens transfer ... --model <name>`",
}


def _hint(
    status: int, error_code: str, layer: str, message: str, retry_after: float | None, field: str | None
) -> str | None:
    if status == 401:
        # From MLflow, a 401 means it refused the API's own credentials: the message says so, and whom to tell.
        return None if layer == LAYER_MLFLOW else "check HOKUSAI_API_KEY or run `hokusai login`"
    if status == 403:
        if layer == LAYER_MLFLOW:
            return _MLFLOW_403_HINT
        scope = _MISSING_SCOPE_RE.search(message)
        if scope is None or "ask an admin" in message.lower():
            return None  # nothing to add, or the message already says what to do (this API's scope 403s do)
        return f"this key lacks the '{scope[1]}' scope; ask an admin for a key with that scope"
    if status == 404:
        if error_code in (ErrorCode.ENDPOINT_NOT_FOUND, "HTTP_404"):
            return (
                "check the API URL (--api-url, HOKUSAI_API_URL or the saved login): it must be the API root "
                "(e.g. http://127.0.0.1:8000), not a sub-path"
            )
        return _not_found_hint(message)
    if status == 408:
        return "the request body stopped arriving at the API (a stalled network or client): send it again"
    if status == 409:
        return _CONFLICT_HINTS.get(error_code, "the resource changed or already exists; reload it and retry")
    if status == 429:
        return f"wait {retry_after:g} s and retry" if retry_after is not None else "slow down and retry later"
    if status in (400, 422):
        what = f"fix {field}" if field else "fix what the message names"
        return f"{what}; docs/troubleshooting.md lists the rules"
    if status in (502, 503):
        return (
            "the API or its MLflow is temporarily unavailable: retry shortly, or set HOKUSAI_OPTIONAL_MLFLOW=true "
            "to register locally and run `hokusai sync` later"
        )
    if status == 504:
        return "MLflow did not answer in time: retry; if it persists, ask the operator to check MLflow"
    if status >= 500:
        return "the server failed: retry, and quote the request id when reporting it"
    return "see docs/troubleshooting.md"


def _unsendable_header(request: httpx.Request) -> HokusaiConfigurationError:
    """The error for a request that HTTP cannot carry: a header holding a line break, a NUL or a non-ASCII character.

    Its cause is not quoted: the header is most likely a credential (an MLflow token or password, a key given
    straight to the client), and httpx's message holds it whole. Nothing was sent, so nothing is retried.
    """
    return HokusaiConfigurationError(
        f"The request to {request.url.host} was not sent: a credential or other header holds a character HTTP "
        "headers cannot carry (a line break, a NUL or a non-ASCII character); it is not shown, as it may be a secret.",
        hint="check the API key and the MLflow credentials (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_PASSWORD) for "
        "characters pasted with them",
    )


def _connection_error(request: httpx.Request, exc: httpx.TransportError) -> HokusaiConnectionError:
    where = request.url.host + (f":{request.url.port}" if request.url.port else "")
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        # Connected, so the API is up: what it waited on is most likely its MLflow.
        what, hint = f"{where} accepted the request but did not answer in time", SLOW_ANSWER_HINT
    elif isinstance(exc, httpx.TimeoutException):
        what, hint = f"{where} did not answer in time", CONNECTION_HINT
    else:
        what, hint = f"Could not connect to {where}", CONNECTION_HINT
    return HokusaiConnectionError(f"{what} ({exc.__class__.__name__}: {exc}).", hint=hint)


def _backoff(attempt: int) -> float:
    # Exponential with jitter, so many clients recovering together do not retry in lockstep.
    return min(MAX_BACKOFF, INITIAL_BACKOFF * 2**attempt) * random.uniform(0.5, 1.0)


def _retry_delay(response: httpx.Response, attempt: int) -> float | None:
    """How long to wait before retrying this response, or ``None`` not to retry it."""
    if response.status_code not in _RETRY_STATUSES:
        return None
    retry_after = _retry_after(response)
    if retry_after is None:
        return _backoff(attempt)
    # A server asking for a long pause gets its answer now rather than a blocked caller.
    return None if retry_after > MAX_BACKOFF else max(retry_after, _backoff(attempt))


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, from either of its two forms (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
