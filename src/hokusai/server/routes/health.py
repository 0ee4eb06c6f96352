"""Probes: `/health` (the process is alive) and `/ready` (MLflow is reachable and accepts our credentials)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hokusai import __version__
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


@router.get("/ready", responses={503: {"description": "MLflow is unreachable or refuses the gateway"}})
@router.head("/ready", include_in_schema=False)
async def read_ready(state: StateDep) -> JSONResponse:
    """MLflow answers and accepts the gateway's credentials."""
    problem = await state.upstream.check_ready()
    if problem is not None:
        return error_response(
            503, problem, error_code="TEMPORARILY_UNAVAILABLE", headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    return JSONResponse({"status": "ready", "mlflow": "ok", "identity_mode": state.upstream.mode})
