"""FastAPI dependencies as `Annotated` aliases, so route signatures stay short."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hokusai.server.keys import Principal
from hokusai.server.state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.hokusai


StateDep = Annotated[AppState, Depends(get_state)]


async def current_principal(request: Request, state: StateDep) -> Principal:
    return await state.authenticate(request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _scope_checker(scope: str):  # type: ignore[no-untyped-def]
    async def check(request: Request, state: StateDep, principal: PrincipalDep) -> Principal:
        await state.require_scope(request, principal, scope)
        return principal

    return check


ReaderDep = Annotated[Principal, Depends(_scope_checker("read"))]
WriterDep = Annotated[Principal, Depends(_scope_checker("write"))]
AdminDep = Annotated[Principal, Depends(_scope_checker("admin"))]
