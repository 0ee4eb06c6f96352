"""FastAPI dependencies as `Annotated` aliases, so route signatures stay short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant

from hokusai.errors import ErrorCode, HokusaiValidationError
from hokusai.server.credentials import refuse_key_in_query
from hokusai.server.errors import ApiError
from hokusai.server.keys import Principal
from hokusai.server.state import AppState
from hokusai.validation import first_repeated


def query_as_declared(request: Request) -> None:
    """Refuse a query parameter the route does not take (FastAPI ignores it: a misspelt filter listed everything) or
    one given twice (FastAPI keeps the last): a 400 naming it. No route of the API takes a list in its query."""
    if not request.scope.get("query_string"):
        return  # most calls have no query string; parsing an empty one is skipped
    query = request.query_params
    # A key in the URL is refused as such first: the fix is to move it out of the URL, whatever else is wrong there.
    refuse_key_in_query(query)
    names = [name for name, _ in query.multi_items()]
    repeated = first_repeated(names)
    if repeated is not None:
        raise HokusaiValidationError(repeated, "is given more than once; give it once")
    declared = list(dict.fromkeys(_declared_query_parameters(request.scope["route"].dependant)))
    unknown = [name for name in names if name not in declared]
    if unknown:
        _refuse_undeclared(unknown, declared)


def _declared_query_parameters(dependant: Dependant) -> Iterator[str]:
    """The query parameters of a route's function and of its dependencies, by the names a client sends."""
    yield from (parameter.alias for parameter in dependant.query_params)
    for dependency in dependant.dependencies:
        yield from _declared_query_parameters(dependency)


def _refuse_undeclared(unknown: list[str], declared: list[str]) -> None:
    takes = f"it takes {', '.join(declared)}" if declared else "it takes none"
    if len(unknown) == 1:
        raise HokusaiValidationError(unknown[0], f"is not a query parameter of this endpoint; {takes}")
    raise ApiError(
        400,
        f"{', '.join(unknown)}: are not query parameters of this endpoint; {takes}",
        error_code=ErrorCode.INVALID_PARAMETER_VALUE,
    )


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
