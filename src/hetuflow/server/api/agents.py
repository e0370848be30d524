"""Agent routes: list (with connection status), pre-create, get, delete, drain, resume,
disable, enable."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from hetuflow.errors import AgentNotFound, AgentOffline
from hetuflow.models import AgentStatus
from hetuflow.server.api.deps import Context
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import AgentCreate, AgentCreated, AgentList, AgentOut
from hetuflow.server.auth import issue_token
from hetuflow.server.context import ServerContext
from hetuflow.server.presence import AGENT_ENABLED_CHANGED
from hetuflow.store.base import AGENT_DRAIN_CHANGED, TASKS_READY
from hetuflow.tokens import Role

router = APIRouter(prefix="/api/agents", tags=["agents"])


@router.get("", response_model=AgentList, summary="List agents", responses=error_responses(422))
async def list_agents(
    context: Context,
    online: Annotated[
        bool | None,
        Query(description="true: connected agents (online or draining); false: offline ones."),
    ] = None,
    status: Annotated[
        list[AgentStatus] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
) -> AgentList:
    """Agents by name, each with its connection status, last heartbeat and running count."""
    statuses: list[AgentStatus] = list(dict.fromkeys(status or ()))
    if online is not None:
        wanted = {AgentStatus.ONLINE, AgentStatus.DRAINING} if online else {AgentStatus.OFFLINE}
        statuses = [item for item in statuses if item in wanted] if statuses else sorted(wanted)
        if not statuses:
            return AgentList(items=[])
    agents = await context.store.list_agents(statuses=statuses)
    return AgentList(items=[AgentOut.of(agent) for agent in agents])


@router.post(
    "",
    status_code=201,
    response_model=AgentCreated,
    summary="Create an agent",
    responses=error_responses(400, 409, 413, 422),
)
async def create_agent(body: AgentCreate, context: Context) -> AgentCreated:
    """Pre-create an agent (offline until a process connects as it). **409** if the name is
    taken. The answer carries the agent's token (`token`), shown this once."""
    now = context.clock.now()
    agent = await context.store.create_agent(body.to_new_agent(), now=now)
    secret, _ = await issue_token(
        context.store, name=agent.name, role=Role.AGENT, now=now, agent_id=agent.id
    )
    return AgentCreated(**AgentOut.of(agent).model_dump(), token=secret)


@router.get(
    "/{agent_id}", response_model=AgentOut, summary="Get an agent", responses=error_responses(404)
)
async def get_agent(agent_id: UUID, context: Context) -> AgentOut:
    agent = await context.store.get_agent(agent_id)
    if agent is None:
        raise AgentNotFound(f"no agent with id {agent_id}", field="agent_id")
    return AgentOut.of(agent)


@router.delete(
    "/{agent_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an agent",
    responses=error_responses(404, 409),
)
async def delete_agent(agent_id: UUID, context: Context) -> Response:
    """Delete an offline agent: it is no longer listed nor found (404), its tokens are
    deleted, tasks it still held go back to pending, and a process that reconnects with its
    id is refused (close code 4010, `agent_deleted`); its name is free for a new agent.
    **409** `agent_online` while the agent is connected (`online` or `draining`, also during
    the reconnect grace after its connection dropped): drain it, stop or disconnect it, then
    delete. Nothing it runs is taken from it or run a second time."""
    await context.store.delete_agent(agent_id, now=context.clock.now())
    await context.notifier.publish(TASKS_READY)
    return Response(status_code=204)


@router.post(
    "/{agent_id}/drain",
    response_model=AgentOut,
    summary="Drain an agent",
    responses=error_responses(404, 409),
)
async def drain_agent(agent_id: UUID, context: Context) -> AgentOut:
    """The agent gets no new tasks; the ones it runs finish and report as usual. Its status
    becomes `draining` and `drained` true until `POST /api/agents/{agent_id}/resume`, also
    when it reconnects meanwhile (to any node). **409** `agent_offline` if it is not
    connected."""
    return await _set_draining(context, agent_id, draining=True)


@router.post(
    "/{agent_id}/resume",
    response_model=AgentOut,
    summary="Resume a drained agent",
    responses=error_responses(404),
)
async def resume_agent(agent_id: UUID, context: Context) -> AgentOut:
    """Undo a drain: `drained` becomes false and the agent is `online` and gets tasks again
    (an offline agent: once it connects). Resuming an agent that is not drained changes
    nothing."""
    return await _set_draining(context, agent_id, draining=False)


@router.post(
    "/{agent_id}/disable",
    response_model=AgentOut,
    summary="Disable an agent",
    responses=error_responses(404),
)
async def disable_agent(agent_id: UUID, context: Context) -> AgentOut:
    """The agent is given no task from now on, connected or not (also after it reconnects),
    until `POST /api/agents/{agent_id}/enable`; what it runs finishes and reports as usual.
    Its `enabled` becomes false (as for an agent created with `"status": "disabled"`)."""
    return await _set_enabled(context, agent_id, enabled=False)


@router.post(
    "/{agent_id}/enable",
    response_model=AgentOut,
    summary="Enable an agent",
    responses=error_responses(404),
)
async def enable_agent(agent_id: UUID, context: Context) -> AgentOut:
    """Undo a disable: the agent is given tasks again once connected."""
    return await _set_enabled(context, agent_id, enabled=True)


async def _set_enabled(context: ServerContext, agent_id: UUID, *, enabled: bool) -> AgentOut:
    agent = await context.store.set_agent_enabled(agent_id, enabled, now=context.clock.now())
    # The node holding the agent's connection (if any) acts on it at once.
    await context.notifier.publish(AGENT_ENABLED_CHANGED, f"{agent.id}:{int(enabled)}")
    return AgentOut.of(agent)


async def _set_draining(context: ServerContext, agent_id: UUID, *, draining: bool) -> AgentOut:
    agent = await context.store.set_agent_draining(agent_id, draining, now=context.clock.now())
    if draining and agent.status is AgentStatus.OFFLINE:
        raise AgentOffline(
            f"agent {agent.name} is offline: only a connected agent can be drained",
            field="agent_id",
        )
    # The node holding the agent's connection (found through the notifier) acts on it.
    await context.notifier.publish(AGENT_DRAIN_CHANGED, f"{agent.id}:{int(draining)}")
    return AgentOut.of(agent)
