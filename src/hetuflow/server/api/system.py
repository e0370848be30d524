"""System routes: statistics, liveness and readiness (the last two always open)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from hetuflow.server.api.deps import Context
from hetuflow.server.api.schemas import Health, StatsOut

router = APIRouter(tags=["system"])
"""``/healthz`` and ``/readyz``: open even when auth is on."""
stats_router = APIRouter(tags=["system"])
"""``/api/stats``: behind the token check like the rest of the API."""


@stats_router.get(
    "/api/stats", response_model=StatsOut, summary="Counts of tasks, agents, cron jobs"
)
async def stats(context: Context) -> StatsOut:
    """Tasks by status (every status listed), agents online and in total, enabled cron jobs."""
    return StatsOut.of(await context.store.stats())


_HEALTHY = Health(status="ok").model_dump_json().encode()


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    """200 while the process serves requests; does not touch the database. Always open."""
    # Pre-encoded (``response_model`` documents it): probes call this every few seconds.
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": Health, "description": "The database does not answer"}},
)
async def readyz(context: Context) -> Health | JSONResponse:
    """200 when the database answers a trivial query, else 503."""
    try:
        await context.store.ping()
    except Exception as error:  # readiness never errors: any failure is "not ready"
        body = Health(status="unavailable", detail=str(error))
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok")
