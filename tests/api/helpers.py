"""Helpers for the API tests: config, and driving tasks through the Store as an agent would."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI

from hetuflow.config import Config, DatabaseConfig, SchedulerConfig, ServerConfig
from hetuflow.models import AgentRegistration, ClaimGroup, Dispatch, SlotOffer
from hetuflow.server.context import ServerContext


def make_config(database: DatabaseConfig, **server: object) -> Config:
    return Config(
        database=database,
        server=ServerConfig.model_validate(server),
        scheduler=SchedulerConfig(retry_interval_seconds=7),
    )


def context_of(app: FastAPI) -> ServerContext:
    context: ServerContext = app.state.context
    return context


async def hold_task(
    app: FastAPI,
    task_type: str,
    *,
    name: str = "elsewhere-agent",
    capabilities: tuple[str, ...] = (),
) -> Dispatch:
    """Make an agent (connected on another node, so this app's dispatcher leaves it alone)
    claim the oldest pending task of ``task_type``; return the dispatch."""
    context = context_of(app)
    now = context.clock.now()
    agent = await context.store.connect_agent(
        AgentRegistration(
            capabilities=capabilities,
            supported_task_types=(task_type,),
            max_concurrent_tasks=4,
            name=name,
        ),
        node_id="node-elsewhere",
        now=now,
    )
    group = ClaimGroup(
        task_types=frozenset({task_type}),
        capabilities=frozenset(capabilities),
        offers=(SlotOffer(agent_id=agent.id, free_slots=1, running=0),),
    )
    [dispatch] = await context.store.claim_tasks([group], now=now)
    return dispatch


def now_of(app: FastAPI) -> datetime:
    return context_of(app).clock.now()
