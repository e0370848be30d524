"""Contract: a poison task (its attempt lost with its agent ``max_agent_crashes_per_task``
times) is quarantined by the release instead of going back to pending."""

from __future__ import annotations

from datetime import timedelta

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentRegistration, AttemptOutcome, NewTask, TaskStatus
from hetuflow.store import create_store
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group


async def test_the_third_agent_lost_with_a_task_quarantines_it(
    store: Store, connect: ConnectAgent
) -> None:
    [(task, _)] = await store.create_tasks([NewTask("poison", "t")], now=T0)
    for crash in (1, 2):
        agent = await connect(f"a{crash}")
        await store.claim_tasks([group([agent], free=1)], now=T0 + timedelta(hours=crash))
        assert await store.release_agent(agent.id, now=T0 + timedelta(hours=crash)) == [task.id]
        assert (await store.get_task(task.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
    third = await connect("a3")
    await store.claim_tasks([group([third], free=1)], now=T0 + timedelta(hours=3))
    end = T0 + timedelta(hours=3, seconds=1)
    assert await store.release_agent(third.id, now=end) == []  # not back to pending
    quarantined = await store.get_task(task.id)
    assert quarantined is not None
    assert quarantined.status is TaskStatus.QUARANTINED
    assert quarantined.error == "crashed 3 agents"
    assert quarantined.finished_at == end
    outcomes = [a.outcome for a in await store.list_attempts(task.id)]
    assert outcomes == [AttemptOutcome.LOST] * 3
    fourth = await connect("a4")
    assert await store.claim_tasks([group([fourth], free=1)], now=end) == []
    assert (await store.get_agent(third.id)).running == 0  # type: ignore[union-attr]


async def test_the_reaper_quarantines_too(store: Store, connect: ConnectAgent) -> None:
    [(task, _)] = await store.create_tasks([NewTask("poison", "t")], now=T0)
    for crash in (1, 2, 3):
        at = T0 + timedelta(hours=crash)
        agent = await connect(f"a{crash}")
        await store.claim_tasks([group([agent], free=1)], now=at)
        assert await store.reap_agents(stale_before=at + timedelta(days=1), now=at) == [agent.id]
    reaped = await store.get_task(task.id)
    assert reaped is not None
    assert (reaped.status, reaped.error) == (TaskStatus.QUARANTINED, "crashed 3 agents")


async def test_zero_never_quarantines(database: DatabaseConfig) -> None:
    store = create_store(database, max_agent_crashes_per_task=0)
    await store.open()
    try:
        [(task, _)] = await store.create_tasks([NewTask("poison", "t")], now=T0)
        for crash in range(1, 6):
            registration = AgentRegistration(
                capabilities=(),
                supported_task_types=("t",),
                max_concurrent_tasks=1,
                name=f"a{crash}",
            )
            agent = await store.connect_agent(registration, node_id="n", now=T0)
            await store.claim_tasks([group([agent], free=1)], now=T0 + timedelta(hours=crash))
            assert await store.release_agent(agent.id, now=T0) == [task.id]
    finally:
        await store.close()
