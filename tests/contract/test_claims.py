"""Contract: claiming pending tasks for agents."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hetuflow.models import (
    ClaimedTask,
    ClaimGroup,
    DispatchOutlook,
    NewTask,
    Priority,
    SlotOffer,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group


async def test_priority_first_then_oldest(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    plan = [
        ("old-normal", Priority.NORMAL, 0),
        ("new-critical", Priority.CRITICAL, 3),
        ("old-low", Priority.LOW, 0),
        ("new-high", Priority.HIGH, 2),
        ("old-high", Priority.HIGH, 1),
    ]
    for name, priority, age in plan:
        await store.create_tasks(
            [NewTask(name, "t", priority=priority)], now=T0 + timedelta(seconds=age)
        )
    now = T0 + timedelta(minutes=1)
    first = await store.claim_tasks([group([agent], free=3)], now=now)
    assert [d.task.name for d in first] == ["new-critical", "old-high", "new-high"]
    rest = await store.claim_tasks([group([agent], free=5)], now=now)
    assert [d.task.name for d in rest] == ["old-normal", "old-low"]
    assert await store.claim_tasks([group([agent], free=5)], now=now) == []


async def test_claim_marks_dispatched_and_records_the_attempt(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    await store.create_tasks([NewTask("n", "t")], now=T0)
    later = T0 + timedelta(seconds=5)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=later)
    assert dispatch.agent_id == agent.id
    assert dispatch.attempt == 1
    task = await store.get_task(dispatch.task.id)
    assert task is not None
    assert (task.status, task.agent_id, task.attempts) == (TaskStatus.DISPATCHED, agent.id, 1)
    assert task.updated_at == later
    assert dispatch.task == ClaimedTask(
        task.id,
        task.name,
        task.task_type,
        task.payload,
        task.priority,
        task.timeout_seconds,
        task.scheduled_at,
    )
    [attempt] = await store.list_attempts(dispatch.task.id)
    assert (attempt.number, attempt.agent_id, attempt.dispatched_at) == (1, agent.id, later)
    assert attempt.outcome is None
    assert attempt.finished_at is None
    assert (await store.get_agent(agent.id)).running == 1  # type: ignore[union-attr]


async def test_capabilities_and_task_types_must_match(store: Store, connect: ConnectAgent) -> None:
    chrome = await connect("chrome", capabilities=["chrome", "headless", "gpu"], task_types=["web"])
    plain = await connect("plain", capabilities=[], task_types=["web", "data"])
    await store.create_tasks(
        [
            NewTask("needs-chrome", "web", required_capabilities=("chrome", "headless")),
            NewTask("needs-nothing", "data"),
            NewTask("needs-tpu", "web", required_capabilities=("tpu",)),
            NewTask("other-type", "mail"),
        ],
        now=T0,
    )
    plain_group = group([plain], task_types=["web", "data"])
    got_plain = await store.claim_tasks([plain_group], now=T0)
    assert [d.task.name for d in got_plain] == ["needs-nothing"]
    chrome_group = group([chrome], task_types=["web"], capabilities=["chrome", "headless", "gpu"])
    got_chrome = await store.claim_tasks([chrome_group], now=T0)
    assert [d.task.name for d in got_chrome] == ["needs-chrome"]
    left = await store.claim_tasks([plain_group, chrome_group], now=T0)
    assert left == []


async def test_future_tasks_wait_unless_inside_until(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    soon, later = T0 + timedelta(seconds=2), T0 + timedelta(minutes=5)
    await store.create_tasks(
        [NewTask("soon", "t", scheduled_at=soon), NewTask("later", "t", scheduled_at=later)],
        now=T0,
    )
    assert await store.claim_tasks([group([agent])], now=T0) == []
    assert await store.dispatch_outlook(["t"], now=T0, until=T0) == DispatchOutlook(
        False, soon, None
    )
    within = T0 + timedelta(seconds=3)
    assert await store.dispatch_outlook(["t"], now=T0, until=within) == DispatchOutlook(
        True, later, None
    )
    assert not (await store.dispatch_outlook(["other"], now=T0, until=within)).due
    [ahead] = await store.claim_tasks([group([agent])], now=T0, until=within)
    assert ahead.task.name == "soon"
    assert ahead.task.scheduled_at == soon
    assert await store.dispatch_outlook(["t"], now=T0, until=T0) == DispatchOutlook(
        False, later, None
    )
    [due] = await store.claim_tasks([group([agent])], now=later)
    assert due.task.name == "later"
    assert await store.dispatch_outlook(["t"], now=T0, until=T0) == DispatchOutlook(
        False, None, None
    )


async def test_least_loaded_agent_first(store: Store, connect: ConnectAgent) -> None:
    busy = await connect("busy", slots=4)
    idle = await connect("idle", slots=4)
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(6)], now=T0)
    claim_group = ClaimGroup(
        frozenset({"t"}),
        frozenset(),
        (SlotOffer(busy.id, free_slots=2, running=2), SlotOffer(idle.id, free_slots=4, running=0)),
    )
    dispatches = await store.claim_tasks([claim_group], now=T0)
    assigned = [d.agent_id for d in dispatches]
    assert assigned == [idle.id, idle.id, busy.id, idle.id, busy.id, idle.id]


async def test_global_limit_counts_active_tasks(store: Store, connect: ConnectAgent) -> None:
    first = await connect("a1")
    second = await connect("a2", task_types=["u"])
    await store.create_tasks([NewTask(f"t{i}", "t") for i in range(4)], now=T0)
    await store.create_tasks([NewTask(f"u{i}", "u") for i in range(4)], now=T0)
    got = await store.claim_tasks([group([first], free=2)], now=T0, global_limit=3)
    assert len(got) == 2
    both = [group([first], free=5), group([second], free=5, task_types=["u"])]
    got = await store.claim_tasks(both, now=T0, global_limit=3)
    assert len(got) == 1
    assert await store.claim_tasks(both, now=T0, global_limit=3) == []
    got = await store.claim_tasks(both, now=T0, global_limit=5)
    assert [d.task.task_type for d in got] == ["t", "u"]


async def test_concurrent_claimers_never_share_a_task(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    agents = [await connect(f"a{i}", slots=100) for i in range(4)]
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(60)], now=T0)
    claimers = [store, *[await open_store() for _ in range(3)]]

    async def claim_until_empty(claimer: Store, index: int) -> list[str]:
        mine: list[str] = []
        while True:
            got = await claimer.claim_tasks([group([agents[index]], free=4)], now=T0)
            if not got:
                return mine
            mine.extend(str(d.task.id) for d in got)

    results = await asyncio.gather(*(claim_until_empty(c, i) for i, c in enumerate(claimers)))
    claimed = [task_id for batch in results for task_id in batch]
    assert len(claimed) == 60
    assert len(set(claimed)) == 60


async def test_concurrent_claimers_respect_the_global_limit(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    agents = [await connect(f"a{i}", slots=100) for i in range(4)]
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(40)], now=T0)
    claimers = [store, *[await open_store() for _ in range(3)]]
    results = await asyncio.gather(
        *(
            c.claim_tasks([group([agents[i]], free=5)], now=T0, global_limit=7)
            for i, c in enumerate(claimers)
        )
    )
    assert sum(len(batch) for batch in results) == 7
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 7
