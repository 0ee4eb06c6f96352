"""The token registry: who holds a token, and the admin operations transfer and release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from hokusai.server.api_route import ApiRoute
from hokusai.server.audit import Caller
from hokusai.server.deps import AdminDep, ReaderDep, StateDep
from hokusai.server.registry import claims, transfers
from hokusai.server.registry.versions import model_carries
from hokusai.server.schemas import TOKEN_ID_RULES, TokenInfo, TokenTransfer, error_responses
from hokusai.validation import normalize_token_id, validate_owner, validate_tokenized_model_name

router = APIRouter(prefix="/api/v1/tokens", route_class=ApiRoute, tags=["tokens"])

# Documented here, enforced by normalize_token_id (one rule, one message).
TokenId = Annotated[str, Path(description="Case-insensitive", json_schema_extra=TOKEN_ID_RULES)]


@router.get("/{token_id}", response_model=TokenInfo, responses=error_responses(404, 429, 502, 503, 504))
async def read_token(token_id: TokenId, state: StateDep, principal: ReaderDep) -> TokenInfo:
    """The model holding a token; its owner, and whether that model still carries the token, are shown only to that
    owner and to admins."""
    token_id = normalize_token_id(token_id)
    token = await run_in_threadpool(claims.get_token, state.database, token_id=token_id)
    if token is None:
        raise transfers.token_not_found(token_id)
    if not (principal.is_admin or token.owner == principal.owner):
        return TokenInfo.of(token, show_owner=False)
    # Asked as the caller, who can see the model: its owner holds MANAGE on it, an admin sees every model. Not asked
    # for anyone else, who may not be allowed to read the model, so that "no" would be a guess.
    carried = await model_carries(
        upstream=state.upstream, principal=principal, model_name=token.model_name, token_id=token.token_id
    )
    return TokenInfo.of(token, show_owner=True, model_carries_token=carried)


@router.post("/{token_id}/transfer", response_model=TokenInfo, responses=error_responses(404, 502, 503, 504))
async def transfer_token(
    token_id: TokenId, body: TokenTransfer, request: Request, state: StateDep, principal: AdminDep
) -> TokenInfo:
    """Admins: give a token (and MANAGE on its registered model) to another owner, optionally another model."""
    token = await transfers.transfer(
        database=state.database,
        keys=state.keys,
        upstream=state.upstream,
        audit=state.audit,
        caller=Caller.of(request, principal),
        token_id=normalize_token_id(token_id),
        new_owner=validate_owner(body.new_owner, "new_owner"),
        # Never a baseline model: the new owner would get MANAGE on the versions every user shares.
        model_name=validate_tokenized_model_name(body.model_name) if body.model_name is not None else None,
    )
    return TokenInfo.of(token, show_owner=True)


@router.delete("/{token_id}", response_model=TokenInfo, responses=error_responses(404))
async def release_token(token_id: TokenId, request: Request, state: StateDep, principal: AdminDep) -> TokenInfo:
    """Admins: release a token so anyone may claim it; registered versions keep their tags."""
    token = await transfers.release(
        database=state.database,
        audit=state.audit,
        caller=Caller.of(request, principal),
        token_id=normalize_token_id(token_id),
    )
    return TokenInfo.of(token, show_owner=True)
