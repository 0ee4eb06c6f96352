"""The audit log, for admins: claims, registrations, transfers, releases, key changes and permission denials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from hokusai.server.api_route import ApiRoute
from hokusai.server.audit_query import list_audit_events
from hokusai.server.deps import AdminDep, StateDep
from hokusai.server.schemas import OWNER_RULES, AuditEventList, error_responses
from hokusai.validation import (
    AUDIT_ACTIONS,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    OFFLINE_ACTOR,
    validate_audit_action,
    validate_owner,
)

router = APIRouter(prefix="/api/v1/audit", route_class=ApiRoute, tags=["audit"])

ActorQuery = Annotated[str | None, Query(description="An account name", json_schema_extra=OWNER_RULES)]
ActionQuery = Annotated[
    str | None, Query(description="One of the recorded actions", json_schema_extra={"enum": list(AUDIT_ACTIONS)})
]


def _actor(actor: str) -> str:
    """Actors are account names (the owner rule applies, reported under this parameter's name), or `offline-cli`."""
    return actor if actor == OFFLINE_ACTOR else validate_owner(actor, "actor")


@router.get("", response_model=AuditEventList, responses=error_responses())
async def read_audit_events(
    state: StateDep,
    principal: AdminDep,
    actor: ActorQuery = None,
    action: ActionQuery = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_token: Annotated[str | None, Query(max_length=64)] = None,
    max_results: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> AuditEventList:
    """Audit events, newest first, filtered by actor, action and time (`since` inclusive, `until` exclusive)."""
    return await run_in_threadpool(
        list_audit_events,
        state.database,
        actor=_actor(actor) if actor is not None else None,
        action=validate_audit_action(action) if action is not None else None,
        since=since,
        until=until,
        page_token=page_token,
        max_results=max_results,
    )
