"""Contract: creating, reading, listing, cancelling and cleaning up tasks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest

from hetuflow.errors import TaskAlreadyFinished, TaskNotFound
from hetuflow.models import (
    AgentStatus,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    LogLine,
    NewAgent,
    NewTask,
    Priority,
    RetryPolicy,
    TaskFilter,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group, stored


async def test_create_returns_the_stored_task(store: Store) -> None:
    new = NewTask(
        name="n",
        task_type="t",
        payload={"data": "test", "nested": [1, 2.5, None]},
        priority=Priority.HIGH,
        required_capabilities=("chrome", "headless"),
        timeout_seconds=30.0,
        retry=RetryPolicy(max_retries=2, backoff_seconds=5),
    )
    [(task, created)] = await store.create_tasks([new], now=T0)
    assert created
    assert task.status is TaskStatus.PENDING
    assert task.scheduled_at == T0 == task.created_at == task.updated_at
    assert task.attempts == 0
    assert task.agent_id is None
    assert task.retry == RetryPolicy(max_retries=2, backoff_seconds=5)
    fetched = await store.get_task(task.id)
    assert fetched == task
    assert fetched.payload == {"data": "test", "nested": [1, 2.5, None]}
    assert fetched.required_capabilities == ("chrome", "headless")
    assert fetched.priority is Priority.HIGH
    assert fetched.created_at.tzinfo is UTC
    assert await store.get_task(uuid.uuid4()) is None


async def test_timestamps_are_aware_utc_to_the_microsecond(store: Store) -> None:
    odd = T0.astimezone(ZoneInfo("Asia/Shanghai")) + timedelta(microseconds=123457)
    [(task, _)] = await store.create_tasks([NewTask("n", "t", scheduled_at=odd)], now=odd)
    fetched = await store.get_task(task.id)
    assert fetched is not None
    assert fetched.scheduled_at == odd
    assert fetched.scheduled_at.utcoffset() == timedelta(0)
    assert fetched.created_at.tzinfo is UTC
    assert fetched.scheduled_at.tzinfo is UTC


async def test_idempotency_key_returns_the_existing_task(store: Store) -> None:
    first = NewTask("a", "t", idempotency_key="k1")
    [(task, created)] = await store.create_tasks([first], now=T0)
    again = await store.create_tasks(
        [NewTask("b", "t", idempotency_key="k1"), NewTask("c", "t"), NewTask("d", "t")], now=T0
    )
    assert created
    assert again[0] == (task, False)
    assert [created for _, created in again] == [False, True, True]
    # the same key twice in one batch: one task
    pair = await store.create_tasks(
        [NewTask("x", "t", idempotency_key="k2"), NewTask("y", "t", idempotency_key="k2")], now=T0
    )
    assert pair[0][0].id == pair[1][0].id
    assert [c for _, c in pair] == [True, False]
    assert (await store.list_tasks(TaskFilter(), limit=10, offset=0)).total == 4


async def test_concurrent_creates_with_one_key_make_one_task(
    store: Store, open_store: OpenStore
) -> None:
    stores = [store, *[await open_store() for _ in range(3)]]
    results = await asyncio.gather(
        *(
            s.create_tasks([NewTask(f"n{i}", "t", idempotency_key="same")], now=T0)
            for i, s in enumerate(stores * 2)
        )
    )
    ids = {batch[0][0].id for batch in results}
    assert len(ids) == 1
    assert sum(batch[0][1] for batch in results) == 1


async def test_list_filters_order_and_total(store: Store, connect: ConnectAgent) -> None:
    for index in range(5):
        await store.create_tasks(
            [NewTask(f"job-{index}", "alpha" if index % 2 else "beta")],
            now=T0 + timedelta(seconds=index),
        )
    page = await store.list_tasks(TaskFilter(), limit=2, offset=1)
    assert page.total == 5
    assert (page.limit, page.offset) == (2, 1)
    assert [task.name for task in page.items] == ["job-3", "job-2"]
    alpha = await store.list_tasks(TaskFilter(task_type="alpha"), limit=10, offset=0)
    assert [task.name for task in alpha.items] == ["job-3", "job-1"]
    assert alpha.total == 2
    window = TaskFilter(
        created_after=T0 + timedelta(seconds=1), created_before=T0 + timedelta(seconds=4)
    )
    assert (await store.list_tasks(window, limit=10, offset=0)).total == 3  # [after, before)
    assert (await store.list_tasks(TaskFilter(text="B-4"), limit=10, offset=0)).total == 1
    assert (await store.list_tasks(TaskFilter(text="%"), limit=10, offset=0)).total == 0
    agent = await connect("a1", task_types=["alpha"])
    [dispatch] = await store.claim_tasks(
        [group([agent], free=1, task_types=["alpha"])], now=T0 + timedelta(seconds=9)
    )
    by_agent = await store.list_tasks(TaskFilter(agent_id=agent.id), limit=10, offset=0)
    assert [task.id for task in by_agent.items] == [dispatch.task.id]
    pending = TaskFilter(statuses=(TaskStatus.PENDING, TaskStatus.SUCCEEDED))
    assert (await store.list_tasks(pending, limit=10, offset=0)).total == 4


async def test_cancel_in_each_status(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    [(pending, _)] = await store.create_tasks([NewTask("p", "t")], now=T0)
    cancelled = await store.cancel_task(pending.id, now=T0 + timedelta(seconds=1))
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.finished_at == T0 + timedelta(seconds=1)
    with pytest.raises(TaskAlreadyFinished):
        await store.cancel_task(pending.id, now=T0)
    with pytest.raises(TaskNotFound):
        await store.cancel_task(uuid.uuid4(), now=T0)

    await store.create_tasks([NewTask("d", "t")], now=T0)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
    cancelling = await store.cancel_task(dispatch.task.id, now=T0)
    assert cancelling.status is TaskStatus.CANCELLING
    assert (await store.cancel_task(dispatch.task.id, now=T0)).status is TaskStatus.CANCELLING
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, agent.id)
    [outcome] = await store.finish_attempts([AttemptResult(ref, AttemptOutcome.CANCELLED)], now=T0)
    assert outcome.accepted
    outcome_task = await stored(store, outcome)
    assert outcome_task.status is TaskStatus.CANCELLED

    await store.create_tasks([NewTask("r", "t")], now=T0)
    [running] = await store.claim_tasks([group([agent], free=1)], now=T0)
    assert await store.start_attempts(
        [AttemptStart(AttemptRef(running.task.id, 1, agent.id), T0)]
    ) == [True]
    assert (await store.cancel_task(running.task.id, now=T0)).status is TaskStatus.CANCELLING
    # any outcome while cancelling ends cancelled
    [done] = await store.finish_attempts(
        [AttemptResult(AttemptRef(running.task.id, 1, agent.id), AttemptOutcome.SUCCEEDED)],
        now=T0,
    )
    done_task = await stored(store, done)
    assert done_task.status is TaskStatus.CANCELLED


async def test_delete_finished_tasks_in_batches(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    created = await store.create_tasks([NewTask(f"n{i}", "t") for i in range(5)], now=T0)
    for task, _ in created[:3]:
        await store.cancel_task(task.id, now=T0 + timedelta(minutes=1))
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
    await store.append_logs([LogLine(dispatch.task.id, 1, "stdout", "hello", T0)])
    cutoff = T0 + timedelta(minutes=2)
    assert await store.delete_finished_tasks(finished_before=cutoff, limit=2) == 2
    assert await store.delete_finished_tasks(finished_before=cutoff, limit=2) == 1
    assert await store.delete_finished_tasks(finished_before=cutoff, limit=2) == 0
    remaining = await store.list_tasks(TaskFilter(), limit=10, offset=0)
    assert {task.status for task in remaining.items} == {TaskStatus.PENDING, TaskStatus.DISPATCHED}
    # an old finished task with attempts and logs goes with them
    ref = AttemptRef(dispatch.task.id, 1, agent.id)
    await store.finish_attempts([AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=T0)
    assert await store.delete_finished_tasks(finished_before=cutoff, limit=10) == 1
    assert await store.list_attempts(dispatch.task.id) == []
    assert await store.list_logs(dispatch.task.id) == []
    # not yet old enough
    assert await store.delete_finished_tasks(finished_before=T0, limit=10) == 0


async def test_stats_and_counts(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    await connect("a2")
    created = await store.create_tasks(
        [NewTask("a", "t"), NewTask("b", "t"), NewTask("c", "u")], now=T0
    )
    await store.cancel_task(created[0][0].id, now=T0 + timedelta(seconds=61))
    await store.claim_tasks([group([agent], free=1)], now=T0)
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.PENDING] == 1
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 1
    assert stats.tasks_by_status[TaskStatus.CANCELLED] == 1
    assert stats.tasks_by_status[TaskStatus.FAILED] == 0
    assert (stats.agents_online, stats.agents_total, stats.cron_jobs_enabled) == (2, 2, 0)
    counts = await store.count_tasks_by_type(statuses=[TaskStatus.PENDING, TaskStatus.DISPATCHED])
    assert counts == {"t": 1, "u": 1}
    finished = await store.count_finished_tasks(since=T0, until=T0 + timedelta(hours=1))
    assert finished == [(T0 + timedelta(minutes=1), TaskStatus.CANCELLED, 1)]
    assert finished[0][0].tzinfo is UTC
    assert await store.count_finished_tasks(since=T0, until=T0 + timedelta(seconds=60)) == []


async def test_get_task_and_agents_reads_the_agents_only_for_a_due_pending_task(
    store: Store, connect: ConnectAgent
) -> None:
    online = await connect("a1", task_types=("t",))
    await store.create_agent(NewAgent("offline-one"), now=T0)
    later = T0 + timedelta(hours=1)
    [(due, _), (scheduled, _)] = await store.create_tasks(
        [NewTask("due", "t"), NewTask("later", "t", scheduled_at=later)], now=T0
    )
    task, agents = await store.get_task_and_agents(due.id, now=T0)
    assert task == await store.get_task(due.id)
    assert agents == await store.list_agents(statuses=[AgentStatus.ONLINE])
    assert [agent.id for agent in agents or []] == [online.id]
    assert await store.get_task_and_agents(scheduled.id, now=T0) == (scheduled, None)
    # due by then: the agents again
    assert (await store.get_task_and_agents(scheduled.id, now=later))[1] is not None
    assert await store.get_task_and_agents(uuid.uuid4(), now=T0) == (None, None)
    cancelled = await store.cancel_task(due.id, now=T0)
    assert await store.get_task_and_agents(due.id, now=T0) == (cancelled, None)
