"""Contract: priority aging (docs/guarantees.md, "Ordering and aging").

Each priority level is worth ``[scheduler] priority_aging_seconds`` (default 60 s) of waiting:
a task that has been due that long ranks with one a level higher that was just created. So a
steady flow of urgent tasks cannot starve a ``low`` one, equal waits still go by priority, and
0 turns aging off (strict priority). Time is the ``now`` each call is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Literal

import pytest

from hetuflow.config import DEFAULT_PRIORITY_AGING_SECONDS, DatabaseConfig
from hetuflow.models import (
    Agent,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimRequest,
    Dispatch,
    NewTask,
    Priority,
    TaskFilter,
    TaskStatus,
)
from hetuflow.store import create_store
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group

ROUND = timedelta(seconds=5)
AGING = timedelta(seconds=DEFAULT_PRIORITY_AGING_SECONDS)

Path = Literal["create_then_claim", "create_and_claim"]


async def _round(
    store: Store, agent: Agent, path: Path, supply: list[NewTask], now: datetime
) -> list[Dispatch]:
    """One dispatch round with a single free slot, after ``supply`` arrived: by a create
    then a claim, or by one create that claims (the server's two ways)."""
    claim = [group([agent], free=1)]
    if path == "create_and_claim" and supply:
        _, dispatches = await store.create_and_claim_tasks(supply, ClaimRequest(claim), now=now)
    else:
        if supply:
            await store.create_tasks(supply, now=now)
        dispatches = await store.claim_tasks(claim, now=now)
    for dispatch in dispatches:  # the slot's task finishes within the round
        ref = AttemptRef(dispatch.task.id, dispatch.attempt, agent.id)
        await store.finish_attempts([AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=now)
    return dispatches


@pytest.mark.parametrize("supply", [Priority.HIGH, Priority.CRITICAL])
@pytest.mark.parametrize("path", ["create_then_claim", "create_and_claim"])
async def test_low_task_starts_under_steady_urgent_load(
    store: Store, connect: ConnectAgent, supply: Priority, path: Path
) -> None:
    """One slot, two fresh urgent tasks every round (a backlog that only grows): the low task
    waits while the urgent tasks that were due less than (levels apart) x 60 s after it run,
    then goes before every later one."""
    agent = await connect("a1", slots=1)
    await store.create_tasks([NewTask("low", "t", priority=Priority.LOW)], now=T0)
    bound = T0 + AGING * (supply.rank - Priority.LOW.rank)
    claimed_at: dict[str, datetime] = {}
    low_at: datetime | None = None
    for number in range(1, 120):
        now = T0 + ROUND * number
        fresh = [NewTask(f"{number}-{i}", "t", priority=supply) for i in range(2)]
        for dispatch in await _round(store, agent, path, fresh, now):
            claimed_at[dispatch.task.name] = now
            if dispatch.task.name == "low":
                low_at = now
        if low_at is not None:
            break
    assert low_at is not None, "the low task was starved"
    ahead = [name for name in claimed_at if name != "low"]
    # Priority still counts: the urgent tasks due within (levels apart) x 60 s of the low one
    # went first (two per round; the two due exactly at the bound tie with it, by id).
    rounds = (bound - T0) // ROUND
    assert 2 * rounds - 2 <= len(ahead) <= 2 * rounds
    assert low_at == T0 + ROUND * (len(ahead) + 1)  # one task per round, then the low one
    # Every task that went ahead was due no later than the bound; none due after it did.
    created = {
        task.name: task.created_at
        for task in (await store.list_tasks(TaskFilter(), limit=1000, offset=0)).items
    }
    assert all(created[name] <= bound for name in ahead)
    waiting = await store.list_tasks(
        TaskFilter(statuses=(TaskStatus.PENDING,)), limit=1000, offset=0
    )
    assert waiting.items
    assert all(task.created_at >= bound for task in waiting.items)


async def test_equal_waits_go_by_priority(store: Store, connect: ConnectAgent) -> None:
    """Waits count from when a task is due: created together, or due together, the higher
    priority goes first however long they all waited."""
    agent = await connect("a1")
    due = T0 + timedelta(hours=1)
    await store.create_tasks(
        [
            NewTask("scheduled-low", "t", priority=Priority.LOW, scheduled_at=due),
            NewTask("scheduled-critical", "t", priority=Priority.CRITICAL, scheduled_at=due),
        ],
        now=T0,
    )
    await store.create_tasks(
        [NewTask(p.value, "t", priority=p) for p in (Priority.LOW, Priority.HIGH)], now=due
    )
    await store.create_tasks([NewTask("normal", "t")], now=due)
    later = due + timedelta(hours=5)
    names = []
    for _ in range(5):
        [dispatch] = await store.claim_tasks([group([agent], free=1)], now=later)
        names.append(dispatch.task.name)
    # The two low tasks waited exactly as long (since ``due``): they tie, in either order.
    assert names[:3] == ["scheduled-critical", "high", "normal"]
    assert sorted(names[3:]) == ["low", "scheduled-low"]


@pytest.fixture
async def strict_store(database: DatabaseConfig) -> AsyncIterator[Store]:
    """A store on the test's database with aging off (``priority_aging_seconds = 0``)."""
    opened = create_store(database, priority_aging_seconds=0)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("path", ["create_then_claim", "create_and_claim"])
async def test_aging_off_is_strict_priority(
    strict_store: Store, connect: ConnectAgent, path: Path
) -> None:
    """With aging off, a low task waits as long as higher work keeps coming (30 days here),
    and runs once it stops."""
    agent = await connect("a1", slots=1)
    await strict_store.create_tasks([NewTask("low", "t", priority=Priority.LOW)], now=T0)
    now = T0
    for number in range(1, 31):
        now = T0 + timedelta(days=number)
        fresh = [NewTask(f"normal-{number}", "t")]
        [dispatch] = await _round(strict_store, agent, path, fresh, now)
        assert dispatch.task.name == f"normal-{number}"
    [dispatch] = await _round(strict_store, agent, path, [], now)
    assert dispatch.task.name == "low"
