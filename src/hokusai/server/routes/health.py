"""Probes: `/health` (the process is alive) and `/ready` (its database and MLflow answer, and MLflow accepts it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from hokusai import __version__
from hokusai.errors import ErrorCode
from hokusai.server.deps import StateDep
from hokusai.server.errors import RETRY_AFTER_SECONDS, error_response

router = APIRouter(tags=["health"])


# Load balancers and uptime checks often probe with HEAD; FastAPI serves a route only for the methods it names. The
# HEAD routes stay out of the schema: one route for both methods gave two operations with one operationId.
@router.get("/health")
@router.head("/health", include_in_schema=False)
async def read_health() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    responses={503: {"description": "The Hokusai database or MLflow is unavailable, or MLflow refuses the API"}},
)
@router.head("/ready", include_in_schema=False)
async def read_ready(state: StateDep) -> JSONResponse:
    """The Hokusai database answers, and MLflow answers, accepts the gateway's credentials and reads its store."""
    try:
        await run_in_threadpool(state.database.ping)
        problem = None
    except OperationalError:
        problem = "The Hokusai database (HOKUSAI_DATABASE_URL) is unavailable"
    problem = problem or await state.upstream.check_ready()
    if problem is not None:
        return error_response(
            503, problem, error_code=ErrorCode.TEMPORARILY_UNAVAILABLE, headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    return JSONResponse({"status": "ready", "mlflow": "ok", "identity_mode": state.upstream.mode})
