"""Contract: creating tasks and claiming in one transaction (``create_and_claim_tasks``)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest

from hetuflow.errors import AgentNotFound
from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimRequest,
    NewTask,
    Priority,
    TaskStatus,
)
from hetuflow.store import postgres
from hetuflow.store._pg_db import CLAIM_LOCK
from hetuflow.store.base import Store
from hetuflow.store.postgres import PostgresStore

from ._support import T0, ConnectAgent, OpenStore, group, stored


async def test_new_tasks_are_inserted_dispatched_with_their_attempt(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=2)
    batch = [NewTask(f"n{i}", "t", payload={"i": i}) for i in range(3)]
    created, dispatches = await store.create_and_claim_tasks(
        batch, ClaimRequest([group([agent])]), now=T0
    )
    assert [new for _, new in created] == [True, True, True]
    assert len(dispatches) == 2
    by_id = {task.id: task for task, _ in created}
    for dispatch in dispatches:
        answered = by_id[dispatch.task.id]
        assert (answered.status, answered.agent_id, answered.attempts) == (
            TaskStatus.DISPATCHED,
            agent.id,
            1,
        )
        assert await store.get_task(dispatch.task.id) == answered
        assert dispatch.task.payload == answered.payload
        assert dispatch.attempt == 1
        [attempt] = await store.list_attempts(dispatch.task.id)
        assert (attempt.number, attempt.agent_id, attempt.dispatched_at) == (1, agent.id, T0)
    [left] = [task for task, _ in created if task.id not in {d.task.id for d in dispatches}]
    assert left.status is TaskStatus.PENDING
    assert (await store.get_agent(agent.id)).running == 2  # type: ignore[union-attr]
    # A task dispatched at creation finishes like any other.
    dispatch = dispatches[0]
    result = AttemptResult(AttemptRef(dispatch.task.id, 1, agent.id), AttemptOutcome.SUCCEEDED)
    [outcome] = await store.finish_attempts([result], now=T0)
    assert outcome.accepted
    assert (await stored(store, outcome)).status is TaskStatus.SUCCEEDED


async def test_claim_order_spans_stored_and_new_tasks(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", slots=3)
    await store.create_tasks(
        [NewTask("old-normal", "t"), NewTask("old-low", "t", priority=Priority.LOW)], now=T0
    )
    later = T0 + timedelta(seconds=1)
    created, dispatches = await store.create_and_claim_tasks(
        [
            NewTask("new-low", "t", priority=Priority.LOW),
            NewTask("new-normal", "t"),
            NewTask("new-critical", "t", priority=Priority.CRITICAL),
        ],
        ClaimRequest([group([agent])]),
        now=later,
    )
    # What a claim right after inserting them would take: priority, then the older first.
    assert [d.task.name for d in dispatches] == ["new-critical", "old-normal", "new-normal"]
    statuses = {task.name: task.status for task, _ in created}
    assert statuses == {
        "new-low": TaskStatus.PENDING,
        "new-normal": TaskStatus.DISPATCHED,
        "new-critical": TaskStatus.DISPATCHED,
    }
    rest = await store.claim_tasks([group([agent], free=5)], now=later)
    assert [d.task.name for d in rest] == ["old-low", "new-low"]


async def test_types_capabilities_schedule_and_keys_are_respected(
    store: Store, connect: ConnectAgent
) -> None:
    plain = await connect("plain", slots=10)
    gpu = await connect("gpu", capabilities=("gpu",), slots=10)
    soon, later = T0 + timedelta(seconds=1), T0 + timedelta(hours=1)
    created, dispatches = await store.create_and_claim_tasks(
        [
            NewTask("other-type", "u"),
            NewTask("needs-gpu", "t", required_capabilities=("gpu",)),
            NewTask("soon", "t", scheduled_at=soon),
            NewTask("later", "t", scheduled_at=later),
            NewTask("keyed", "t", idempotency_key="k1"),
            NewTask("plain", "t"),
        ],
        ClaimRequest(
            [group([plain]), group([gpu], capabilities=("gpu",))],
            until=T0 + timedelta(seconds=2),
        ),
        now=T0,
    )
    got = {d.task.name: d.agent_id for d in dispatches}
    assert got == {"needs-gpu": gpu.id, "soon": plain.id, "plain": plain.id}
    assert next(d for d in dispatches if d.task.name == "soon").task.scheduled_at == soon
    pending = {task.name for task, _ in created if task.status is TaskStatus.PENDING}
    assert pending == {"other-type", "later", "keyed"}
    # Each task went to one agent only.
    assert len({d.task.id for d in dispatches}) == len(dispatches)


async def test_the_global_limit_counts_new_and_stored_tasks(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=10)
    await store.create_and_claim_tasks(
        [NewTask("first", "t")], ClaimRequest([group([agent])], global_limit=3), now=T0
    )
    active = await store.get_agent(agent.id)
    assert active is not None
    assert active.running == 1
    _, dispatches = await store.create_and_claim_tasks(
        [NewTask(f"n{i}", "t") for i in range(5)],
        ClaimRequest([group([active])], global_limit=3),
        now=T0,
    )
    assert len(dispatches) == 2
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 3
    assert stats.tasks_by_status[TaskStatus.PENDING] == 3


async def test_the_global_limit_caps_a_claim_of_stored_tasks(
    store: Store, connect: ConnectAgent
) -> None:
    """More pending tasks and free slots than the limit leaves room for: the claim takes
    the first ones in claim order up to the limit, then none (PostgreSQL reads the count
    with the candidates)."""
    agent = await connect("a1", slots=10)
    for i in range(6):  # one a second: claimed in that order
        await store.create_tasks([NewTask(f"s{i}", "t")], now=T0 + timedelta(seconds=i))
    at = T0 + timedelta(minutes=1)
    [first] = await store.claim_tasks([group([agent], free=1)], now=at, global_limit=10)
    assert first.task.name == "s0"
    more = await store.claim_tasks([group([agent], free=9)], now=at, global_limit=3)
    assert sorted(d.task.name for d in more) == ["s1", "s2"]
    assert await store.claim_tasks([group([agent], free=7)], now=at, global_limit=3) == []
    _, dispatches = await store.create_and_claim_tasks(
        [NewTask("fresh", "t")], ClaimRequest([group([agent], free=7)], global_limit=4), now=at
    )
    assert [d.task.name for d in dispatches] == ["s3"]  # stored first, then the limit
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 4
    assert stats.tasks_by_status[TaskStatus.PENDING] == 3


async def test_without_a_free_slot_it_only_creates(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    created, dispatches = await store.create_and_claim_tasks(
        [NewTask("n", "t")], ClaimRequest([group([agent], free=0)]), now=T0
    )
    assert dispatches == []
    assert [task.status for task, _ in created] == [TaskStatus.PENDING]


async def test_a_limited_claim_that_fails_writes_nothing(
    store: Store, connect: ConnectAgent
) -> None:
    """Under the global limit (the claim lock held from the transaction's start on
    PostgreSQL) a claim that fails is undone whole, and the store carries on."""
    agent = await connect("a1")
    ghost = dataclasses.replace(agent, id=uuid.uuid4())
    [(waiting, _)] = await store.create_tasks([NewTask("stored", "t")], now=T0)
    with pytest.raises(AgentNotFound):
        await store.create_and_claim_tasks(
            [NewTask("fresh", "t")], ClaimRequest([group([ghost])], global_limit=10), now=T0
        )
    with pytest.raises(AgentNotFound):
        await store.claim_tasks([group([ghost])], now=T0, global_limit=10)
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.PENDING] == 1
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 0
    [claimed] = await store.claim_tasks([group([agent], free=1)], now=T0, global_limit=10)
    assert claimed.task.id == waiting.id
    _, dispatches = await store.create_and_claim_tasks(
        [NewTask("fresh", "t")], ClaimRequest([group([agent], free=1)], global_limit=10), now=T0
    )
    assert len(dispatches) == 1


def _count_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements asyncpg connections send from now on, one per round trip."""
    from asyncpg.connection import Connection

    sent: list[str] = []
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        original = getattr(Connection, name)

        def counting(self: Any, query: str, *args: Any, _original: Any = original) -> Any:
            sent.append(" ".join(query.split()))
            return _original(self, query, *args)

        monkeypatch.setattr(Connection, name, counting)
    return sent


async def test_on_postgres_new_tasks_placed_with_nothing_due_before_them_are_one_statement(
    store: Store, connect: ConnectAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stored task is due and the global limit has room: the create is one statement
    (``place_at_create``), its own transaction, where the claim takes four round trips."""
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL's round trips")
    agent = await connect("a1", slots=2)
    later = T0 + timedelta(hours=1)
    await store.create_tasks([NewTask("later", "t", scheduled_at=later)], now=T0)
    await store.create_tasks([NewTask("other type", "u")], now=T0)
    sent = _count_statements(monkeypatch)
    created, dispatches = await store.create_and_claim_tasks(
        [NewTask(f"n{i}", "t") for i in range(3)],
        ClaimRequest([group([agent])], global_limit=10),
        now=T0,
    )
    assert len(sent) == 1
    assert sent[0].startswith("WITH gate AS MATERIALIZED (SELECT hetuflow_place_at_create(")
    placed = {d.task.id for d in dispatches}
    assert len(placed) == 2  # equal claim keys: in id order
    for task, new in created:
        assert task.status is (TaskStatus.DISPATCHED if task.id in placed else TaskStatus.PENDING)
        assert new
        assert await store.get_task(task.id) == task
    assert [a.agent_id for a in await store.list_attempts(dispatches[0].task.id)] == [agent.id]
    assert (await store.get_agent(agent.id)).running == 2  # type: ignore[union-attr]


async def test_on_postgres_a_ghost_agent_fails_the_one_statement_and_writes_nothing(
    store: Store, connect: ConnectAgent
) -> None:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL's one-statement create")
    agent = await connect("a1")
    ghost = dataclasses.replace(agent, id=uuid.uuid4())
    with pytest.raises(AgentNotFound):
        await store.create_and_claim_tasks(
            [NewTask("fresh", "t")], ClaimRequest([group([ghost])], global_limit=10), now=T0
        )
    assert sum((await store.stats()).tasks_by_status.values()) == 0


async def test_a_limited_claim_on_postgres_begins_holding_the_claim_lock(
    store: Store, connect: ConnectAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored task is due: the one-statement create finds its gate closed (nothing
    written), and the whole claim follows; the next creates go to the claim at once."""
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL's round trips")
    agent = await connect("a1", slots=3)
    await store.create_tasks([NewTask("stored", "t")], now=T0 - timedelta(seconds=1))
    monkeypatch.setattr(postgres, "PLACE_BACKOFF_SECONDS", 60.0)  # however slow this machine
    sent = _count_statements(monkeypatch)
    _, dispatches = await store.create_and_claim_tasks(
        [NewTask("n", "t")], ClaimRequest([group([agent], free=1)], global_limit=10), now=T0
    )
    assert [d.task.name for d in dispatches] == ["stored"]  # claim order: the stored first
    assert sent[0].startswith("WITH gate AS MATERIALIZED")
    # BEGIN and the lock in one round trip; no second lock; the count with the candidates
    assert sent[1] == f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK})"
    assert not any(query.startswith("SELECT pg_advisory_xact_lock") for query in sent)
    assert sent[2].startswith("SELECT a.active, c.* FROM (SELECT count(*) AS active FROM tasks")
    assert len(sent) == 6  # then the stored task's dispatch, the INSERT and COMMIT
    assert sent[-1] == "COMMIT"
    sent.clear()
    _, dispatches = await store.create_and_claim_tasks(
        [NewTask("m", "t")],
        ClaimRequest([group([agent], free=1)], global_limit=10),
        now=T0 + timedelta(seconds=1),
    )
    assert [d.task.name for d in dispatches] == ["n"]
    assert len(sent) == 5  # the gate was closed a moment ago: straight to the claim
    assert sent[0] == f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK})"


async def test_concurrent_creates_on_several_nodes_respect_the_global_limit(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """Four nodes create at once with free slots and nothing stored: on PostgreSQL each
    tries the one statement, whose gate counts the active tasks after taking the claim lock,
    so the creates after the first find it closed and claim what room is left."""
    agents = [await connect(f"a{i}", slots=5) for i in range(4)]
    creators = [store, *[await open_store() for _ in range(3)]]
    results = await asyncio.gather(
        *(
            creator.create_and_claim_tasks(
                [NewTask(f"n{i}-{j}", "t") for j in range(5)],
                ClaimRequest([group([agents[i]])], global_limit=7),
                now=T0,
            )
            for i, creator in enumerate(creators)
        )
    )
    assert sum(len(dispatches) for _, dispatches in results) == 7
    stats = await store.stats()
    assert stats.tasks_by_status[TaskStatus.DISPATCHED] == 7
    assert stats.tasks_by_status[TaskStatus.PENDING] == 13
