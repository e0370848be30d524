"""Every path that ends a step settles its workflow in the same transaction (finish, cancel,
release of a lost agent's attempts, reaping), and on PostgreSQL every one of them takes the
workflow's row lock before any of its task rows (docs/workflows.md, Guarantees)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import Agent, AttemptOutcome, AttemptRef, AttemptResult, TaskStatus
from hetuflow.store.base import Store
from hetuflow.workflows import OnFailure, RunIf

from ._support import T0, ConnectAgent
from .test_workflows import claim, create, finish, reread, statuses, step

Lose = Callable[[Store, Agent], Awaitable[list[UUID]]]


async def _release(store: Store, agent: Agent) -> list[UUID]:
    return await store.release_agent(agent.id, now=T0)


async def _reap(store: Store, agent: Agent) -> list[UUID]:
    return await store.reap_agents(stale_before=T0 + timedelta(hours=1), now=T0)


@pytest.mark.parametrize("lose", [_release, _reap], ids=["released", "reaped"])
async def test_an_agent_lost_while_its_step_is_cancelling_settles_the_workflow(
    store: Store, connect: ConnectAgent, lose: Lose
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store,
        step("a"),
        step("b", "a"),
        step("c", "b"),
        step("alert", "a", run_if=RunIf.ANY_FAILED),
        on_failure=OnFailure.CONTINUE,
    )
    running = await claim(store, agent)
    assert (await store.cancel_task(running["a"].task.id, now=T0)).status is TaskStatus.CANCELLING
    returned = await lose(store, agent)
    after_workflow = await reread(store, workflow)
    after = statuses(after_workflow)
    assert after == {
        "a": TaskStatus.CANCELLED,
        "b": TaskStatus.SKIPPED,  # not left waiting forever
        "c": TaskStatus.SKIPPED,
        "alert": TaskStatus.PENDING,
    }
    if lose is _release:  # what it released is returned, so the caller wakes the dispatchers
        assert returned == [after_workflow.steps[3].task.id]
    else:
        assert returned == [agent.id]


async def test_an_agent_lost_mid_step_only_sends_the_step_back(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("a"), step("b", "a"))
    first = await claim(store, agent)
    await store.release_agent(agent.id, now=T0)
    assert statuses(await reread(store, workflow)) == {
        "a": TaskStatus.PENDING,
        "b": TaskStatus.WAITING,
    }
    again = await claim(store, agent)
    assert again["a"].attempt == first["a"].attempt + 1
    await finish(store, again["a"], result=1)
    assert set(await claim(store, agent)) == {"b"}


# --- PostgreSQL: one lock order (workflow row, then task rows in id order) ----------------


async def _blocked_on_a_lock(admin: asyncpg.Connection, others_than: int) -> bool:
    count = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1",
        others_than,
    )
    return bool(count)


async def _wait_until_blocked(admin: asyncpg.Connection, pid: int) -> None:
    deadline = time.monotonic() + 10
    while not await _blocked_on_a_lock(admin, pid):
        assert time.monotonic() < deadline, "the store call never waited for the workflow lock"
        await asyncio.sleep(0.01)


Ends = Callable[[Store, Agent, UUID, int], Coroutine[Any, Any, object]]


async def _finish(store: Store, agent: Agent, task_id: UUID, attempt: int) -> object:
    ref = AttemptRef(task_id, attempt, agent.id)
    return await store.finish_attempts([AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=T0)


async def _cancel(store: Store, agent: Agent, task_id: UUID, attempt: int) -> object:
    return await store.cancel_task(task_id, now=T0)


async def _release_cancelling(store: Store, agent: Agent, task_id: UUID, attempt: int) -> object:
    return await store.release_agent(agent.id, now=T0)  # the step is cancelling: it ends


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (_finish, (TaskStatus.SUCCEEDED, TaskStatus.PENDING)),
        (_cancel, (TaskStatus.CANCELLING, TaskStatus.WAITING)),
        (_release_cancelling, (TaskStatus.CANCELLED, TaskStatus.SKIPPED)),
    ],
    ids=["finish", "cancel", "release"],
)
async def test_ending_a_step_takes_the_workflow_lock_before_the_task_row(
    store: Store,
    connect: ConnectAgent,
    database: DatabaseConfig,
    end: Ends,
    expected: tuple[TaskStatus, TaskStatus],
) -> None:
    """A transaction holding the workflow row (as a cancel or another step's settle does)
    then touches the step's task row while the store ends that step: with the task row
    locked first and the workflow second, PostgreSQL detects a deadlock; with one order
    the store call waits, the other transaction goes on, and both commit."""
    if database.kind != "postgres":
        pytest.skip("SQLite has one writer: there are no row locks to order")
    agent = await connect("a1")
    workflow = await create(store, step("a"), step("b", "a"))
    running = await claim(store, agent)
    task_id, attempt = running["a"].task.id, running["a"].attempt
    if end is _release_cancelling:
        await store.cancel_task(task_id, now=T0)
    holder = await asyncpg.connect(database.dsn)
    admin = await asyncpg.connect(database.dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", workflow.id)
        call = asyncio.create_task(end(store, agent, task_id, attempt))
        await _wait_until_blocked(admin, admin.get_server_pid())
        await holder.execute("SET LOCAL lock_timeout = '3s'")
        await holder.execute("UPDATE tasks SET updated_at = updated_at WHERE id = $1", task_id)
        await transaction.commit()
        await asyncio.wait_for(call, 10)
    finally:
        await holder.close()
        await admin.close()
    after = statuses(await reread(store, workflow))
    assert (after["a"], after["b"]) == expected
