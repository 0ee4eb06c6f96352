"""Reading the caller's API key from a request: Bearer, X-API-Key, or HTTP Basic with the key as the password."""

from __future__ import annotations

import base64
import binascii

from starlette.datastructures import Headers, QueryParams

from hokusai.errors import ErrorCode
from hokusai.server.errors import ApiError
from hokusai.validation import KEY_MAX_LENGTH, KEY_PREFIX

# Keys in URLs end up in access logs, proxies and browser history, so they are refused outright: under a
# credential-like parameter name, or anywhere a Hokusai key shows up in a name or a value. Bare `key` and `token`
# are not credential names here: MLflow itself uses `?key=` (DELETE .../traces/<id>/tags?key=<tag>).
QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "api-key", "x-api-key", "access_token"})
_MAX_HEADER_LENGTH = KEY_MAX_LENGTH * 2 + 64

MISSING_KEY_MESSAGE = (
    "No API key was sent. Send your Hokusai key as `Authorization: Bearer <key>` (for the MLflow client: "
    "MLFLOW_TRACKING_TOKEN=<key>), as `X-API-Key: <key>`, or as the HTTP Basic password."
)
MALFORMED_AUTH_MESSAGE = (
    "The Authorization header could not be read. Use `Bearer <key>` or HTTP Basic with the key as the password."
)

# The MLflow client sends MLFLOW_TRACKING_USERNAME/PASSWORD in preference to MLFLOW_TRACKING_TOKEN, so a password
# left over from an earlier MLflow setup hides a correct token; "malformed key" alone would not say which one is read.
NOT_A_KEY_AS_BASIC_PASSWORD_MESSAGE = (
    "The HTTP Basic password is not a Hokusai key (keys start with `hk_live_`). In a browser, log in with any "
    "username and your Hokusai key as the password. The MLflow client sends MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD instead of MLFLOW_TRACKING_TOKEN when they are set: unset them, or set "
    "MLFLOW_TRACKING_PASSWORD to your Hokusai key."
)

TWO_KEYS_MESSAGE = (
    "The request carries two different API keys (in two Authorization headers, or in Authorization and X-API-Key). "
    "Send one key: a client that adds its own, such as the MLflow client with MLFLOW_TRACKING_TOKEN or "
    "MLFLOW_TRACKING_PASSWORD set, may be adding the second."
)
UNKNOWN_AS_BASIC_MESSAGE = (
    "The API key sent as the HTTP Basic password is not known to this server. In a browser, log in again with a "
    "key of this server's. The MLflow client sends MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
    "~/.mlflow/credentials) instead of MLFLOW_TRACKING_TOKEN when they are set: check that password, or unset them."
)


def sent_as_basic(headers: Headers) -> bool:
    """Whether the key was read from an HTTP Basic password."""
    return headers.get("authorization", "").strip()[:6].lower() == "basic "


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, message, error_code=ErrorCode.UNAUTHENTICATED)


def _basic_password(encoded: str) -> str:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthenticated(MALFORMED_AUTH_MESSAGE) from exc
    _username, separator, password = decoded.partition(":")
    if not separator:
        raise _unauthenticated(MALFORMED_AUTH_MESSAGE)
    return password


def refuse_key_in_query(query: QueryParams) -> None:
    """A 401 `ApiError` when the query string carries a key, whether or not the endpoint needs one."""
    if any(
        name.lower() in QUERY_KEY_NAMES or KEY_PREFIX in value or KEY_PREFIX in name  # `?hk_live_…` has no value
        for name, value in query.multi_items()
    ):
        raise _unauthenticated(
            "API keys are not accepted in the URL (they would be written to logs). "
            "Remove the key from the query string and send it as `Authorization: Bearer <key>`."
        )


def key_from_request(headers: Headers, query: QueryParams) -> str:
    """The presented key (not yet verified); raises a 401 `ApiError` when none can be read, a 400 when the request
    carries two different ones (which one acts would be a guess: RFC 6750 lets a server refuse more than one)."""
    refuse_key_in_query(query)
    presented = {_key_from_authorization(value) for value in headers.getlist("authorization")}
    presented.update(value.strip() for value in headers.getlist("x-api-key") if value.strip())
    if len(presented) > 1:
        raise ApiError(400, TWO_KEYS_MESSAGE, error_code=ErrorCode.BAD_REQUEST)
    if not presented:
        raise _unauthenticated(MISSING_KEY_MESSAGE)
    return presented.pop()


def _key_from_authorization(authorization: str) -> str:
    if len(authorization) > _MAX_HEADER_LENGTH:
        raise _unauthenticated(MALFORMED_AUTH_MESSAGE)
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        return _basic_password(value)
    raise _unauthenticated(MALFORMED_AUTH_MESSAGE)
