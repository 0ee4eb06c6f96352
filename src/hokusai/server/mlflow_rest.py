"""MLflow's REST API as the caller: requests, error mapping and page tokens."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from hokusai.errors import LAYER_MLFLOW, ErrorCode, HokusaiValidationError
from hokusai.server.errors import (
    ApiError,
    error_code_for_status,
    mlflow_call_failed,
    mlflow_refused_the_apis_credentials,
    readable_error_text,
    service_account_refused,
)
from hokusai.server.keys import Principal
from hokusai.server.upstream import Upstream, UpstreamError

logger = logging.getLogger(__name__)

_MESSAGE_LIMIT = 500
_MAX_OFFSET = 10**9


# --- errors ------------------------------------------------------------------------------------------------------


def mlflow_message(response: httpx.Response) -> tuple[str | None, str]:
    try:
        payload = response.json()
    except ValueError:
        return None, readable_error_text(response.content, response.headers.get("content-type"))[:_MESSAGE_LIMIT]
    if not isinstance(payload, dict):
        return None, ""
    return payload.get("error_code"), str(payload.get("message", ""))[:_MESSAGE_LIMIT]


def mlflow_error(response: httpx.Response, action: str, identity_mode: str) -> ApiError:
    """MLflow's refusal of `action` ("create a version of model 'm'") as our envelope with `layer: mlflow`."""
    status = response.status_code
    code, message = mlflow_message(response)
    detail = f" ({code}: {message})" if code and message else (f" ({message})" if message else "")
    if status == 401:
        # MLflow refused the API's own credentials for the caller: the operator's to fix, and said so.
        logger.warning("MLflow answered 401 to %s: it refuses the API's credentials (GET /ready)", action)
        return ApiError(
            401,
            mlflow_refused_the_apis_credentials(identity_mode),
            error_code=ErrorCode.UNAUTHENTICATED,
            layer=LAYER_MLFLOW,
        )
    if status == 403:
        refused = (
            service_account_refused(action)
            if identity_mode == "service-account"
            else f"MLflow denied permission to {action}{detail}. Ask an admin for access."
        )
        return ApiError(403, refused, error_code=ErrorCode.PERMISSION_DENIED, layer=LAYER_MLFLOW)
    if status == 404:
        return ApiError(
            404,
            f"MLflow could not {action}: not found{detail}.",
            error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST,
            layer=LAYER_MLFLOW,
        )
    if 400 <= status < 500:
        return ApiError(
            status,
            f"MLflow refused to {action}{detail}.",
            error_code=code or error_code_for_status(status),
            layer=LAYER_MLFLOW,
        )
    logger.warning("MLflow answered %s to %s", status, action)
    return ApiError(502, f"MLflow failed to {action} (status {status}).", layer=LAYER_MLFLOW)


# --- MLflow calls as the caller ------------------------------------------------------------------------------------


async def send_as(
    upstream: Upstream,
    principal: Principal,
    method: str,
    path: str,
    *,
    params: Mapping[str, str | int | list[str]] | None = None,
    body: Mapping[str, Any] | None = None,
) -> httpx.Response:
    try:
        return await upstream.client.request(
            method, path, params=params, json=body, headers=upstream.headers_for(principal)
        )
    except httpx.TransportError as exc:
        raise mlflow_call_failed(exc) from exc


async def call_as(
    upstream: Upstream,
    principal: Principal,
    method: str,
    path: str,
    *,
    action: str,
    params: Mapping[str, str | int | list[str]] | None = None,
    body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    response = await send_as(upstream, principal, method, path, params=params, body=body)
    if response.status_code != 200:
        raise mlflow_error(response, action, upstream.mode)
    try:
        payload = response.json()
    except ValueError as exc:
        raise ApiError(502, f"MLflow answered {action} with a body that is not JSON.", layer=LAYER_MLFLOW) from exc
    if not isinstance(payload, dict):
        raise ApiError(502, f"MLflow answered {action} with unexpected JSON.", layer=LAYER_MLFLOW)
    return payload


@contextmanager
def provisioning_errors(principal: Principal | None) -> Iterator[None]:
    """Setting up the caller's MLflow account or default experiment failed: a 503 or 502, never a 500."""
    try:
        yield
    except httpx.TransportError as exc:
        raise mlflow_call_failed(exc) from exc
    except UpstreamError as exc:
        logger.warning("could not set up %s in MLflow: %s", principal.owner if principal else "a caller", exc)
        raise ApiError(502, "MLflow refused to set up your account; retry, or tell an admin.") from exc


async def ensure_account(*, upstream: Upstream, principal: Principal) -> None:
    """Provision the caller in MLflow before acting as them there."""
    with provisioning_errors(principal):
        await upstream.ensure_account(principal)


def decoded_page_token(page_token: str) -> dict[str, Any]:
    """The JSON object inside a page token this API issued: MLflow's base64 `{"offset": n}`, or the API's own, which
    may add fields of its own (see `registry.lookups`)."""
    try:
        parsed = json.loads(base64.b64decode(page_token.encode("ascii"), validate=True))
    except (ValueError, binascii.Error, UnicodeError, RecursionError) as exc:  # 2 KiB of `[` pass the length check
        raise page_token_not_issued() from exc
    if not isinstance(parsed, dict):
        raise page_token_not_issued()
    offset = parsed.get("offset")
    if offset is not None and not _is_offset(offset):
        raise page_token_not_issued()
    return parsed


def encoded_page_token(fields: Mapping[str, object]) -> str:
    return base64.b64encode(json.dumps(fields, ensure_ascii=False).encode()).decode("ascii")


def checked_page_token(page_token: str) -> str:
    """Pass on only tokens shaped like MLflow's own (base64 JSON `{"offset": n}`): MLflow answers 500 to others."""
    if decoded_page_token(page_token).get("offset") is None:
        raise page_token_not_issued()
    return page_token


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_OFFSET


def page_token_not_issued() -> HokusaiValidationError:
    return HokusaiValidationError("page_token", "is not a page token this API issued")
