"""The REST API: thin routes over the TaskQueue and the Store, one error table.

Every route but ``/healthz``, ``/readyz`` and a hook's calls (``POST /api/hooks/{name}``,
which checks the hook's signature instead) is behind ``server.auth.authorize`` (a viewer
token to read, an operator token to change; the token routes need an admin token); with auth
off the check lets everything through.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hetuflow.server.api import (
    agents,
    bulk,
    cron_jobs,
    events,
    insights,
    rate_limits,
    system,
    tasks,
    tokens,
    triggers,
    workflows,
)
from hetuflow.server.auth import authorize, authorize_admin

router = APIRouter()
"""Every REST route, combined; the app factory includes this one router."""
_protected = [Depends(authorize)]
# Routes are matched in this order, one by one: the probes first (called every few seconds,
# matched before the forty-odd API routes), then the tasks (the producer's hot path).
router.include_router(system.router)  # /healthz and /readyz: always open
router.include_router(tasks.router, dependencies=_protected)
router.include_router(bulk.router, dependencies=_protected)
router.include_router(workflows.router, dependencies=_protected)
router.include_router(agents.router, dependencies=_protected)
router.include_router(cron_jobs.router, dependencies=_protected)
router.include_router(rate_limits.router, dependencies=_protected)
router.include_router(system.stats_router, dependencies=_protected)
router.include_router(insights.router, dependencies=_protected)
router.include_router(events.router, dependencies=_protected)
router.include_router(triggers.router, dependencies=_protected)
# A hook's caller has no token: the hook's signature is checked instead.
router.include_router(triggers.calls_router)
router.include_router(tokens.router, dependencies=[Depends(authorize_admin)])

__all__ = ["router"]
