"""`/api/v1/auth/whoami`: who the presented key belongs to."""

from __future__ import annotations

from fastapi import APIRouter

from hokusai.server.api_route import ApiRoute
from hokusai.server.deps import PrincipalDep
from hokusai.server.schemas import WhoAmI, error_responses
from hokusai.validation import SCOPES

router = APIRouter(prefix="/api/v1/auth", route_class=ApiRoute, tags=["auth"], responses=error_responses())


@router.get("/whoami", response_model=WhoAmI)
async def read_whoami(principal: PrincipalDep) -> WhoAmI:
    """The owner, key id and prefix, scopes and expiry of the key that sent this request."""
    return WhoAmI(
        owner=principal.owner,
        key_id=principal.key_id,
        key_prefix=principal.prefix,
        scopes=[scope for scope in SCOPES if scope in principal.scopes],
        expires_at=principal.expires_at,
        is_admin=principal.is_admin,
    )
