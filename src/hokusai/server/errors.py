"""The one JSON error envelope of the API: `{"error_code", "message", "layer"}`, understood by the MLflow client."""

from __future__ import annotations

import logging
from html.parser import HTMLParser
from http import HTTPStatus

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from hokusai.errors import LAYER_API, ErrorCode, HokusaiValidationError, error_envelope
from hokusai.server.middleware.request_id import logged_path
from hokusai.validation import holds_control_character

logger = logging.getLogger(__name__)

# The code MLflow's client derives from a bare status (mlflow/utils/rest_utils.py), so both sides agree.
_CODE_FOR_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.ENDPOINT_NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    409: ErrorCode.RESOURCE_CONFLICT,
    413: ErrorCode.BAD_REQUEST,
    422: ErrorCode.INVALID_PARAMETER_VALUE,
    429: ErrorCode.REQUEST_LIMIT_EXCEEDED,
    500: ErrorCode.INTERNAL_ERROR,
    501: ErrorCode.NOT_IMPLEMENTED,
    502: ErrorCode.TEMPORARILY_UNAVAILABLE,
    503: ErrorCode.TEMPORARILY_UNAVAILABLE,
    504: ErrorCode.DEADLINE_EXCEEDED,
}


RETRY_AFTER_SECONDS = "2"
_CHALLENGES = [(b"www-authenticate", b"Bearer"), (b"www-authenticate", b'Basic realm="hokusai"')]
INTERNAL_ERROR_MESSAGE = "Internal error in the Hokusai API; the request id identifies it in the server log."


def error_code_for_status(status: int) -> str:
    return _CODE_FOR_STATUS.get(status, ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR)


class ApiError(Exception):
    """Raised anywhere in the server to answer with the envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        layer: str = LAYER_API,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code or error_code_for_status(status)
        self.message = message
        self.layer = layer
        self.headers = headers or {}
        super().__init__(message)

    def __repr__(self) -> str:
        class_name = self.__class__.__name__
        return f"{class_name}(status={self.status}, error_code={self.error_code!r}, message={self.message!r})"


class _HtmlPageText(HTMLParser):
    """The words of an HTML error page: its title, its paragraphs, and all of its text for a page with neither."""

    _COUNTED = ("title", "p", "script", "style")

    def __init__(self) -> None:
        super().__init__()
        self.title: list[str] = []
        self.paragraphs: list[str] = []
        self.everything: list[str] = []
        self._open = dict.fromkeys(self._COUNTED, 0)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._open:
            self._open[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if self._open.get(tag):
            self._open[tag] -= 1

    def handle_data(self, data: str) -> None:
        words = " ".join(data.split())
        if not words or self._open["script"] or self._open["style"]:
            return
        self.everything.append(words)
        if self._open["title"]:
            self.title.append(words)
        elif self._open["p"]:
            self.paragraphs.append(words)


def readable_error_text(body: bytes, content_type: str | None) -> str:
    """A non-JSON error body as one line of text; an HTML page becomes "<title>: <paragraphs>".

    MLflow's Flask side answers unknown endpoints and methods with Werkzeug's HTML page; relayed as it is, the markup
    would end up in the message the MLflow client prints.
    """
    text = body.decode("utf-8", errors="replace").strip()
    if not (content_type or "").lower().startswith("text/html"):
        return text
    page = _HtmlPageText()
    page.feed(text)
    page.close()
    title = " ".join(page.title)
    paragraphs = " ".join(page.paragraphs)
    if title and paragraphs:
        return f"{title}: {paragraphs}"
    return title or paragraphs or " ".join(page.everything)


def mlflow_timed_out() -> ApiError:
    """MLflow took the request and did not answer within the timeout."""
    return ApiError(504, "MLflow did not answer in time.", error_code=ErrorCode.DEADLINE_EXCEEDED)


_CREDENTIALS_REFUSED_CAUSES = {
    "assertion": "the embedded MLflow refused the signed identity the API sends for you (its assertion secret is "
    "not the API's)",
    "service-account": "MLflow refused the API's service account (HOKUSAI_MLFLOW_USERNAME/HOKUSAI_MLFLOW_PASSWORD)",
    "none": "MLflow asks for credentials and the API has none set for it (HOKUSAI_MLFLOW_USERNAME/PASSWORD)",
}


def mlflow_refused_the_apis_credentials(identity_mode: str) -> str:
    """What a user is told when MLflow answers 401 to a request their key was accepted for: not to fix their key
    (the earlier implementation's users got MLflow's bare 401/403 and could do nothing about it)."""
    cause = _CREDENTIALS_REFUSED_CAUSES.get(identity_mode, "MLflow refused the API's own credentials")
    return (
        f"Your Hokusai key was accepted, but {cause}. This is the platform's configuration, not your key: tell its "
        "operator (GET /ready names the cause)."
    )


def service_account_refused(action: str) -> str:
    """A 403 in service-account mode: MLflow refused the one account the API acts as for everyone, not the user."""
    return (
        f"MLflow refused to let the API's service account (HOKUSAI_MLFLOW_USERNAME), which acts for every user of this "
        f"platform, {action}. Tell the operator: the service account must be an MLflow admin (docs/architecture.md, "
        "Deployment modes)."
    )


def mlflow_call_failed(exc: httpx.TransportError) -> ApiError:
    """One of the API's own calls to MLflow failed in transit: a 504 if MLflow was too slow, else a 503."""
    return mlflow_timed_out() if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout) else mlflow_unavailable()


def mlflow_unavailable() -> ApiError:
    """MLflow is down, restarting or unreachable: a retryable 503 that names no internal address."""
    return ApiError(
        503,
        "MLflow is temporarily unavailable; retry shortly.",
        error_code=ErrorCode.TEMPORARILY_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def error_response(
    status: int,
    message: str,
    *,
    error_code: str | None = None,
    layer: str = LAYER_API,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> JSONResponse:
    """The common envelope; `field` names the input field a 400 is about, when one is."""
    body = error_envelope(error_code or error_code_for_status(status), message, layer)
    if field is not None:
        body["field"] = field
    response = JSONResponse(body, status_code=status, headers=headers)
    if status == 401 and layer == LAYER_API:
        # One challenge per header line: browsers read only the first challenge of a line, and Basic is the one
        # that makes them ask for a login (any username, the key as the password) to open MLflow's web UI. MLflow's
        # 401 refuses the API's own credentials, which no login of the user's can change: no challenge.
        response.raw_headers.extend(_CHALLENGES)
    return response


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """The message for pydantic's errors, and the field when there is exactly one."""
    parts, fields = [], []
    for error in exc.errors()[:5]:
        if error.get("type") == "json_invalid":
            # Pydantic places a JSON syntax error at ("body", <character offset>), which reads like a field name.
            reason = error.get("ctx", {}).get("error", "not JSON")
            return f"The request body is not valid JSON: {reason} (at character {error['loc'][-1]}).", None
        loc = error.get("loc", ())
        location = ".".join(str(item) for item in loc if item != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid').removeprefix('Value error, ')}")
        fields.append(".".join(str(item) for item in loc[1:]))  # without where it came from: body, query, path
    field = fields[0] if len(set(fields)) == 1 and fields[0] else None
    return "Invalid request: " + "; ".join(parts), field


async def _handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, error_code=exc.error_code, layer=exc.layer, headers=exc.headers)


async def _handle_hokusai_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HokusaiValidationError)
    return error_response(400, str(exc), error_code=ErrorCode.INVALID_PARAMETER_VALUE, field=exc.field)


async def _handle_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    if _is_whole_body_error(exc) and not is_json_media_type(content_type):
        # FastAPI reads a body as JSON only when it says it is: `curl -d` sends a form, and a bare client no type;
        # both were refused as "body: Input should be a valid dictionary".
        sent = f"not {content_type!r}" if content_type else "none was given"
        message = f"The request body must be JSON, sent with Content-Type: application/json ({sent})."
        return error_response(400, message, error_code=ErrorCode.INVALID_PARAMETER_VALUE)
    message, field = _describe_validation_error(exc)
    return error_response(400, message, error_code=ErrorCode.INVALID_PARAMETER_VALUE, field=field)


def _is_whole_body_error(exc: RequestValidationError) -> bool:
    """A body sent that is not a JSON object to FastAPI (a missing one is "body: Field required", as it should be)."""
    return any(tuple(error.get("loc", ())) == ("body",) and error.get("type") != "missing" for error in exc.errors())


def is_json_media_type(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


_FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"
_UNPARSABLE_BODY = (
    "The request body could not be read as JSON: it is not UTF-8, nests too deeply, or holds a number with too many "
    "digits."
)


_CONTROL_CHARACTER_IN_PATH = "The request path holds a control character (a %00-%1F or %7F escape); no name may."


async def _handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = getattr(exc, "headers", None)
    if exc.status_code == 404 and holds_control_character(request.scope["path"]):
        # Starlette's `path` parameters stop at a newline, so `/models/a%0Ab` matches no route; the fault is the name.
        return error_response(400, _CONTROL_CHARACTER_IN_PATH, error_code=ErrorCode.INVALID_PARAMETER_VALUE)
    if exc.status_code == 404:
        message = (
            "No such endpoint. MLflow's API and web UI live under /api/mlflow/, the Hokusai API under /api/v1 "
            "(its reference: /docs)."
        )
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        message, headers = f"{request.method} is not allowed here; this path takes {allowed}.", {"Allow": allowed}
    if message == _FASTAPI_UNPARSABLE_BODY:
        # Syntax errors come as pydantic's json_invalid (see `_describe_validation_error`); this is a body that is
        # not UTF-8, or JSON Python refuses to build: nested past its recursion limit, an integer of 4300+ digits.
        return error_response(400, _UNPARSABLE_BODY, error_code=ErrorCode.INVALID_PARAMETER_VALUE)
    return error_response(exc.status_code, message, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method the path takes. Starlette's `Allow` names the first matching route's alone, and FastAPI makes a
    route per method: `/api/v1/keys` said `Allow: POST` to a HEAD, though it lists keys on GET."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    )


DATABASE_UNAVAILABLE_MESSAGE = "The Hokusai database is unavailable right now; retry shortly."


def database_error_reason(exc: SQLAlchemyError) -> str:
    """The driver's own first line (refused, unknown database, bad password): what failed, never the URL's password."""
    detail = str(getattr(exc, "orig", None) or exc).strip()
    return detail.splitlines()[0] if detail else type(exc).__name__


def database_unavailable(scope: Scope, exc: OperationalError) -> JSONResponse:
    """A 503 for a request that could not reach the Hokusai database (down, restarting, out of connections), with one
    log line: an outage is the operator's to see once per request, not a traceback."""
    logger.warning(
        "the Hokusai database is unavailable (%s %s): %s",
        scope["method"],
        logged_path(scope),
        database_error_reason(exc),
    )
    return error_response(
        503,
        DATABASE_UNAVAILABLE_MESSAGE,
        error_code=ErrorCode.TEMPORARILY_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _handle_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OperationalError)
    return database_unavailable(request.scope, exc)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the request id only: the exception text may quote user input, never a key (keys are not kept).
    logger.exception("unhandled error on %s %s", request.method, logged_path(request.scope))
    return error_response(500, INTERNAL_ERROR_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(HokusaiValidationError, _handle_hokusai_validation)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(OperationalError, _handle_database_unavailable)
    app.add_exception_handler(Exception, _handle_unexpected)
