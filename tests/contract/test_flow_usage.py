"""Contract: flow control in use, as the console and ``/metrics`` read it on every store:
each rate limit's window and the tasks it holds back, the busiest concurrency keys with
their active and waiting tasks, the aggregate over every key, and the task list filtered by
key or by rate limit."""

from __future__ import annotations

from datetime import timedelta

from hetuflow.models import (
    ConcurrencyKeyUsage,
    ConcurrencyLimits,
    NewTask,
    RateLimitUse,
    TaskFilter,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group

LIMITS = ConcurrencyLimits({"report": 2})


def keyed(name: str, key: str, task_type: str = "t", limit: int | None = None) -> NewTask:
    return NewTask(name, task_type, concurrency_key=key, max_concurrent_per_key=limit)


async def test_rate_limit_usage_shows_the_window_and_the_tasks_it_holds_back(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10)
    await store.create_rate_limit("crm-api", 2, 60, now=T0)
    await store.create_rate_limit("idle", 5, 1, now=T0)
    crm = (RateLimitUse("crm-api", 1),)
    await store.create_tasks([NewTask(f"c{i}", "t", rate_limits=crm) for i in range(5)], now=T0)
    later = NewTask("later", "t", rate_limits=crm, scheduled_at=T0 + timedelta(hours=1))
    await store.create_tasks([later], now=T0)

    before = {u.state.limit.name: u for u in await store.rate_limit_usage(now=T0)}
    assert list(before) == ["crm-api", "idle"]  # by name
    assert (before["crm-api"].state.used, before["crm-api"].waiting) == (0, 0)  # units left

    spent_at = T0 + timedelta(seconds=1)
    assert len(await store.claim_tasks([group([agent])], now=spent_at)) == 2
    now = T0 + timedelta(seconds=2)
    usage = {u.state.limit.name: u for u in await store.rate_limit_usage(now=now)}
    crm_usage = usage["crm-api"]
    assert crm_usage.state.limit.limit == 2
    assert crm_usage.state.limit.per_seconds == 60
    assert crm_usage.state.used == 2
    assert crm_usage.state.next_free_at == spent_at + timedelta(seconds=60)
    assert crm_usage.waiting == 3  # the due pending ones; "later" is not due
    assert (usage["idle"].state.used, usage["idle"].waiting) == (0, 0)
    assert usage["idle"].state.next_free_at is None
    # the window passes: the units are back, nothing waits
    free = {u.state.limit.name: u for u in await store.rate_limit_usage(now=T0 + timedelta(62))}
    assert (free["crm-api"].state.used, free["crm-api"].waiting) == (0, 0)

    page = await store.list_tasks(TaskFilter(rate_limit="crm-api"), limit=50)
    assert page.total == 6
    pending = TaskFilter(statuses=(TaskStatus.PENDING,), rate_limit="crm-api")
    assert (await store.list_tasks(pending, limit=50)).total == 4
    assert (await store.list_tasks(TaskFilter(rate_limit="idle"), limit=50)).total == 0


async def test_concurrency_keys_busiest_first_with_their_waiting_tasks(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=20, task_types=("t", "report"))
    await store.create_tasks(
        [
            *(keyed(f"hot{i}", "customer:1") for i in range(4)),  # limit 1: 1 active, 3 wait
            *(keyed(f"rep{i}", "customer:2", "report") for i in range(3)),  # type limit 2
            keyed("wide", "customer:3", limit=5),  # room left
            keyed("done", "tenant:9"),
            NewTask("plain", "t"),
            keyed("nobody", "queue:idle", task_type="other"),  # no agent runs it: no active
        ],
        now=T0,
    )
    claimed = await store.claim_tasks(
        [group([agent], task_types=("t", "report"))], now=T0, key_limits=LIMITS
    )
    assert len(claimed) == 6  # 1 + 2 + 1 + 1 + plain
    # a keyed task due later is pending but waits on its start time, not on its key
    await store.create_tasks(
        [NewTask("soon", "t", concurrency_key="customer:1", scheduled_at=T0 + timedelta(1))],
        now=T0,
    )
    now = T0 + timedelta(seconds=1)
    keys = await store.concurrency_key_usage(limits=LIMITS, now=now, limit=10)
    assert keys == [
        ConcurrencyKeyUsage("customer:2", active=2, limit=2, pending=1, waiting=1),
        ConcurrencyKeyUsage("customer:1", active=1, limit=1, pending=4, waiting=3),
        ConcurrencyKeyUsage("customer:3", active=1, limit=5, pending=0, waiting=0),
        ConcurrencyKeyUsage("tenant:9", active=1, limit=1, pending=0, waiting=0),
        ConcurrencyKeyUsage("queue:idle", active=0, limit=1, pending=1, waiting=0),
    ]
    assert [k.key for k in await store.concurrency_key_usage(limits=LIMITS, now=now, limit=2)] == [
        "customer:2",
        "customer:1",
    ]
    prefixed = await store.concurrency_key_usage(limits=LIMITS, now=now, prefix="cust", limit=10)
    assert [k.key for k in prefixed] == ["customer:2", "customer:1", "customer:3"]
    idle = await store.concurrency_key_usage(limits=LIMITS, now=now, prefix="queue:", limit=10)
    assert [k.key for k in idle] == ["queue:idle"]
    [one] = await store.concurrency_key_usage(limits=LIMITS, now=now, key="customer:1", limit=10)
    assert one.waiting == 3
    assert await store.concurrency_key_usage(limits=LIMITS, now=now, key="customer", limit=5) == []
    # without the [concurrency] limit of "report", its key holds 2 over a limit of 1
    [report] = await store.concurrency_key_usage(
        limits=ConcurrencyLimits(), now=now, key="customer:2", limit=5
    )
    assert (report.limit, report.waiting) == (1, 1)

    summary = await store.concurrency_summary(limits=LIMITS, now=now)
    assert summary.keys_active == 4
    assert summary.keys_at_limit == 3  # customer:1, customer:2, tenant:9
    assert dict(summary.waiting_by_task_type) == {"t": 3, "report": 1}

    page = await store.list_tasks(TaskFilter(concurrency_key="customer:1"), limit=50)
    assert page.total == 5
    waiting = TaskFilter(statuses=(TaskStatus.PENDING,), concurrency_key="customer:2")
    assert [t.name for t in (await store.list_tasks(waiting, limit=50)).items] == [
        next(f"rep{i}" for i in range(3) if f"rep{i}" not in {d.task.name for d in claimed})
    ]


async def test_nothing_in_use_reads_as_empty(store: Store) -> None:
    assert await store.rate_limit_usage(now=T0) == []
    assert await store.concurrency_key_usage(limits=LIMITS, now=T0, limit=10) == []
    summary = await store.concurrency_summary(limits=LIMITS, now=T0)
    assert (summary.keys_active, summary.keys_at_limit) == (0, 0)
    assert dict(summary.waiting_by_task_type) == {}


async def test_a_task_waits_on_a_limit_only_when_it_asks_more_than_is_left(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a", slots=10)
    await store.create_rate_limit("bulk", 3, 60, now=T0)
    two = (RateLimitUse("bulk", 2),)
    await store.create_tasks([NewTask("first", "t", rate_limits=two)], now=T0)
    assert len(await store.claim_tasks([group([agent])], now=T0)) == 1
    await store.create_tasks(
        [
            NewTask("too-big", "t", rate_limits=two),
            NewTask("fits", "t", rate_limits=(RateLimitUse("bulk", 1),)),
        ],
        now=T0,
    )
    [usage] = await store.rate_limit_usage(now=T0 + timedelta(seconds=1))
    assert (usage.state.used, usage.waiting) == (2, 1)  # 1 unit left: "fits" is not held
