"""Contract: concurrency keys in the claim, on every store (docs/guarantees.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimRequest,
    ConcurrencyLimits,
    Dispatch,
    NewTask,
    Priority,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group


def keyed(
    name: str, key: str | None, limit: int | None = None, priority: Priority = Priority.NORMAL
) -> NewTask:
    return NewTask(name, "t", priority=priority, concurrency_key=key, max_concurrent_per_key=limit)


async def finish(store: Store, dispatch: Dispatch) -> None:
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)
    [outcome] = await store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=T0 + timedelta(minutes=1)
    )
    assert outcome.accepted


async def test_a_key_never_has_more_than_its_limit_active_and_a_finish_frees_a_slot(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10)
    await store.create_tasks([keyed(f"k{i}", "customer:42", 2) for i in range(5)], now=T0)
    first = await store.claim_tasks([group([agent], free=10)], now=T0)
    assert len(first) == 2
    assert await store.claim_tasks([group([agent], free=10)], now=T0) == []
    await finish(store, first[0])
    [third] = await store.claim_tasks([group([agent], free=10)], now=T0)
    assert third.task.name not in {d.task.name for d in first}
    assert await store.count_active_by_key(["customer:42", "other"]) == {"customer:42": 2}
    waiting = await store.list_keyed_tasks("customer:42", statuses=[TaskStatus.PENDING])
    assert len(waiting) == 2


async def test_a_full_key_does_not_hold_back_the_tasks_behind_it(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10)
    # the full key's tasks come first in claim order (high priority), unkeyed and other keys
    # after them
    await store.create_tasks(
        [keyed(f"hot{i}", "hot", 1, priority=Priority.HIGH) for i in range(6)], now=T0
    )
    await store.create_tasks(
        [keyed("plain", None), keyed("cold", "cold", 1), keyed("cold2", "cold", 1)], now=T0
    )
    got = await store.claim_tasks([group([agent], free=3)], now=T0)
    assert len(got) == 3
    assert got[0].task.name.startswith("hot")
    assert {d.task.name for d in got[1:]} <= {"plain", "cold", "cold2"}
    assert "plain" in {d.task.name for d in got}
    for key in ("hot", "cold"):
        assert await store.count_active_by_key([key]) == {key: 1}
        left = await store.list_keyed_tasks(key, statuses=[TaskStatus.PENDING])
        assert len(left) == (5 if key == "hot" else 1)


async def test_the_limit_comes_from_the_task_else_its_task_type_else_one(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10, task_types=["t", "report"])
    await store.create_tasks(
        [
            *(NewTask(f"r{i}", "report", concurrency_key="r") for i in range(4)),
            *(keyed(f"d{i}", "d") for i in range(3)),
            *(keyed(f"e{i}", "e", 3) for i in range(4)),
        ],
        now=T0,
    )
    limits = ConcurrencyLimits({"report": 2})
    got = await store.claim_tasks(
        [group([agent], free=10, task_types=["t", "report"])], now=T0, key_limits=limits
    )
    per_key = Counter(d.task.name[0] for d in got)
    assert per_key == {"r": 2, "d": 1, "e": 3}


async def test_keyed_tasks_of_a_batch_are_not_placed_past_their_limit(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10)
    await store.create_tasks([keyed("old", "k", 1)], now=T0)
    [held] = await store.claim_tasks([group([agent], free=1)], now=T0)
    created, dispatches = await store.create_and_claim_tasks(
        [keyed("new", "k", 1), keyed("free", None)],
        ClaimRequest([group([agent], free=5)]),
        now=T0,
    )
    assert [d.task.name for d in dispatches] == ["free"]
    assert [task.status for task, _ in created] == [TaskStatus.PENDING, TaskStatus.DISPATCHED]
    assert created[0][0].concurrency_key == "k"
    await finish(store, held)
    [then] = await store.claim_tasks([group([agent], free=5)], now=T0)
    assert then.task.name == "new"


async def test_claimers_racing_never_exceed_a_key_limit(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """Four store instances (on PostgreSQL: four nodes' pools) claim at once with room for
    every task, round after round, the round's tasks finishing in between: each round leaves
    every key with exactly its limit active, never more."""
    agents = [await connect(f"a{i}", slots=100) for i in range(4)]
    keys = [f"customer:{n}" for n in range(5)]
    await store.create_tasks([keyed(f"n{i}", keys[i % 5], 2) for i in range(60)], now=T0)
    claimers = [store, *[await open_store() for _ in range(3)]]
    finished = 0
    while finished < 60:
        rounds = await asyncio.gather(
            *(c.claim_tasks([group([agents[i]], free=10)], now=T0) for i, c in enumerate(claimers))
        )
        counts = await store.count_active_by_key(keys)
        assert counts == dict.fromkeys(keys, 2), counts
        for claimer, got in zip(claimers, rounds, strict=True):
            for dispatch in got:
                await finish(claimer, dispatch)
                finished += 1
    assert await store.count_active_by_key(keys) == {}


async def test_a_claim_reads_on_past_many_full_keys_to_the_first_task_of_each_free_one(
    store: Store, connect: ConnectAgent
) -> None:
    """Five layers of ten keys limited to 1 (a layer a second after the one before), then a
    key met only in the fourth layer and an unkeyed task last: the claim's first candidates
    fill every key, the next read goes on past them (not from the start again) and still
    finds the late key and the unkeyed task behind all of them."""
    agent = await connect("a", slots=20)
    for layer in range(5):
        tasks = [keyed(f"L{layer}-k{k}", f"k{k}", 1) for k in range(10)]
        if layer == 3:
            tasks.append(keyed("late", "late", 1))
        await store.create_tasks(tasks, now=T0 + timedelta(seconds=layer))
    await store.create_tasks([keyed("plain", None)], now=T0 + timedelta(seconds=9))
    got = await store.claim_tasks([group([agent], free=12)], now=T0 + timedelta(seconds=10))
    names = sorted(d.task.name for d in got)
    assert names == sorted([*(f"L0-k{k}" for k in range(10)), "late", "plain"])
    assert await store.claim_tasks([group([agent], free=8)], now=T0 + timedelta(seconds=10)) == []


async def test_a_key_met_late_with_room_for_several_gives_them_in_claim_order(
    store: Store, connect: ConnectAgent
) -> None:
    """A key limited to 1 fills the claim's first read; past it, a key limited to 4 is met
    for the first time, its tasks between unkeyed ones: the claim takes them in claim order,
    exactly as one read of every pending task would (on PostgreSQL the read past full keys
    takes so many tasks of each key at a time; where a key ends that read with room left,
    its next task may still come first)."""
    agent = await connect("a", slots=10)
    order = [
        *(keyed(f"f{i}", "f", 1) for i in range(4)),
        keyed("b0", "big", 4),
        keyed("u0", None),
        keyed("b1", "big", 4),
        keyed("b2", "big", 4),
        keyed("u1", None),
    ]
    for second, task in enumerate(order):  # one second apart: a strict claim order
        await store.create_tasks([task], now=T0 + timedelta(seconds=second))
    now = T0 + timedelta(seconds=20)
    got = await store.claim_tasks([group([agent], free=4)], now=now)
    assert [d.task.name for d in got] == ["f0", "b0", "u0", "b1"]
    then = await store.claim_tasks([group([agent], free=4)], now=now)
    assert [d.task.name for d in then] == ["b2", "u1"]


async def test_past_a_full_key_a_small_claim_among_many_keys_reads_on_in_claim_order(
    store: Store, connect: ConnectAgent
) -> None:
    """A full key first, then more keys than a small claim takes (on PostgreSQL this claim
    reads on in claim order instead of probing every key): the same tasks as any claim."""
    agent = await connect("a", slots=10)
    order = [
        *(keyed(f"hot{i}", "hot", 1) for i in range(3)),
        *(keyed(f"k{i}", f"key{i}", 1) for i in range(12)),
    ]
    for second, task in enumerate(order):
        await store.create_tasks([task], now=T0 + timedelta(seconds=second))
    now = T0 + timedelta(seconds=20)
    got = await store.claim_tasks([group([agent], free=3)], now=now)
    assert [d.task.name for d in got] == ["hot0", "k0", "k1"]
    then = await store.claim_tasks([group([agent], free=2)], now=now)
    assert [d.task.name for d in then] == ["k2", "k3"]
