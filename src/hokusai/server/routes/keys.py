"""API key management: create, list, revoke, rotate. Users manage their own keys; admins manage everyone's."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Request, status
from starlette.concurrency import run_in_threadpool

from hokusai.errors import ErrorCode, HokusaiValidationError
from hokusai.server.api_route import ApiRoute
from hokusai.server.deps import PrincipalDep, StateDep
from hokusai.server.errors import ApiError
from hokusai.server.keys import IssuedKey, KeyAlreadyRevoked, KeyExpired, Principal, expiry_from_days, principal_of
from hokusai.server.models import ApiKey, utcnow
from hokusai.server.schemas import OWNER_RULES, KeyCreate, KeyCreated, KeyInfo, KeyList, error_responses
from hokusai.server.state import AppState
from hokusai.server.upstream import UpstreamError
from hokusai.validation import parse_scopes, validate_key_name, validate_owner

router = APIRouter(prefix="/api/v1/keys", route_class=ApiRoute, tags=["keys"], responses=error_responses(404, 409))
logger = logging.getLogger(__name__)
_SHOWN_ID_LENGTH = 64  # of an unknown key id quoted back: real ids are shorter, and a 10 KB one need not return whole


def _created(issued: IssuedKey) -> KeyCreated:
    return KeyCreated(**KeyInfo.of(issued.record).model_dump(), key=issued.secret)


def _owned_key(state: AppState, principal: Principal, key_id: str) -> ApiKey:
    record = state.keys.get(key_id)
    # Someone else's key id answers like a missing one, so ids of other accounts cannot be probed.
    if record is None or (record.owner != principal.owner and not principal.is_admin):
        shown = key_id if len(key_id) <= _SHOWN_ID_LENGTH else key_id[:_SHOWN_ID_LENGTH] + "…"
        raise ApiError(404, f"No API key with id '{shown}'.", error_code=ErrorCode.RESOURCE_DOES_NOT_EXIST)
    return record


def _lacking(principal: Principal, scopes: frozenset[str]) -> list[str]:
    return sorted(scope for scope in scopes if not principal.has_scope(scope))


def _require_power_over(principal: Principal, record: ApiKey, action: str) -> None:
    """A non-admin key may revoke or rotate itself, and another key of its owner only if it could have created it:
    no scope it lacks, no longer lifetime.

    Otherwise a read-only or short-lived key (the kind handed to a dashboard or a CI job) could rotate its owner's
    write or admin key into a fresh secret of its own, or revoke every key the owner has (found by a security review,
    2026-11-28).
    """
    if principal.is_admin or record.id == principal.key_id:
        return
    target = principal_of(record)
    lacking = _lacking(principal, target.scopes)
    outlives = principal.expires_at is not None and (
        target.expires_at is None or target.expires_at > principal.expires_at
    )
    if not lacking and not outlives:
        return
    reason = f"it has scopes yours lacks ({','.join(lacking)})" if lacking else "it outlives yours"
    raise ApiError(
        403,
        f"Your key cannot {action} key '{record.id}': {reason}. Use a key of yours with at least its scopes and "
        "lifetime, or ask an admin.",
        error_code=ErrorCode.PERMISSION_DENIED,
    )


async def _provision(state: AppState, issued: IssuedKey) -> None:
    """Create the owner in MLflow now rather than on their first request; retried lazily if MLflow is down."""
    try:
        await state.upstream.ensure_account(principal_of(issued.record))
    except (UpstreamError, httpx.HTTPError) as exc:
        logger.warning("could not provision %s in MLflow yet (%s); will retry on first use", issued.record.owner, exc)


def _audit(
    state: AppState,
    request: Request,
    principal: Principal,
    action: str,
    target: str,
    detail: dict[str, str] | None = None,
) -> None:
    state.audit.record(
        actor=principal.owner,
        key_id=principal.key_id,
        action=action,
        outcome="ok",
        target=target,
        detail=detail,
        request_id=getattr(request.state, "request_id", None),
    )


def _within_lifetime_of(limit: datetime, requested: datetime | None) -> datetime:
    """A non-admin's new key expires no later than the key that creates it, and with it when no expiry is asked for.

    Otherwise a key given for a week could create one that never expires.
    """
    if requested is None:
        return limit
    if requested <= limit:
        return requested
    days_left = (limit - utcnow()).days  # whole days: a key made a moment ago for 7 has 6 and some left
    shorter = (
        f"ask for at most {days_left} day{'s' if days_left > 1 else ''} (`--expires-in-days {days_left}`), "
        if days_left
        else ""
    )
    raise ApiError(
        403,
        f"A key cannot outlive the key that creates it, and yours expires at {limit:%Y-%m-%d %H:%M} UTC: leave out "
        f"`--expires-in-days` (`expires_in_days`) for a key that expires with it, {shorter}or ask an admin for a "
        "longer-lived key.",
        error_code=ErrorCode.PERMISSION_DENIED,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key(body: KeyCreate, request: Request, state: StateDep, principal: PrincipalDep) -> KeyCreated:
    """Create a key. The full key is in the response once; only its keyed hash is stored."""
    try:
        scopes = parse_scopes(body.scopes)
    except ValueError as exc:
        raise HokusaiValidationError("scopes", str(exc)) from exc
    name = validate_key_name(body.name)
    owner = validate_owner(body.owner) if body.owner is not None else principal.owner
    if owner != principal.owner and not principal.is_admin:
        await state.require_scope(
            request,
            principal,
            "admin",
            purpose=f"to create a key for another owner ('{owner}')",
            advice="Run `hokusai keys create` without `--owner` (or send no owner) to create a key for yourself, or "
            "ask an admin to create this one.",
        )
    if not principal.is_admin and _lacking(principal, scopes):
        held = ",".join(sorted(principal.scopes))
        raise ApiError(
            403,
            f"A key can only be given scopes its creator holds, and yours holds {held}: ask for those "
            f"(`--scopes {held}` in `hokusai keys create`), or ask an admin for a key with wider scopes.",
            error_code=ErrorCode.PERMISSION_DENIED,
        )
    expires_at = expiry_from_days(body.expires_in_days)
    if not principal.is_admin and principal.expires_at is not None:
        expires_at = _within_lifetime_of(principal.expires_at, expires_at)
    issued = await run_in_threadpool(state.keys.create, owner=owner, name=name, scopes=scopes, expires_at=expires_at)
    await _provision(state, issued)
    await run_in_threadpool(_audit, state, request, principal, "key.create", issued.record.id)
    return _created(issued)


@router.get("", response_model=KeyList)
async def read_keys(
    state: StateDep,
    principal: PrincipalDep,
    owner: Annotated[
        str | None, Query(description="Another account's keys (admins)", json_schema_extra=OWNER_RULES)
    ] = None,
    all: bool = False,
) -> KeyList:
    """List your keys; admins may list another owner's (`owner=`) or every key (`all=true`)."""
    if owner is not None:
        owner = validate_owner(owner)  # PostgreSQL refuses NUL in text with an error, not an empty list
    if (all or (owner is not None and owner != principal.owner)) and not principal.is_admin:
        raise ApiError(403, "Only admin keys may list other accounts' keys.", error_code=ErrorCode.PERMISSION_DENIED)
    selected = None if all else (owner or principal.owner)
    records = await run_in_threadpool(state.keys.list, owner=selected)
    return KeyList(keys=[KeyInfo.of(record) for record in records])


@router.delete("/{key_id}", response_model=KeyInfo)
async def revoke_key(key_id: str, request: Request, state: StateDep, principal: PrincipalDep) -> KeyInfo:
    """Revoke a key at once (other server processes notice within the key cache TTL)."""
    _require_power_over(principal, await run_in_threadpool(_owned_key, state, principal, key_id), "revoke")
    try:
        record = await run_in_threadpool(state.keys.revoke, key_id)
    except KeyAlreadyRevoked as exc:
        raise ApiError(409, str(exc), error_code=ErrorCode.INVALID_STATE) from exc
    assert record is not None
    await run_in_threadpool(_audit, state, request, principal, "key.revoke", key_id)
    return KeyInfo.of(record)


@router.post("/{key_id}/rotate", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def rotate_key(key_id: str, request: Request, state: StateDep, principal: PrincipalDep) -> KeyCreated:
    """Issue a replacement with the same owner, name, scopes and expiry, and revoke the old key."""
    _require_power_over(principal, await run_in_threadpool(_owned_key, state, principal, key_id), "rotate")
    try:
        issued = await run_in_threadpool(state.keys.rotate, key_id)
    except (KeyExpired, KeyAlreadyRevoked) as exc:
        raise ApiError(409, str(exc), error_code=ErrorCode.INVALID_STATE) from exc
    assert issued is not None  # keys are never deleted, and `_owned_key` found this one
    detail = {"replaced_by": issued.record.id}
    await run_in_threadpool(_audit, state, request, principal, "key.rotate", key_id, detail)
    return _created(issued)
