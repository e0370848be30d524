"""The REST API: thin routes over the TaskQueue and the Store, one error table."""

from __future__ import annotations

from fastapi import APIRouter

from hetuflow.server.api import agents, cron_jobs, events, system, tasks

router = APIRouter()
"""Every REST route, combined; the app factory includes this one router."""
router.include_router(tasks.router)
router.include_router(agents.router)
router.include_router(cron_jobs.router)
router.include_router(system.router)
router.include_router(events.router)

__all__ = ["router"]
