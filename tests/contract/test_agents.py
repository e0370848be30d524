"""Contract: agents (create, connect, status fenced by session, heartbeats, reaping)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from hetuflow.errors import AgentNameTaken, AgentNotFound
from hetuflow.models import (
    AgentRegistration,
    AgentStatus,
    AttemptOutcome,
    NewAgent,
    NewTask,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group


async def test_create_and_read_agents(store: Store) -> None:
    agent = await store.create_agent(
        NewAgent("agent-1", capabilities=("chrome", "headless"), max_concurrent_tasks=3), now=T0
    )
    assert agent.status is AgentStatus.OFFLINE
    assert agent.running == 0
    assert agent.session == 0
    assert agent.capabilities == ("chrome", "headless")
    assert agent.created_at == T0
    assert await store.get_agent(agent.id) == agent
    assert await store.get_agent_by_name("agent-1") == agent
    assert await store.get_agent(uuid.uuid4()) is None
    with pytest.raises(AgentNameTaken):
        await store.create_agent(NewAgent("agent-1"), now=T0)
    await store.create_agent(NewAgent("a-0"), now=T0)
    assert [a.name for a in await store.list_agents()] == ["a-0", "agent-1"]
    assert await store.list_agents(statuses=[AgentStatus.ONLINE]) == []


async def test_connect_finds_by_id_then_name_else_creates(store: Store) -> None:
    made = await store.create_agent(NewAgent("agent-1"), now=T0)
    declared = AgentRegistration(("gpu",), ("train",), 4, name="agent-1")
    by_name = await store.connect_agent(declared, node_id="n1", now=T0)
    assert by_name.id == made.id
    assert by_name.session == 1
    assert (by_name.status, by_name.node_id, by_name.capabilities) == (
        AgentStatus.ONLINE,
        "n1",
        ("gpu",),
    )
    assert by_name.supported_task_types == ("train",)
    assert by_name.max_concurrent_tasks == 4
    assert by_name.connected_at == T0 == by_name.last_heartbeat_at
    by_id = await store.connect_agent(
        AgentRegistration((), ("t",), 1, agent_id=made.id), node_id="n2", now=T0
    )
    assert by_id.id == made.id
    assert by_id.session == 2
    assert by_id.node_id == "n2"
    fresh = await store.connect_agent(AgentRegistration((), ("t",), 1), node_id="n1", now=T0)
    assert fresh.id != made.id
    assert fresh.name
    assert fresh.session == 1
    with pytest.raises(AgentNotFound):
        await store.connect_agent(
            AgentRegistration((), (), 1, agent_id=uuid.uuid4()), node_id="n1", now=T0
        )


async def test_concurrent_connects_serialise(store: Store, open_store: OpenStore) -> None:
    stores = [store, await open_store(), await open_store()]
    registration = AgentRegistration((), ("t",), 1, name="racer")
    agents = await asyncio.gather(
        *(s.connect_agent(registration, node_id=f"n{i}", now=T0) for i, s in enumerate(stores * 2))
    )
    assert len({agent.id for agent in agents}) == 1
    assert sorted(agent.session for agent in agents) == [1, 2, 3, 4, 5, 6]


async def test_status_changes_are_fenced_by_session(store: Store, connect: ConnectAgent) -> None:
    old = await connect("a1")
    new = await connect("a1", node_id="node-b")
    assert new.session == old.session + 1
    assert not await store.set_agent_status(
        old.id, AgentStatus.OFFLINE, session=old.session, now=T0
    )
    assert (await store.get_agent(old.id)).status is AgentStatus.ONLINE  # type: ignore[union-attr]
    assert await store.set_agent_status(new.id, AgentStatus.DRAINING, session=new.session, now=T0)
    assert await store.set_agent_status(new.id, AgentStatus.OFFLINE, session=new.session, now=T0)
    assert not await store.set_agent_status(
        new.id, AgentStatus.OFFLINE, session=new.session, now=T0
    )
    offline = await store.get_agent(new.id)
    assert offline is not None
    assert offline.status is AgentStatus.OFFLINE
    assert offline.node_id is None
    # offline -> draining is not a legal move
    assert not await store.set_agent_status(
        new.id, AgentStatus.DRAINING, session=new.session, now=T0
    )


async def test_running_is_counted_from_active_tasks(store: Store, connect: ConnectAgent) -> None:
    first = await connect("a1")
    second = await connect("a2")
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(3)], now=T0)
    await store.claim_tasks([group([first], free=2), group([second], free=1)], now=T0)
    agents = {agent.name: agent.running for agent in await store.list_agents()}
    assert agents == {"a1": 2, "a2": 1}
    online = await store.list_agents(statuses=[AgentStatus.ONLINE, AgentStatus.DRAINING])
    assert len(online) == 2


async def test_heartbeats_and_reaping(store: Store, connect: ConnectAgent) -> None:
    quiet = await connect("quiet")
    alive = await connect("alive")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [held] = await store.claim_tasks([group([quiet], free=1)], now=T0)
    await store.record_heartbeats([alive.id], now=T0 + timedelta(seconds=30))
    beat = await store.get_agent(alive.id)
    assert beat is not None
    assert beat.last_heartbeat_at == T0 + timedelta(seconds=30)
    stale_before = T0 + timedelta(seconds=15)
    now = T0 + timedelta(seconds=31)
    assert await store.reap_agents(stale_before=stale_before, now=now) == [quiet.id]
    assert await store.reap_agents(stale_before=stale_before, now=now) == []
    reaped = await store.get_agent(quiet.id)
    assert reaped is not None
    assert reaped.status is AgentStatus.OFFLINE
    assert reaped.running == 0
    task = await store.get_task(held.task.id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    [attempt] = await store.list_attempts(held.task.id)
    assert attempt.outcome is AttemptOutcome.LOST


async def test_concurrent_reapers_get_each_agent_once(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    for i in range(6):
        await connect(f"a{i}")
    stores = [store, await open_store(), await open_store()]
    later = T0 + timedelta(minutes=1)
    results = await asyncio.gather(*(s.reap_agents(stale_before=later, now=later) for s in stores))
    reaped = [agent_id for batch in results for agent_id in batch]
    assert len(reaped) == 6
    assert len(set(reaped)) == 6


async def test_delete_agent_releases_its_tasks(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [held] = await store.claim_tasks([group([agent], free=1)], now=T0)
    await store.set_agent_status(agent.id, AgentStatus.OFFLINE, session=agent.session, now=T0)
    await store.delete_agent(agent.id, now=T0)
    assert await store.get_agent(agent.id) is None
    task = await store.get_task(held.task.id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    [attempt] = await store.list_attempts(held.task.id)
    assert attempt.outcome is AttemptOutcome.LOST
    with pytest.raises(AgentNotFound):
        await store.delete_agent(agent.id, now=T0)


async def test_release_agent_fenced_by_session_spares_a_newer_connection(
    store: Store, connect: ConnectAgent
) -> None:
    dropped = await connect("a1")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [dispatch] = await store.claim_tasks([group([dropped], free=1)], now=T0)
    # The agent reconnects on another node before the first node's grace release runs.
    again = await connect("a1", node_id="node-b")
    assert again.session > dropped.session
    assert await store.release_agent(dropped.id, now=T0, session=dropped.session) == []
    task = await store.get_task(dispatch.task.id)
    assert task is not None
    assert task.status is TaskStatus.DISPATCHED  # the newer connection keeps its attempt
    assert [a.outcome for a in await store.list_attempts(task.id)] == [None]
    assert await store.release_agent(uuid.uuid4(), now=T0, session=1) == []  # no such agent
    # The current session releases.
    assert await store.release_agent(again.id, now=T0, session=again.session) == [task.id]
    [lost] = await store.list_attempts(task.id)
    assert lost.outcome is AttemptOutcome.LOST


async def test_an_operator_drains_and_resumes_a_connected_agent_whatever_its_session(
    store: Store, connect: ConnectAgent
) -> None:
    first = await connect("a1")
    agent = await connect("a1", node_id="node-b")  # a newer session than the first
    assert agent.session > first.session
    drained = await store.set_agent_draining(agent.id, True, now=T0)
    assert drained.status is AgentStatus.DRAINING
    assert drained.session == agent.session  # the connection is not touched
    assert (await store.set_agent_draining(agent.id, True, now=T0)).status is AgentStatus.DRAINING
    assert [a.id for a in await store.list_agents(statuses=[AgentStatus.DRAINING])] == [agent.id]
    resumed = await store.set_agent_draining(agent.id, False, now=T0)
    assert resumed.status is AgentStatus.ONLINE
    assert (await store.set_agent_draining(agent.id, False, now=T0)).status is AgentStatus.ONLINE
    # An offline agent stays offline either way.
    assert await store.set_agent_status(
        agent.id, AgentStatus.OFFLINE, session=agent.session, now=T0
    )
    offline = await store.set_agent_draining(agent.id, True, now=T0)
    assert (offline.status, offline.drained) == (AgentStatus.OFFLINE, False)
    assert (await store.set_agent_draining(agent.id, False, now=T0)).status is AgentStatus.OFFLINE
    with pytest.raises(AgentNotFound):
        await store.set_agent_draining(uuid.uuid4(), True, now=T0)


async def test_a_drain_is_kept_until_resumed_whatever_the_connections(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    assert (await store.set_agent_draining(agent.id, True, now=T0)).drained
    again = await connect("a1", node_id="node-b")  # reconnects (by name) to another node
    assert (again.status, again.drained) == (AgentStatus.DRAINING, True)
    assert await store.set_agent_status(
        agent.id, AgentStatus.OFFLINE, session=again.session, now=T0
    )
    by_id = await store.connect_agent(
        AgentRegistration((), ("t",), 1, agent_id=agent.id), node_id="node-a", now=T0
    )
    assert (by_id.status, by_id.drained) == (AgentStatus.DRAINING, True)
    assert await store.set_agent_status(
        agent.id, AgentStatus.OFFLINE, session=by_id.session, now=T0
    )
    resumed = await store.set_agent_draining(agent.id, False, now=T0)  # offline: cleared
    assert (resumed.status, resumed.drained) == (AgentStatus.OFFLINE, False)
    back = await connect("a1")
    assert (back.status, back.drained) == (AgentStatus.ONLINE, False)
