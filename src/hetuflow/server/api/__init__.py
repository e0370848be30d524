"""The REST API: thin routes over the TaskQueue and the Store, one error table.

Every route but ``/healthz``, ``/readyz`` and a hook's calls (``POST /api/hooks/{name}``,
which checks the hook's signature instead) is behind ``server.auth.authorize`` (a viewer
token to read, an operator token to change; the token routes need an admin token); with auth
off the check lets everything through.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from hetuflow.server.api import (
    agents,
    bulk,
    concurrency_keys,
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

_protected = [Depends(authorize)]
ROUTERS: list[tuple[APIRouter, list[Any]]] = [
    # Matched in this order, one by one: the probes first (called every few seconds, matched
    # before the forty-odd API routes), then the tasks (the producer's hot path).
    (system.router, []),  # /healthz and /readyz: always open
    (tasks.router, _protected),
    (bulk.router, _protected),
    (workflows.router, _protected),
    (agents.router, _protected),
    (cron_jobs.router, _protected),
    (rate_limits.router, _protected),
    (concurrency_keys.router, _protected),
    (system.stats_router, _protected),
    (insights.router, _protected),
    (events.router, _protected),
    (triggers.router, _protected),
    # A hook's caller has no token: the hook's signature is checked instead.
    (triggers.calls_router, []),
    (tokens.router, [Depends(authorize_admin)]),
]
"""Every REST router with its auth dependency. The app factory includes each one itself:
each level of routers nested in routers is one more step of FastAPI's route matching on
every request."""

__all__ = ["ROUTERS"]
