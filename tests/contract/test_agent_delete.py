"""Contract: deleting an agent (refused while connected, a tombstone otherwise) and the
foreign-key failures of task writes mapped to what is missing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from hetuflow.errors import AgentDeleted, AgentNotFound, AgentOnline, CronJobNotFound
from hetuflow.models import (
    AgentRegistration,
    AgentStatus,
    AttemptOutcome,
    ClaimRequest,
    NewAgent,
    NewTask,
    TaskStatus,
)
from hetuflow.store.base import Store
from hetuflow.tokens import Role, new_token

from ._support import T0, ConnectAgent, OpenStore, group


def _by_id(agent_id: uuid.UUID) -> AgentRegistration:
    return AgentRegistration((), ("t",), 1, agent_id=agent_id)


async def test_a_connected_agent_is_not_deleted(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [claimed] = await store.claim_tasks([group([agent], free=1)], now=T0)
    with pytest.raises(AgentOnline, match="drain or disconnect it first"):
        await store.delete_agent(agent.id, now=T0)
    await store.set_agent_draining(agent.id, True, now=T0)
    with pytest.raises(AgentOnline):
        await store.delete_agent(agent.id, now=T0)
    # Nothing was taken from it.
    task = await store.get_task(claimed.task.id)
    assert task is not None
    assert (task.status, task.agent_id) == (TaskStatus.DISPATCHED, agent.id)
    found = await store.get_agent(agent.id)
    assert found is not None
    assert found.running == 1


async def test_an_offline_agent_is_deleted_as_a_tombstone(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    live = await connect("a2")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    [held] = await store.claim_tasks([group([agent], free=1)], now=T0)
    _, token = new_token("a1", Role.AGENT, agent_id=agent.id)
    await store.create_api_token(token, now=T0)
    # Offline without a release (as when the reaper of a dead node has not run yet).
    assert await store.set_agent_status(
        agent.id, AgentStatus.OFFLINE, session=agent.session, now=T0
    )
    await store.delete_agent(agent.id, now=T0)

    assert await store.get_agent(agent.id) is None
    assert await store.get_agent_by_name("a1") is None
    assert [a.name for a in await store.list_agents()] == ["a2"]
    assert (await store.stats()).agents_total == 1
    assert await store.find_api_token(token.secret_hash) is None
    task = await store.get_task(held.task.id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    [attempt] = await store.list_attempts(held.task.id)
    assert (attempt.outcome, attempt.agent_id) == (AttemptOutcome.LOST, agent.id)
    with pytest.raises(AgentNotFound):
        await store.delete_agent(agent.id, now=T0)
    # Coming back with the deleted id is refused; the name is free for a new agent.
    with pytest.raises(AgentDeleted):
        await store.connect_agent(_by_id(agent.id), node_id="node-a", now=T0)
    assert await store.get_agent(agent.id) is None
    again = await connect("a1")
    assert again.id != agent.id
    _, late = new_token("late", Role.AGENT, agent_id=agent.id)
    with pytest.raises(AgentNotFound):
        await store.create_api_token(late, now=T0)
    # A heartbeat flush names the deleted agent (a node holding it must drop it).
    assert await store.record_heartbeats([live.id, agent.id, live.id], now=T0) == [agent.id]
    assert await store.record_heartbeats([live.id], now=T0) == []
    assert await store.record_heartbeats([], now=T0) == []


async def test_a_connect_racing_a_delete_never_brings_the_agent_back(
    store: Store, open_store: OpenStore
) -> None:
    other = await open_store()
    outcomes: set[tuple[str, str]] = set()
    for round_number in range(12):
        agent = await store.create_agent(NewAgent(f"racer-{round_number}"), now=T0)
        deleted, connected = await asyncio.gather(
            store.delete_agent(agent.id, now=T0),
            other.connect_agent(_by_id(agent.id), node_id="node-b", now=T0),
            return_exceptions=True,
        )
        found = await store.get_agent(agent.id)
        if deleted is None:
            # The delete went first: the connect found the tombstone.
            assert isinstance(connected, AgentDeleted), connected
            assert found is None
            outcomes.add(("deleted", "refused"))
        else:
            assert isinstance(deleted, AgentOnline), deleted
            assert not isinstance(connected, BaseException), connected
            assert found is not None
            assert found.status is AgentStatus.ONLINE
            outcomes.add(("refused", "connected"))
    assert outcomes  # every round ended one of the two ways


# --- foreign keys of task writes -------------------------------------------------------------


async def test_a_claim_for_an_agent_with_no_row_is_agent_not_found(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    ghost = dataclasses.replace(agent, id=uuid.uuid4())
    [(stored_task, _)] = await store.create_tasks([NewTask("stored", "t")], now=T0)
    with pytest.raises(AgentNotFound) as raised:
        await store.claim_tasks([group([ghost], free=1)], now=T0)
    assert raised.value.field == "agent_id"
    with pytest.raises(AgentNotFound):
        await store.create_and_claim_tasks(
            [NewTask("fresh", "t")], ClaimRequest([group([ghost], free=2)]), now=T0
        )
    # Nothing was written; the store carries on.
    task = await store.get_task(stored_task.id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    [claimed] = await store.claim_tasks([group([agent], free=1)], now=T0)
    assert claimed.task.id == stored_task.id


async def test_a_task_naming_a_missing_cron_job_is_cron_job_not_found(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    missing = NewTask("n", "t", cron_job_id=uuid.uuid4())
    with pytest.raises(CronJobNotFound):
        await store.create_tasks([missing], now=T0)
    with pytest.raises(CronJobNotFound):
        await store.create_and_claim_tasks(
            [missing], ClaimRequest([group([agent], free=1)]), now=T0
        )
