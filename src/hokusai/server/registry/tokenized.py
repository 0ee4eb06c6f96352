"""Registering a tokenized model: the token claimed, then the version created in MLflow as the caller; a repeat
returns the version it made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.concurrency import run_in_threadpool

from hokusai.errors import LAYER_MLFLOW, ErrorCode, HokusaiValidationError
from hokusai.server.audit import AuditLog, Caller, audit_event
from hokusai.server.db import Database
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.locks import shared_lock
from hokusai.server.mlflow_rest import call_as, ensure_account
from hokusai.server.models import Token
from hokusai.server.registry.claims import TOKEN_LOCK, TokenClaim, TokenHeld, claim_token, move_claim, release_token
from hokusai.server.registry.sources import (
    LocatedSource,
    RunFacts,
    Source,
    fetch_run,
    locate_source,
    resolve_source,
)
from hokusai.server.registry.versions import (
    MODEL_VERSIONS_SET_TAG,
    VersionOutcomeUnknown,
    create_model_version,
    find_existing_version,
    model_carries,
    tokenized_info,
    version_tags,
)
from hokusai.server.schemas import TokenizedModelInfo
from hokusai.server.upstream import Upstream
from hokusai.validation import (
    MODEL_URI_MAX_LENGTH,
    TAG_RUN_ID,
    TAG_TOKEN_ID,
    baseline_check,
    repeat_conflict,
    repeat_leaves_out,
    run_id_from_uri,
    run_model_uri,
    tokenized_tags,
    validate_registration,
)


@dataclass(frozen=True)
class Registration:
    """A validated `POST /api/v1/models/tokenized` body."""

    model_uri: str
    model_name: str
    token_id: str
    metric_name: str
    baseline_value: float
    tags: dict[str, str]
    description: str | None
    strict: bool

    @classmethod
    def build(
        cls,
        *,
        model_uri: str | None,
        mlflow_run_id: str | None,
        artifact_path: str,
        model_name: str,
        token_id: str,
        metric_name: str,
        baseline_value: float,
        tags: Mapping[str, object] | None,
        description: str | None,
        metadata: Mapping[str, object],
        strict: bool,
    ) -> Registration:
        """Apply :mod:`hokusai.validation`, the rules the SDK applies too."""
        if (model_uri is None) == (mlflow_run_id is None):
            raise HokusaiValidationError("model_uri", "give exactly one of model_uri and mlflow_run_id")
        if mlflow_run_id is not None:
            model_uri = run_model_uri(mlflow_run_id, artifact_path)
        fields = validate_registration(
            model_uri=model_uri,
            model_name=model_name,
            token_id=token_id,
            metric_name=metric_name,
            baseline_value=baseline_value,
            tags=tags,
            description=description,
            metadata=metadata,
        )
        platform_tags = tokenized_tags(
            token_id=fields.token_id,
            metric_name=fields.metric_name,
            baseline_value=fields.baseline_value,
            run_id=run_id_from_uri(fields.model_uri),
        )
        return cls(
            model_uri=fields.model_uri,
            model_name=fields.model_name,
            token_id=fields.token_id,
            metric_name=fields.metric_name,
            baseline_value=fields.baseline_value,
            tags={**fields.tags, **fields.metadata, **platform_tags},
            description=fields.description,
            strict=strict,
        )


async def _readable_run(*, upstream: Upstream, principal: Principal, located: LocatedSource) -> RunFacts | None:
    """The source's run; `None` when the caller may not read a run they did not name (a version's, a model's)."""
    try:
        return await fetch_run(upstream=upstream, principal=principal, run_id=str(located.run_id))
    except ApiError as exc:
        if not located.derived or exc.status not in (403, 404):
            raise
        return None


async def register_tokenized_model(
    *, database: Database, upstream: Upstream, audit: AuditLog, caller: Caller, registration: Registration
) -> TokenizedModelInfo:
    """Claim the token, then create the version in MLflow as the caller; a repeat returns the existing version."""
    principal = caller.principal
    await ensure_account(upstream=upstream, principal=principal)
    located = await locate_source(upstream=upstream, principal=principal, model_uri=registration.model_uri)
    run = None
    if located.run_id is not None:
        run = await _readable_run(upstream=upstream, principal=principal, located=located)
        if TAG_RUN_ID not in registration.tags:
            registration = replace(registration, tags={**registration.tags, TAG_RUN_ID: located.run_id})
    warnings = baseline_check(
        run_id=located.run_id,
        metrics=run.metrics if run else None,
        metric_name=registration.metric_name,
        baseline_value=registration.baseline_value,
        strict=registration.strict,
    )
    source = await resolve_source(upstream=upstream, principal=principal, model_uri=located.uri, run=run)
    if len(source.uri) > MODEL_URI_MAX_LENGTH:
        # A run's path becomes the run's artifact location plus that path: longer than the URI that was checked.
        raise HokusaiValidationError(
            "model_uri",
            f"resolves to the source '{source.uri[:80]}…' of {len(source.uri)} characters; MLflow keeps at most "
            f"{MODEL_URI_MAX_LENGTH}",
        )
    # One lock per token from the claim to the version: a claim is never moved (see `_move_stale_claim`) while
    # another request of its owner is still creating the version that will carry it.
    async with shared_lock(database, TOKEN_LOCK + registration.token_id):
        claim = await _claim_audited(
            database=database, upstream=upstream, audit=audit, caller=caller, registration=registration
        )
        registered = undecided = False
        try:
            info = await _existing_or_new_version(
                database=database,
                upstream=upstream,
                principal=principal,
                registration=registration,
                source=source,
                named_version=located.version,
                warnings=warnings,
            )
            registered = True
        except VersionOutcomeUnknown:
            # The version may exist after all: the claim stays, so the retry finds the version as a repeat instead
            # of leaving a version whose token anyone could claim.
            undecided = True
            raise
        finally:
            if claim.taken and not registered and not undecided:
                await _roll_back_claim(
                    database=database, audit=audit, caller=caller, registration=registration, claim=claim
                )
    if info.created:
        detail = {"version": info.version, "source": info.source, "token_id": info.token_id}
        await audit_event(audit, caller, "model.register", "ok", f"{info.model_name}/{info.version}", detail)
    return info


async def _claim_audited(
    *, database: Database, upstream: Upstream, audit: AuditLog, caller: Caller, registration: Registration
) -> TokenClaim:
    detail = {"model_name": registration.model_name}
    try:
        claim = await run_in_threadpool(
            claim_token,
            database,
            token_id=registration.token_id,
            model_name=registration.model_name,
            owner=caller.principal.owner,
        )
    except TokenHeld as held:
        moved = await _move_stale_claim(
            database=database, upstream=upstream, caller=caller, registration=registration, holder=held.holder
        )
        if moved is None:
            await audit_event(audit, caller, "token.claim", "conflict", registration.token_id, detail)
            raise
        detail["from_model_name"] = held.holder.model_name
        await audit_event(audit, caller, "token.claim", "moved", registration.token_id, detail)
        return TokenClaim(token=moved, created=False, moved_from=held.holder.model_name)
    if claim.created:
        await audit_event(audit, caller, "token.claim", "ok", registration.token_id, detail)
    return claim


async def _move_stale_claim(
    *, database: Database, upstream: Upstream, caller: Caller, registration: Registration, holder: Token
) -> Token | None:
    """The caller's own claim, moved to the model being registered when the model holding it has let it go.

    A claim outlives its model in MLflow: the model may have been deleted, or renamed where the gateway could not
    follow (straight on MLflow). With no version of that model left carrying the token, the claim holds nothing,
    and its owner may take the token to another model without an admin. Other users' claims never move here.
    """
    if holder.owner != caller.principal.owner:
        return None
    # The caller holds the token's lock (see `register_tokenized_model`), so no version is being made meanwhile.
    if await model_carries(
        upstream=upstream, principal=caller.principal, model_name=holder.model_name, token_id=registration.token_id
    ):
        return None
    return await run_in_threadpool(
        move_claim,
        database,
        token_id=registration.token_id,
        owner=caller.principal.owner,
        from_model=holder.model_name,
        to_model=registration.model_name,
    )


async def _roll_back_claim(
    *, database: Database, audit: AuditLog, caller: Caller, registration: Registration, claim: TokenClaim
) -> None:
    """Undo what this failed registration did to the claim: a new claim is released, a moved one moved back."""
    detail = {"model_name": registration.model_name}
    if claim.moved_from is None:
        await run_in_threadpool(
            release_token,
            database,
            token_id=registration.token_id,
            owner=caller.principal.owner,
            model_name=registration.model_name,
        )
    else:
        await run_in_threadpool(
            move_claim,
            database,
            token_id=registration.token_id,
            owner=caller.principal.owner,
            from_model=registration.model_name,
            to_model=claim.moved_from,
        )
        detail["to_model_name"] = claim.moved_from
    await audit_event(audit, caller, "token.claim", "rolled_back", registration.token_id, detail)


async def _existing_or_new_version(
    *,
    database: Database,
    upstream: Upstream,
    principal: Principal,
    registration: Registration,
    source: Source,
    named_version: Mapping[str, Any] | None,
    warnings: list[str],
) -> TokenizedModelInfo:
    existing = _the_registration_itself(named_version, registration) or await find_existing_version(
        upstream=upstream,
        principal=principal,
        model_name=registration.model_name,
        token_id=registration.token_id,
        source=source.uri,
    )
    if existing is not None:
        conflict = repeat_conflict(
            version_label=f"Model '{registration.model_name}' version {existing.get('version')}",
            registered=version_tags(existing),
            metric_name=registration.metric_name,
            baseline_value=registration.baseline_value,
        )
        if conflict is not None:
            raise ApiError(409, conflict, error_code=ErrorCode.REGISTRATION_CONFLICT)
        await _require_change_rights(upstream=upstream, principal=principal, version=existing)
        left_out = repeat_leaves_out(
            version_label=f"Model '{registration.model_name}' version {existing.get('version')}",
            registered_tags=version_tags(existing),
            registered_description=existing.get("description"),
            tags=registration.tags,
            description=registration.description,
        )
        warnings = [*warnings, left_out] if left_out else warnings
    version = existing
    if version is None:
        version = await create_model_version(
            database=database,
            upstream=upstream,
            principal=principal,
            model_name=registration.model_name,
            source=source,
            tags=registration.tags,
            description=registration.description,
        )
    info = tokenized_info(version, warnings=warnings, created=existing is None)
    if info is None:
        raise ApiError(502, "MLflow returned the model version without its Hokusai tags.", layer=LAYER_MLFLOW)
    return info


def _the_registration_itself(
    named_version: Mapping[str, Any] | None, registration: Registration
) -> Mapping[str, Any] | None:
    """The version a `models:/<name>/…` source names, when it is a version of the model being registered that carries
    this token already: registering it again is a repeat. Otherwise each `models:/m/latest` into `m` copied the
    latest version into a new one, whose source is the version before it, so no repeat ever matched."""
    if named_version is None or named_version.get("name") != registration.model_name:
        return None
    return named_version if version_tags(named_version).get(TAG_TOKEN_ID) == registration.token_id else None


async def _require_change_rights(*, upstream: Upstream, principal: Principal, version: Mapping[str, Any]) -> None:
    """MLflow's answer to the caller changing `version`, before a repeat returns it as theirs.

    A version found by a repeat normally carries the caller's own earlier registration, but it may have been
    registered under an earlier claim of the token, since released, and then taking it would bind the token to a
    model the caller may not be allowed to change at all. A user did so directly, through a claim moved off a model of
    their own they had deleted, and through a claim a timed-out attempt had left in place (security reviews,
    2026-11-28). Which claim a version was registered under is not recorded, so every repeat asks: re-writing the
    version's token tag with the value it has changes no data (MLflow does send a `model_version_tag.set` webhook
    event), and MLflow answers it as it answers any change to the model. A refusal is the caller's 403, and a claim
    this request made or moved is put back as it was.
    """
    await call_as(
        upstream,
        principal,
        "POST",
        MODEL_VERSIONS_SET_TAG,
        body={
            "name": version.get("name"),
            "version": version.get("version"),
            "key": TAG_TOKEN_ID,
            "value": version_tags(version).get(TAG_TOKEN_ID, ""),
        },
        action=f"take over version {version.get('version')} of model '{version.get('name')}'",
    )
