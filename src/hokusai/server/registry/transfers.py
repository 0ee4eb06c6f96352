"""Admin operations on tokens: transfer to another owner (with MANAGE on the model in MLflow) and release."""

from __future__ import annotations

import logging

import httpx
from starlette.concurrency import run_in_threadpool

from hokusai.errors import LAYER_MLFLOW, ErrorCode
from hokusai.server.audit import AuditLog, Caller, audit_event
from hokusai.server.db import Database
from hokusai.server.errors import ApiError, mlflow_call_failed
from hokusai.server.keys import KeyStore, Principal
from hokusai.server.locks import shared_lock
from hokusai.server.mlflow_rest import call_as
from hokusai.server.models import Token
from hokusai.server.registry.claims import TOKEN_LOCK, get_token, release_token, tokens_claiming_model, transfer_token
from hokusai.server.registry.versions import model_carries
from hokusai.server.upstream import Upstream, UpstreamError
from hokusai.validation import token_not_claimed

logger = logging.getLogger(__name__)

REGISTERED_MODELS_GET = "/api/2.0/mlflow/registered-models/get"


async def transfer(
    *,
    database: Database,
    keys: KeyStore,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    token_id: str,
    new_owner: str,
    model_name: str | None,
) -> Token:
    """Give a token (and MANAGE on its registered model in MLflow) to another owner.

    The new owner must be an account (one a key was ever created for) and a new model must exist in MLflow: a typo
    would otherwise hand the token, and the real owner's rights on the model, to nobody.
    """
    if not await run_in_threadpool(keys.list, owner=new_owner):
        twin = await run_in_threadpool(keys.case_twin, new_owner)
        remedy = (
            f"did you mean '{twin}'? Account names are case-sensitive."
            if twin
            else f"an account exists once a key is created for it (hokusai keys create --owner {new_owner})."
        )
        raise ApiError(404, f"No account '{new_owner}': {remedy}", error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST)
    if model_name is not None:
        await call_as(
            upstream,
            caller.principal,
            "GET",
            REGISTERED_MODELS_GET,
            params={"name": model_name},
            action=f"find registered model '{model_name}' to move the token to",
        )
    # Under the token's lock, as registrations are: two transfers at once would each withdraw the same previous
    # owner's grant and leave the other new owner's in place.
    async with shared_lock(database, TOKEN_LOCK + token_id):
        return await _transfer_locked(
            database=database,
            upstream=upstream,
            audit=audit,
            caller=caller,
            token_id=token_id,
            new_owner=new_owner,
            model_name=model_name,
        )


async def _transfer_locked(
    *,
    database: Database,
    upstream: Upstream,
    audit: AuditLog,
    caller: Caller,
    token_id: str,
    new_owner: str,
    model_name: str | None,
) -> Token:
    current = await run_in_threadpool(get_token, database, token_id=token_id)
    if current is None:
        raise token_not_found(token_id)
    if model_name is None:
        await _require_carrier(upstream=upstream, principal=caller.principal, token=current)
    target = model_name or current.model_name
    # The previous owner keeps MANAGE on the model while they hold other tokens on it: withdrawing it would leave them
    # unable to register further versions of their own tokens, or to repeat a registration (a walkthrough, 2026-11-29).
    kept = await run_in_threadpool(tokens_claiming_model, database, model_name=target, owner=current.owner)
    kept = [other for other in kept if other != token_id]
    # MLflow's grants move first and the record after: a failure in between leaves the record (and so the previous
    # owner) as it was, and the retry the error asks for hands the model over again, idempotently. The other order
    # would have the retry read the new owner as the previous one and leave the old owner's MANAGE in place.
    try:
        await upstream.hand_over_registered_model(
            target, new_owner=new_owner, previous_owner=None if kept else current.owner
        )
    except httpx.TransportError as exc:
        raise mlflow_call_failed(exc) from exc
    except UpstreamError as exc:
        logger.warning("token %s stays with %s: MLflow grants failed: %s", token_id, current.owner, exc)
        raise ApiError(
            502,
            f"MLflow refused to hand model '{target}' to '{new_owner}', so token "
            f"'{token_id}' still belongs to '{current.owner}'; retry.",
            layer=LAYER_MLFLOW,
        ) from exc
    moved = await run_in_threadpool(
        transfer_token, database, token_id=token_id, new_owner=new_owner, model_name=model_name
    )
    if moved is None:
        raise token_not_found(token_id)
    token, previous_owner = moved
    detail: dict[str, object] = {"from": previous_owner, "to": new_owner, "model_name": token.model_name}
    if kept:
        detail["previous_owner_keeps_model_for"] = kept
    await audit_event(audit, caller, "token.transfer", "ok", token_id, detail)
    return token


async def _require_carrier(*, upstream: Upstream, principal: Principal, token: Token) -> None:
    """409 unless a version of the claim's model still carries the token, before that model is handed over.

    A claim outlives its model (see `tokenized._move_stale_claim`), and another user may since have created a model
    of that name: handing it over gave the new owner MANAGE on a stranger's model (security review, 2026-11-28).
    """
    if not await model_carries(
        upstream=upstream, principal=principal, model_name=token.model_name, token_id=token.token_id
    ):
        raise ApiError(
            409,
            f"No version of model '{token.model_name}' carries token '{token.token_id}' any more (the model was "
            "deleted, or renamed straight on MLflow), so that model is not handed over with it. Name the model the "
            "token should move to (--model, or `model_name` in the body).",
            error_code=ErrorCode.TOKEN_MODEL_GONE,
        )


async def release(*, database: Database, audit: AuditLog, caller: Caller, token_id: str) -> Token:
    """Free a token for anyone to claim; its model versions keep their tags."""
    token = await run_in_threadpool(release_token, database, token_id=token_id)
    if token is None:
        raise token_not_found(token_id)
    detail = {"owner": token.owner, "model_name": token.model_name}
    await audit_event(audit, caller, "token.release", "ok", token_id, detail)
    return token


def token_not_found(token_id: str) -> ApiError:
    return ApiError(404, token_not_claimed(token_id), error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST)
