"""Tokenized versions as the caller may read them, counted only while their model holds the token they name."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection
from typing import Any

from starlette.concurrency import run_in_threadpool

from hokusai._mlflow_filters import filter_equals, filter_in, versions_carrying
from hokusai.errors import ErrorCode
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.mlflow_rest import (
    call_as,
    decoded_page_token,
    encoded_page_token,
    ensure_account,
)
from hokusai.server.registry.claims import models_holding_tokens, tokens_claiming_model
from hokusai.server.registry.versions import (
    MODEL_VERSIONS_GET,
    latest_version,
    search_versions,
    tokenized_info,
)
from hokusai.server.schemas import TokenizedModelInfo, TokenizedModelList
from hokusai.server.upstream import Upstream
from hokusai.validation import (
    TAG_TOKEN_ID,
    baseline_model_type,
    is_baseline_model_name,
    no_tokenized_model,
    token_not_held,
    validate_model_name,
    validate_version,
)

# MLflow is reached with GET for searches; the filter travels in the URL, which its server caps (h11: 16 KiB). An
# owner's models are therefore searched a slice at a time (`_search_held_models`).
_MAX_FILTER_LENGTH = 8000


async def list_tokenized_models(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    token_id: str | None,
    owner: str | None,
    page_token: str | None,
    max_results: int,
) -> TokenizedModelList:
    """Tokenized versions the caller may read, in (name, version) order, paged by MLflow's page token (or, filtered
    by token or owner, by the API's own: see `_search_held_models`).

    A version counts only while its model holds the token its tag names, as the token registry records it: a tag
    alone (written before the gateway guarded Hokusai's tags, or by an admin) claims nothing, and after a release or
    a transfer to another model the old versions are no longer the token's. A page may therefore hold fewer versions
    than asked for; its page token still leads on.
    """
    token_clause = f"tags.{TAG_TOKEN_ID} = {filter_equals(token_id)}" if token_id else f"tags.{TAG_TOKEN_ID} LIKE '%'"
    held: dict[str, str] | None = None
    await ensure_account(upstream=upstream, principal=principal)
    if token_id is None and owner is None:
        versions, next_page_token = await search_versions(
            upstream=upstream,
            principal=principal,
            filter_string=token_clause,
            max_results=max_results,
            page_token=page_token,
        )
    else:
        held = await run_in_threadpool(
            models_holding_tokens, database, token_ids=[token_id] if token_id else None, owner=owner
        )
        versions, next_page_token = await _search_held_models(
            upstream=upstream,
            principal=principal,
            token_clause=token_clause,
            models=sorted(set(held.values())),
            max_results=max_results,
            page_token=page_token,
        )
    found = [info for info in map(tokenized_info, versions) if info is not None]
    if held is None:
        held = await run_in_threadpool(models_holding_tokens, database, token_ids={info.token_id for info in found})
    models = [info for info in found if held.get(info.token_id) == info.model_name]
    return TokenizedModelList(models=models, next_page_token=next_page_token)


async def _search_held_models(
    *,
    upstream: Upstream,
    principal: Principal,
    token_clause: str,
    models: list[str],
    max_results: int,
    page_token: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The versions of `models` (sorted names) matching `token_clause`, searched a slice of models at a time.

    An owner may hold more models than one filter can name (security review of 2026-11-29: ~95 models with long
    names made `owner=` a 400). The page token names the slice's first model and MLflow's offset within that slice;
    a page ends with its slice, so it may hold fewer versions than asked for while its token leads on.
    """
    position = decoded_page_token(page_token) if page_token else {}
    first = position.get("from")
    remaining = models[bisect_left(models, first) :] if isinstance(first, str) else models
    names = _slice(remaining, token_clause)
    if not names:
        return [], None
    offset = position.get("offset")
    versions, mlflow_next = await search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=f"{token_clause} AND name IN {filter_in(names)}",
        max_results=max_results,
        page_token=encoded_page_token({"offset": offset}) if offset else None,
    )
    if mlflow_next is not None:
        return versions, encoded_page_token({"from": names[0], "offset": decoded_page_token(mlflow_next)["offset"]})
    if len(names) < len(remaining):
        return versions, encoded_page_token({"from": remaining[len(names)]})
    return versions, None


def _slice(models: list[str], token_clause: str) -> list[str]:
    """The first of `models` that one search filter can name, at least one."""
    length = len(f"{token_clause} AND name IN ()") - len(", ")
    for count, name in enumerate(models):
        length += len(filter_in([name])) - len("()") + len(", ")
        if length > _MAX_FILTER_LENGTH and count:
            return models[:count]
    return models


async def get_tokenized_model(
    *, database: Database, upstream: Upstream, principal: Principal, model_name: str, version: str
) -> TokenizedModelInfo:
    """One tokenized version; `version` may be a number or `latest` (the newest tokenized version).

    As in the listing, a version is tokenized only while its model holds the token its tag names: a released token,
    or one moved to another model, leaves the tag on the version as a record and binds nothing (security review,
    2026-11-28: the single lookup trusted the tag alone and showed the old version under the token's new holder).
    """
    model_name = validate_model_name(model_name)
    await ensure_account(upstream=upstream, principal=principal)
    number = validate_version(version)
    held = await run_in_threadpool(tokens_claiming_model, database, model_name=model_name)
    if number is None:
        found = await _latest_tokenized(upstream=upstream, principal=principal, model_name=model_name, held=held)
    else:
        payload = await call_as(
            upstream,
            principal,
            "GET",
            MODEL_VERSIONS_GET,
            params={"name": model_name, "version": version},
            action=f"read version {version} of model '{model_name}'",
        )
        found = payload.get("model_version")
    info = tokenized_info(found) if found else None
    if info is None and not held and not is_baseline_model_name(model_name):
        # Rather than "no tokenized version 'latest'" of a model that may not exist.
        raise ApiError(404, no_tokenized_model(model_name), error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST)
    if info is None:
        raise ApiError(404, no_tokenized_version(model_name, version), error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST)
    if info.token_id not in held:
        raise ApiError(
            404, token_not_held(model_name, info.version, info.token_id), error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST
        )
    return info


def no_tokenized_version(model_name: str, version: str | None) -> str:
    """The 404 for a version that carries no token; a baseline model's says where its baselines are listed."""
    message = f"Model '{model_name}' has no tokenized version '{version}'."
    if not is_baseline_model_name(model_name):
        return message
    model_type = baseline_model_type(model_name).lower()
    return (
        f"{message} It holds baselines, which carry no token: list them with GET /api/v1/models/baseline"
        f"?model_type={model_type} (`hokusai models baselines --type {model_type}`)."
    )


async def _latest_tokenized(
    *, upstream: Upstream, principal: Principal, model_name: str, held: Collection[str]
) -> dict[str, Any] | None:
    """The newest version of `model_name` carrying a token the model holds."""
    newest: list[dict[str, Any]] = []
    for token_id in held:  # a model holds few tokens; usually one
        found = await latest_version(
            upstream=upstream, principal=principal, filter_string=versions_carrying(model_name, token_id)
        )
        if found is not None:
            newest.append(found)
    return max(newest, key=lambda found: int(found.get("version", 0)), default=None)
