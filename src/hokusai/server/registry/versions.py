"""Model versions in MLflow, made and found as the caller: creation with every tag in one call, the searches that
find a token's versions, and how a version is shown.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hokusai._mlflow_filters import versions_carrying
from hokusai.errors import ErrorCode
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.locks import shared_lock
from hokusai.server.mlflow_rest import (
    call_as,
    checked_page_token,
    ensure_account,
    mlflow_error,
    mlflow_message,
    send_as,
)
from hokusai.server.schemas import TokenizedModelInfo
from hokusai.server.upstream import Upstream
from hokusai.validation import (
    TAG_BASELINE,
    TAG_METRIC,
    TAG_METRICS,
    TAG_TOKEN_ID,
    TAG_VALUE_MAX_LENGTH,
    validate_baseline_value,
)

logger = logging.getLogger(__name__)

REGISTERED_MODELS_CREATE = "/api/2.0/mlflow/registered-models/create"
REGISTERED_MODELS_DELETE = "/api/2.0/mlflow/registered-models/delete"
MODEL_VERSIONS_CREATE = "/api/2.0/mlflow/model-versions/create"
MODEL_VERSIONS_GET = "/api/2.0/mlflow/model-versions/get"
MODEL_VERSIONS_SEARCH = "/api/2.0/mlflow/model-versions/search"
MODEL_VERSIONS_SET_TAG = "/api/2.0/mlflow/model-versions/set-tag"

SEARCH_PAGE_SIZE = 1000
_ORDER = ["name ASC", "version_number ASC"]
# One lock per registered model while it may be created and get its version (see `create_model_version`).
_MODEL_LOCK = "registry.model:"


@dataclass(frozen=True)
class Source:
    """What MLflow is told to register: `model-versions/create`'s source, run_id and model_id."""

    uri: str
    run_id: str | None
    model_id: str | None


async def ensure_registered_model(*, upstream: Upstream, principal: Principal, model_name: str) -> bool:
    """Create the registered model as the caller (who becomes MANAGE on it); an existing one is fine.

    Returns whether it was created by this call.
    """
    response = await send_as(upstream, principal, "POST", REGISTERED_MODELS_CREATE, body={"name": model_name})
    if response.status_code == 200:
        return True
    if response.status_code == 400 and mlflow_message(response)[0] == ErrorCode.RESOURCE_ALREADY_EXISTS:
        return False
    raise mlflow_error(response, f"create registered model '{model_name}'", upstream.mode)


async def create_model_version(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    model_name: str,
    source: Source,
    tags: Mapping[str, str],
    description: str | None,
) -> dict[str, Any]:
    """Create the registered model if needed, then the version in one call with every tag (never half-tagged).

    When MLflow refuses the version (a source it does not accept, say), a registered model created for it here is
    deleted again, so a failed registration leaves no empty model behind. The per-model lock keeps another
    registration in this process from adding a version to that model in between.
    """
    body: dict[str, Any] = {
        "name": model_name,
        "source": source.uri,
        "tags": [{"key": key, "value": value} for key, value in tags.items()],
    }
    if source.run_id is not None:
        body["run_id"] = source.run_id
    if source.model_id is not None:
        body["model_id"] = source.model_id
    if description is not None:
        body["description"] = description
    async with shared_lock(database, _MODEL_LOCK + model_name):
        created_model = await ensure_registered_model(upstream=upstream, principal=principal, model_name=model_name)
        try:
            payload = await call_as(
                upstream,
                principal,
                "POST",
                MODEL_VERSIONS_CREATE,
                body=body,
                action=f"create a version of model '{model_name}'",
            )
        except ApiError as exc:
            if outcome_unknown(exc):
                raise VersionOutcomeUnknown(
                    exc.status, exc.message, error_code=exc.error_code, layer=exc.layer, headers=exc.headers
                ) from exc
            if created_model:
                await _delete_empty_model(upstream=upstream, principal=principal, model_name=model_name)
            raise
    return dict(payload.get("model_version", {}))


def outcome_unknown(exc: ApiError) -> bool:
    """MLflow took the request and did not answer in time: it may still have done it, so nothing is undone."""
    return exc.status == 504


class VersionOutcomeUnknown(ApiError):
    """MLflow did not answer the version's creation in time: the version may exist, carrying the token's claim.

    Only this call's timeout leaves a claim in place; after any other (a search, the rights check) nothing can carry
    the claim yet, and keeping it would hand a retry a claim it did not take (security review, 2026-11-28).

    The kept claim stays its owner's even if a later attempt fails: MLflow may still be creating that version, so no
    later request can tell that it made none, and a claim found, not taken, by a request may be one an admin
    transferred to a model with no version yet (review, 2026-11-28: releasing such claims was tried and undone). The
    owner moves it by registering the token on another model (`tokenized._move_stale_claim`); an admin can release it.
    """


async def _delete_empty_model(*, upstream: Upstream, principal: Principal, model_name: str) -> None:
    try:
        response = await send_as(upstream, principal, "DELETE", REGISTERED_MODELS_DELETE, body={"name": model_name})
    except ApiError:
        response = None
    if response is None or response.status_code != 200:
        # The registration's own error is what the caller needs; the leftover is only logged.
        logger.warning("could not delete the empty registered model %r after a refused version", model_name)


async def search_versions(
    *,
    upstream: Upstream,
    principal: Principal,
    filter_string: str,
    max_results: int,
    page_token: str | None = None,
    order_by: list[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    params: dict[str, str | int | list[str]] = {
        "filter": filter_string,
        "max_results": max_results,
        "order_by": order_by or _ORDER,
    }
    if page_token:
        params["page_token"] = checked_page_token(page_token)
    payload = await call_as(
        upstream, principal, "GET", MODEL_VERSIONS_SEARCH, params=params, action="search model versions"
    )
    return list(payload.get("model_versions", [])), payload.get("next_page_token") or None


async def model_carries(*, upstream: Upstream, principal: Principal, model_name: str, token_id: str) -> bool:
    """Whether a version of `model_name` that the caller can see is tagged with `token_id`.

    The caller is provisioned first: an admin key MLflow does not know as an admin yet would see only its owner's
    models, and report another user's model as gone.
    """
    await ensure_account(upstream=upstream, principal=principal)
    carriers, _ = await search_versions(
        upstream=upstream, principal=principal, filter_string=versions_carrying(model_name, token_id), max_results=1
    )
    return bool(carriers)


async def find_existing_version(
    *, upstream: Upstream, principal: Principal, model_name: str, token_id: str, source: str
) -> dict[str, Any] | None:
    """The version of `model_name` already registered for `token_id` from `source`, if any (the idempotency key)."""
    filter_string = versions_carrying(model_name, token_id)
    page_token = None
    while True:
        versions, page_token = await search_versions(
            upstream=upstream,
            principal=principal,
            filter_string=filter_string,
            max_results=SEARCH_PAGE_SIZE,
            page_token=page_token,
        )
        for version in versions:
            if version.get("name") == model_name and version.get("source") == source:
                return version
        if page_token is None:
            return None


async def latest_version(*, upstream: Upstream, principal: Principal, filter_string: str) -> dict[str, Any] | None:
    """The highest-numbered version that `filter_string` finds, if any."""
    versions, _ = await search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=filter_string,
        max_results=1,
        order_by=["version_number DESC"],
    )
    return versions[0] if versions else None


# --- shaping MLflow's answers --------------------------------------------------------------------------------------


def version_tags(version: Mapping[str, Any]) -> dict[str, str]:
    return {str(tag["key"]): str(tag.get("value", "")) for tag in version.get("tags", []) if "key" in tag}


def tokenized_info(
    version: Mapping[str, Any], *, warnings: list[str] | None = None, created: bool = False
) -> TokenizedModelInfo | None:
    """A version as the API shows it; `None` when its Hokusai tags are missing or unreadable."""
    tags = version_tags(version)
    token_id, metric_name, baseline = tags.get(TAG_TOKEN_ID), tags.get(TAG_METRIC), tags.get(TAG_BASELINE)
    if not token_id or not metric_name or baseline is None:
        return None
    try:
        baseline_value = validate_baseline_value(float(baseline))
    except ValueError:
        return None
    name, number = str(version.get("name", "")), str(version.get("version", ""))
    return TokenizedModelInfo(
        model_name=name,
        version=number,
        token_id=token_id,
        metric_name=metric_name,
        baseline_value=baseline_value,
        run_id=version.get("run_id") or None,
        model_uri=f"models:/{name}/{number}",
        source=str(version.get("source", "")),
        tags=tags,
        warnings=warnings or [],
        created=created,
    )


def metrics_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """A baseline's run metrics as one JSON tag, cut (by name order) to fit MLflow's tag value limit."""
    kept: dict[str, float | None] = {}
    for name in sorted(metrics):
        value = metrics[name]
        candidate = {**kept, name: value if math.isfinite(value) else None}
        if len(_compact_json(candidate)) > TAG_VALUE_MAX_LENGTH:
            break
        kept = candidate
    return {TAG_METRICS: _compact_json(kept)}


def _compact_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
