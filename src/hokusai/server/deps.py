"""FastAPI dependencies as `Annotated` aliases, so route signatures stay short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from hokusai.errors import HokusaiValidationError
from hokusai.server.keys import Principal
from hokusai.server.state import AppState


def single_valued_query(request: Request) -> None:
    """A query parameter given twice is a 400 naming it, where FastAPI would silently keep the last one: no route of
    the API takes a list in its query."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise HokusaiValidationError(name, "is given more than once; give it once")
        seen.add(name)


def get_state(request: Request) -> AppState:
    return request.app.state.hokusai


StateDep = Annotated[AppState, Depends(get_state)]


async def current_principal(request: Request, state: StateDep) -> Principal:
    return await state.authenticate(request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _scope_checker(scope: str) -> Callable[[Request, AppState, Principal], Awaitable[Principal]]:
    async def check(request: Request, state: StateDep, principal: PrincipalDep) -> Principal:
        await state.require_scope(request, principal, scope)
        return principal

    return check


ReaderDep = Annotated[Principal, Depends(_scope_checker("read"))]
WriterDep = Annotated[Principal, Depends(_scope_checker("write"))]
AdminDep = Annotated[Principal, Depends(_scope_checker("admin"))]
