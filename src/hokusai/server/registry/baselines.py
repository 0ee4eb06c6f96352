"""Baselines: versions of one registered model per model type, `hokusai-baseline-<type>`, owned by the platform."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hokusai._mlflow_filters import filter_equals, filter_in
from hokusai.server.audit import AuditLog, Caller, audit_event
from hokusai.server.db import Database
from hokusai.server.keys import Principal
from hokusai.server.locks import shared_lock
from hokusai.server.mlflow_rest import ensure_account
from hokusai.server.registry.sources import fetch_run, resolve_source
from hokusai.server.registry.versions import (
    SEARCH_PAGE_SIZE,
    create_model_version,
    metrics_tags,
    search_versions,
    version_tags,
)
from hokusai.server.schemas import BaselineInfo, BaselineList
from hokusai.server.upstream import PLATFORM, Upstream
from hokusai.validation import (
    BASELINE_MODELS_FILTER,
    TAG_IS_BASELINE,
    TAG_METADATA,
    TAG_MODEL_TYPE,
    TAG_REGISTERED_BY,
    TAG_RUN_ID,
    baseline_model_name,
    baseline_model_type,
    baseline_repeat_leaves_out,
    normalize_model_type,
    run_model_uri,
    validate_metadata,
    validate_run_id,
)

# One lock per model type while a baseline request looks for its version and adds it: a repeat finds the first.
_BASELINE_LOCK = "registry.baseline:"


async def register_baseline(
    *,
    database: Database,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    model_type: str,
    run_id: str,
    artifact_path: str,
    metadata: Mapping[str, Any] | None,
) -> BaselineInfo:
    """Register a run's model as a baseline version of `hokusai-baseline-<model_type>`.

    The run is read as the caller, so MLflow decides whether they may use it. The version is added as the platform:
    a model type's baselines are one registered model shared by every user, and if its first registrant owned it,
    everyone else's baselines would be refused. No user can change or delete another's baseline; admins can.
    """
    principal = caller.principal
    model_type = normalize_model_type(model_type)
    run_id = validate_run_id(run_id)
    model_uri = run_model_uri(run_id, artifact_path)
    metadata_json = validate_metadata(metadata)
    model_name = baseline_model_name(model_type)
    await ensure_account(upstream=upstream, principal=principal)
    run = await fetch_run(upstream=upstream, principal=principal, run_id=run_id)
    source = await resolve_source(upstream=upstream, principal=principal, model_uri=model_uri, run=run)
    tags = {
        TAG_IS_BASELINE: "true",
        TAG_MODEL_TYPE: model_type,
        TAG_RUN_ID: run_id,
        TAG_REGISTERED_BY: principal.owner,
        **metrics_tags(run.metrics),
    }
    if metadata_json is not None:
        tags[TAG_METADATA] = metadata_json
    async with shared_lock(database, _BASELINE_LOCK + model_type):
        version = await _existing_baseline(upstream=upstream, model_name=model_name, run_id=run_id, source=source.uri)
        created = version is None
        if version is None:
            version = await create_model_version(
                database=database,
                upstream=upstream,
                principal=PLATFORM,
                model_name=model_name,
                source=source,
                tags=tags,
                description=None,
            )
    info = baseline_info(version, created=created)
    if created:
        detail = {"source": source.uri}
        await audit_event(audit, caller, "model.register_baseline", "ok", f"{model_name}/{info.version}", detail)
        return info
    left_out = baseline_repeat_leaves_out(
        version_label=f"Model '{model_name}' version {info.version}",
        registered_metadata=info.tags.get(TAG_METADATA),
        metadata_json=metadata_json,
    )
    return info.model_copy(update={"warnings": [left_out] if left_out else []})


def baseline_info(version: Mapping[str, Any], *, created: bool = False) -> BaselineInfo:
    """A baseline version as the API shows it, from its tags (the platform wrote them: users cannot change them)."""
    tags = version_tags(version)
    name, number = str(version.get("name", "")), str(version.get("version", ""))
    return BaselineInfo(
        model_name=name,
        version=number,
        model_type=tags.get(TAG_MODEL_TYPE, baseline_model_type(name)),
        run_id=tags.get(TAG_RUN_ID, ""),
        model_uri=f"models:/{name}/{number}",
        tags=tags,
        created=created,
    )


async def list_baselines(
    *, upstream: Upstream, principal: Principal, model_type: str | None, page_token: str | None, max_results: int
) -> BaselineList:
    """The baseline versions the caller may read, of one model type or of all, in (type, version) order, in pages.

    Read as the caller, like any model: under the default permission READ everyone sees every baseline; where it is
    NO_PERMISSIONS only admins do, unless READ on the `hokusai-baseline-*` models is granted.
    """
    names = f"name = {filter_equals(baseline_model_name(model_type))}" if model_type else BASELINE_MODELS_FILTER
    await ensure_account(upstream=upstream, principal=principal)
    versions, next_page_token = await search_versions(
        upstream=upstream,
        principal=principal,
        filter_string=f"{names} AND tags.{TAG_IS_BASELINE} = 'true'",
        max_results=max_results,
        page_token=page_token,
    )
    return BaselineList(baselines=[baseline_info(version) for version in versions], next_page_token=next_page_token)


async def _existing_baseline(*, upstream: Upstream, model_name: str, run_id: str, source: str) -> dict[str, Any] | None:
    """The baseline version already registered from this run's model, if any: the same baseline twice is one.

    Found by its source alone, whoever registered it: a model type's baselines are shared, and the same model twice
    among them would only weigh it double.
    """
    filter_string = f"name IN {filter_in([model_name])} AND tags.{TAG_RUN_ID} = {filter_equals(run_id)}"
    versions, _ = await search_versions(
        upstream=upstream, principal=PLATFORM, filter_string=filter_string, max_results=SEARCH_PAGE_SIZE
    )
    return next((version for version in versions if version.get("source") == source), None)
