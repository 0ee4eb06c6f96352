"""Token claims in our database: which registered model holds which token, and for whom.

Claims are race-free because they rest on the primary-key insert alone: whoever inserts the row owns the token, and
everyone else reads the winner back (an idempotent success for the same owner and model, else 409).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from hokusai._mlflow_filters import versions_carrying
from hokusai.errors import ErrorCode
from hokusai.server.db import Database
from hokusai.server.errors import RETRY_AFTER_SECONDS, ApiError
from hokusai.server.keys import Principal
from hokusai.server.models import Token, utcnow
from hokusai.server.registry.versions import search_versions
from hokusai.server.upstream import Upstream
from hokusai.validation import token_already_claimed

_CLAIM_ATTEMPTS = 3
# One lock per token while a request looks for its version and creates it (`locks.shared_lock`, across API
# processes on PostgreSQL): a client that retries a slow POST (the SDK does) then finds the first request's version
# instead of adding a twin. The repeat is recognised by its model, token and source; the SDK's Idempotency-Key
# header is not read. Token transfers take it too.
TOKEN_LOCK = "registry.token:"


@dataclass(frozen=True)
class TokenClaim:
    token: Token
    created: bool  # False: the caller already held the token, for this model or (see `moved_from`) another
    moved_from: str | None = None  # the model the caller's released claim was moved from, to this one

    @property
    def taken(self) -> bool:
        """True when this registration made or moved the claim: a failure undoes it."""
        return self.created or self.moved_from is not None


class TokenHeld(ApiError):
    """409: another model holds the token; `holder` is its claim, for the caller's own stale-claim check."""

    def __init__(self, holder: Token, *, model_name: str, owner: str) -> None:
        message = token_already_claimed(
            holder.token_id, holder.model_name, yours=holder.owner == owner, same_name=holder.model_name == model_name
        )
        super().__init__(409, message, error_code=ErrorCode.TOKEN_ALREADY_CLAIMED)
        self.holder = holder


def claim_token(database: Database, *, token_id: str, model_name: str, owner: str) -> TokenClaim:
    """Claim `token_id` for `owner`'s `model_name`, or confirm they hold it; `TokenHeld` when another model does."""
    for _ in range(_CLAIM_ATTEMPTS):
        now = utcnow()
        token = Token(token_id=token_id, model_name=model_name, owner=owner, created_at=now, updated_at=now)
        try:
            with database.session() as session:
                session.add(token)
            return TokenClaim(token=token, created=True)
        except IntegrityError:
            pass  # someone holds it: read the holder back below
        holder = get_token(database, token_id=token_id)
        if holder is None:
            continue  # released between our insert and our read: try the insert again
        if holder.owner == owner and holder.model_name == model_name:
            return TokenClaim(token=holder, created=False)
        raise TokenHeld(holder, model_name=model_name, owner=owner)
    raise ApiError(503, "The token registry is busy; retry.", headers={"Retry-After": RETRY_AFTER_SECONDS})


def get_token(database: Database, *, token_id: str) -> Token | None:
    with database.session() as session:
        return session.get(Token, token_id)


def release_token(
    database: Database, *, token_id: str, owner: str | None = None, model_name: str | None = None
) -> Token | None:
    """Delete the claim (only if it still has `owner`/`model_name`, when given); the deleted row or `None`."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None or (owner is not None and token.owner != owner):
            return None
        if model_name is not None and token.model_name != model_name:
            return None
        session.delete(token)
        return token


def transfer_token(
    database: Database, *, token_id: str, new_owner: str, model_name: str | None = None
) -> tuple[Token, str] | None:
    """Give the token to `new_owner` (and `model_name`); the updated row and the previous owner, or `None`."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None:
            return None
        previous_owner = token.owner
        token.owner = new_owner
        token.model_name = model_name or token.model_name
        token.updated_at = utcnow()
        return token, previous_owner


def move_claim(database: Database, *, token_id: str, owner: str, from_model: str, to_model: str) -> Token | None:
    """Point `owner`'s claim from `from_model` to `to_model`; `None` when the claim is no longer that one."""
    with database.session() as session:
        token = session.get(Token, token_id, with_for_update=True)
        if token is None or (token.owner, token.model_name) != (owner, from_model):
            return None
        token.model_name = to_model
        token.updated_at = utcnow()
        return token


def follow_model_rename(database: Database, *, old_name: str, new_name: str, token_ids: Collection[str]) -> list[str]:
    """Point these tokens' claims on registered model `old_name` at `new_name`; the ids of the tokens that moved."""
    with database.session() as session:
        query = select(Token).where(Token.model_name == old_name, Token.token_id.in_(token_ids)).with_for_update()
        tokens = session.scalars(query).all()
        for token in tokens:
            token.model_name = new_name
            token.updated_at = utcnow()
        return sorted(token.token_id for token in tokens)


def tokens_claiming_model(database: Database, *, model_name: str, owner: str | None = None) -> list[str]:
    """The ids of the tokens claimed on `model_name` (by `owner`, when given)."""
    query = select(Token.token_id).where(Token.model_name == model_name)
    if owner is not None:
        query = query.where(Token.owner == owner)
    with database.session() as session:
        return sorted(session.scalars(query))


async def follow_rename(
    *, database: Database, upstream: Upstream, principal: Principal, old_name: str, new_name: str
) -> list[str]:
    """Move the claims of a model MLflow has just renamed; the ids of the tokens that moved.

    Only the claims a version of the renamed model carries move: a claim left on the old name by a deleted model of
    that name (see `tokenized._move_stale_claim`) is not this model's, and following it would point a stranger's
    token at it.
    """
    carried = []
    for token_id in await run_in_threadpool(tokens_claiming_model, database, model_name=old_name):
        versions, _ = await search_versions(
            upstream=upstream,
            principal=principal,
            filter_string=versions_carrying(new_name, token_id),
            max_results=1,
        )
        if versions:
            carried.append(token_id)
    if not carried:
        return []
    return await run_in_threadpool(
        follow_model_rename, database, old_name=old_name, new_name=new_name, token_ids=carried
    )


def models_holding_tokens(
    database: Database, *, token_ids: Collection[str] | None = None, owner: str | None = None
) -> dict[str, str]:
    """Token id -> the registered model holding it, for these tokens and/or this owner's (all tokens if neither)."""
    query = select(Token.token_id, Token.model_name)
    if token_ids is not None:
        query = query.where(Token.token_id.in_(token_ids))
    if owner is not None:
        query = query.where(Token.owner == owner)
    with database.session() as session:
        return {token_id: model_name for token_id, model_name in session.execute(query)}
