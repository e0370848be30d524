"""Contract: named rate limits (docs/guarantees.md#rate-limits): a claim never dispatches more
units of a limit in any window of its ``per_seconds`` than its ``limit``, across store
instances racing; a limit without units is passed over, not waited on; unknown names and
impossible units are refused at create, nothing half-created."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from hetuflow.errors import RateLimitNameTaken, RateLimitNotFound, RateLimitUnknown
from hetuflow.models import ClaimRequest, NewTask, RateLimitUse, TaskFilter, TaskStatus
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group


def limited(name: str, *limits: tuple[str, int]) -> NewTask:
    return NewTask(name, "t", rate_limits=tuple(RateLimitUse(n, u) for n, u in limits))


async def _claim(store: Store, agent: object, at_seconds: float, free: int = 10) -> list[str]:
    dispatches = await store.claim_tasks(
        [group([agent], free=free)],  # type: ignore[list-item]
        now=T0 + timedelta(seconds=at_seconds),
    )
    return [d.task.name for d in dispatches]


async def test_create_list_and_delete_rate_limits(store: Store) -> None:
    made = await store.create_rate_limit("crm-api", 100, 60, now=T0)
    assert (made.name, made.limit, made.per_seconds, made.created_at) == ("crm-api", 100, 60, T0)
    await store.create_rate_limit("billing", 5, 1.5, now=T0)
    assert [r.name for r in await store.list_rate_limits()] == ["billing", "crm-api"]
    with pytest.raises(RateLimitNameTaken):
        await store.create_rate_limit("crm-api", 1, 1, now=T0)
    await store.delete_rate_limit("billing")
    with pytest.raises(RateLimitNotFound):
        await store.delete_rate_limit("billing")
    assert [r.name for r in await store.list_rate_limits()] == ["crm-api"]


async def test_an_unknown_name_or_impossible_units_create_nothing(store: Store) -> None:
    await store.create_rate_limit("crm-api", 3, 60, now=T0)
    for bad in (limited("x", ("nope", 1)), limited("y", ("crm-api", 4))):
        with pytest.raises(RateLimitUnknown) as error:
            await store.create_tasks([NewTask("fine", "t"), bad], now=T0)
        assert error.value.field == "rate_limits"
    page = await store.list_tasks(TaskFilter(), limit=10, offset=0)
    assert page.total == 0


async def test_the_claim_keeps_each_window_within_the_limit(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=100)
    await store.create_rate_limit("crm-api", 3, 60, now=T0)
    for i in range(6):  # created one second apart: claimed in that order
        at = T0 - timedelta(seconds=10 - i)
        [(task, _)] = await store.create_tasks([limited(f"n{i}", ("crm-api", 1))], now=at)
        assert task.rate_limits == (RateLimitUse("crm-api", 1),)
    assert await _claim(store, agent, 0, free=1) == ["n0"]
    assert await _claim(store, agent, 20, free=1) == ["n1"]
    assert await _claim(store, agent, 40) == ["n2"]  # the third unit of the window
    assert await _claim(store, agent, 59.9) == []
    state = (await store.rate_limit_states(["crm-api"], now=T0 + timedelta(seconds=59)))["crm-api"]
    assert (state.used, state.next_free_at) == (3, T0 + timedelta(seconds=60))
    at = T0 + timedelta(seconds=50)
    outlook = await store.dispatch_outlook(["t"], now=at, until=at)
    assert outlook.next_rate_limit_free_at == T0 + timedelta(seconds=60)
    assert await _claim(store, agent, 60) == ["n3"]  # the spend at 0 left the window
    assert await _claim(store, agent, 79) == []
    assert await _claim(store, agent, 80) == ["n4"]
    assert await _claim(store, agent, 100) == ["n5"]
    at = T0 + timedelta(seconds=100)
    assert (await store.dispatch_outlook(["t"], now=at, until=at)).next_rate_limit_free_at is None


async def test_a_limit_without_units_never_holds_back_the_tasks_behind_it(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=100)
    await store.create_rate_limit("slow", 2, 60, now=T0)
    await store.create_rate_limit("fast", 10, 60, now=T0)
    ordered = [
        limited("big", ("slow", 2), ("fast", 1)),
        limited("blocked", ("slow", 1)),
        NewTask("free", "t"),
        limited("both", ("fast", 1), ("slow", 1)),
        limited("other", ("fast", 1)),
    ]
    for i, new in enumerate(ordered):
        await store.create_tasks([new], now=T0 - timedelta(seconds=10 - i))
    assert await _claim(store, agent, 0) == ["big", "free", "other"]
    states = await store.rate_limit_states(["slow", "fast", "gone"], now=T0)
    assert (states["slow"].used, states["fast"].used) == (2, 2)
    assert "gone" not in states


async def test_deleting_a_limit_frees_its_tasks(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", slots=100)
    await store.create_rate_limit("crm-api", 1, 3600, now=T0)
    await store.create_tasks([limited(f"n{i}", ("crm-api", 1)) for i in range(3)], now=T0)
    first = await _claim(store, agent, 0)
    assert len(first) == 1
    assert await _claim(store, agent, 1) == []
    await store.delete_rate_limit("crm-api")
    assert sorted(first + await _claim(store, agent, 2)) == ["n0", "n1", "n2"]


async def test_a_rate_limited_task_is_not_dispatched_in_its_create(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=10)
    await store.create_rate_limit("crm-api", 1, 60, now=T0)
    batch = [limited("a", ("crm-api", 1)), limited("b", ("crm-api", 1)), NewTask("c", "t")]
    created, dispatches = await store.create_and_claim_tasks(
        batch, ClaimRequest([group([agent])]), now=T0
    )
    assert [d.task.name for d in dispatches] == ["c"]  # the others wait for the claim
    assert [t.status for t, _ in created] == [
        TaskStatus.PENDING,
        TaskStatus.PENDING,
        TaskStatus.DISPATCHED,
    ]
    assert len(await _claim(store, agent, 0)) == 1


async def test_an_idempotent_repeat_spends_once(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", slots=10)
    await store.create_rate_limit("crm-api", 2, 60, now=T0)
    again = NewTask("n", "t", idempotency_key="k", rate_limits=(RateLimitUse("crm-api", 1),))
    await store.create_tasks([again], now=T0)
    [(_, created)] = await store.create_tasks([again], now=T0)
    assert not created
    await store.create_tasks([limited("m", ("crm-api", 1))], now=T0)
    assert sorted(await _claim(store, agent, 0)) == ["m", "n"]


async def test_claimers_racing_never_exceed_a_rate_limit(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """Four store instances (on PostgreSQL: four nodes' pools) claim at once with room for
    every task, again and again as the window slides: no window of 10 s ever holds more
    than 5 dispatches, and every window that could be full is."""
    agents = [await connect(f"a{i}", slots=100) for i in range(4)]
    await store.create_rate_limit("crm-api", 5, 10, now=T0)
    await store.create_tasks([limited(f"n{i}", ("crm-api", 1)) for i in range(40)], now=T0)
    claimers = [store, *[await open_store() for _ in range(3)]]
    dispatched_at: list[float] = []
    for second in range(0, 80, 2):
        rounds = await asyncio.gather(
            *(_claim(c, agents[i], second, free=20) for i, c in enumerate(claimers))
        )
        dispatched_at.extend(second for got in rounds for _ in got)
    for start in range(0, 80):
        in_window = [at for at in dispatched_at if start <= at < start + 10]
        assert len(in_window) <= 5, (start, in_window)
    assert len(dispatched_at) == 40
    assert dispatched_at.count(0) == 5  # the first window filled at once


async def test_a_claim_behind_another_in_time_still_counts_every_spend_of_its_window(
    store: Store, connect: ConnectAgent
) -> None:
    """Two nodes' claims may commit in the other order than they read the clock (the later
    reading takes the lock first). The earlier one still counts every spend of its window,
    even after the later one, which read the limit and pruned its old spends, committed."""
    agent = await connect("a1", slots=100, task_types=["t", "u"])
    await store.create_rate_limit("x", 2, 1, now=T0)
    await store.create_rate_limit("y", 1, 100, now=T0)
    await store.create_tasks([NewTask("y0", "u", rate_limits=(RateLimitUse("y", 1),))], now=T0)
    assert [
        d.task.name for d in await store.claim_tasks([group([agent], task_types=["u"])], now=T0)
    ] == ["y0"]
    await store.create_tasks([limited("x1", ("x", 1)), limited("x2", ("x", 1))], now=T0)
    assert sorted(await _claim(store, agent, 0.6)) == ["x1", "x2"]  # x is full until 1.6
    both = NewTask("xy", "u", rate_limits=(RateLimitUse("x", 1), RateLimitUse("y", 1)))
    await store.create_tasks([both, limited("x3", ("x", 1)), limited("x4", ("x", 1))], now=T0)
    # at 1.7 a claim meets xy: it reads x (and drops spends that left its window), y holds it
    later = await store.claim_tasks(
        [group([agent], task_types=["u"])], now=T0 + timedelta(seconds=1.7)
    )
    assert later == []
    # a claim that read the clock at 1.5, committing after it: x1 and x2 are in its window
    assert await _claim(store, agent, 1.5) == []
    assert sorted(await _claim(store, agent, 1.6)) == ["x3", "x4"]
