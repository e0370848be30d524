"""Contract: disabling an agent, and pruning agents offline for too long (as tombstones)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from hetuflow.errors import AgentDeleted, AgentNotFound
from hetuflow.models import AgentRegistration, AgentStatus, NewAgent, NewTask, TaskStatus
from hetuflow.store.base import Store
from hetuflow.tokens import Role, new_token

from ._support import T0, ConnectAgent, group

DAY = timedelta(days=1)


async def test_an_agent_is_disabled_and_enabled_connected_or_not(
    store: Store, connect: ConnectAgent
) -> None:
    live = await connect("live")
    idle = await store.create_agent(NewAgent("idle"), now=T0)
    for agent in (live, idle):
        disabled = await store.set_agent_enabled(agent.id, False, now=T0)
        assert (disabled.id, disabled.enabled, disabled.status) == (
            agent.id,
            False,
            agent.status,
        )
    assert [a.enabled for a in await store.list_agents()] == [False, False]
    # A reconnect keeps the operator's choice.
    again = await connect("live")
    assert again.enabled is False
    assert (await store.set_agent_enabled(live.id, True, now=T0)).enabled is True
    with pytest.raises(AgentNotFound):
        await store.set_agent_enabled(uuid.UUID(int=0), True, now=T0)


async def test_agents_offline_past_the_cutoff_are_pruned_as_tombstones(
    store: Store, connect: ConnectAgent
) -> None:
    old = await connect("old")  # last heard at T0, then offline
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [held] = await store.claim_tasks([group([old], free=1)], now=T0)
    _, token = new_token("old", Role.AGENT, agent_id=old.id)
    await store.create_api_token(token, now=T0)
    assert await store.set_agent_status(old.id, AgentStatus.OFFLINE, session=old.session, now=T0)
    never = await store.create_agent(NewAgent("never-connected"), now=T0 - DAY)
    recent = await store.connect_agent(
        AgentRegistration((), ("t",), 1, name="recent"), node_id="n", now=T0 + 5 * DAY
    )
    assert await store.set_agent_status(
        recent.id, AgentStatus.OFFLINE, session=recent.session, now=T0 + 5 * DAY
    )
    online = await store.connect_agent(
        AgentRegistration((), ("t",), 1, name="online"), node_id="n", now=T0 - 3 * DAY
    )
    now = T0 + 8 * DAY
    cutoff = now - 7 * DAY  # T0 + 1 day

    pruned = await store.prune_agents(offline_before=cutoff, now=now, limit=100)
    # Oldest first, as they were; the connected one stays whatever its age.
    assert [(a.name, a.id) for a in pruned] == [("never-connected", never.id), ("old", old.id)]
    assert [a.name for a in await store.list_agents()] == ["online", "recent"]
    assert await store.find_api_token(token.secret_hash) is None
    task = await store.get_task(held.task.id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    # Its history stays: the attempt still names the pruned agent.
    [attempt] = await store.list_attempts(held.task.id)
    assert attempt.agent_id == old.id
    with pytest.raises(AgentDeleted):
        await store.connect_agent(
            AgentRegistration((), ("t",), 1, agent_id=old.id), node_id="n", now=now
        )
    assert await store.prune_agents(offline_before=cutoff, now=now, limit=100) == []
    assert online.status is AgentStatus.ONLINE


async def test_pruning_takes_at_most_limit_agents(store: Store) -> None:
    for index in range(3):
        await store.create_agent(NewAgent(f"a{index}"), now=T0 + index * timedelta(seconds=1))
    first = await store.prune_agents(offline_before=T0 + DAY, now=T0 + DAY, limit=2)
    assert [a.name for a in first] == ["a0", "a1"]
    rest = await store.prune_agents(offline_before=T0 + DAY, now=T0 + DAY, limit=2)
    assert [a.name for a in rest] == ["a2"]
