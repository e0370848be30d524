"""Contract: replaying a finished task, per-task-type statistics, pending groups."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from hetuflow.errors import TaskNotFinished, TaskNotFound
from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    NewTask,
    PendingGroup,
    Percentiles,
    Priority,
    RetryPolicy,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group


async def test_replay_copies_the_spec_of_a_finished_task_and_links_it(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    new = NewTask(
        name="n",
        task_type="t",
        payload={"k": [1, "two"]},
        priority=Priority.HIGH,
        required_capabilities=(),
        timeout_seconds=12.5,
        retry=RetryPolicy(max_retries=3, backoff_seconds=4),
        idempotency_key="once",
    )
    [(original, _)] = await store.create_tasks([new], now=T0)
    [dispatch] = await store.claim_tasks([group([agent])], now=T0)
    ref = AttemptRef(original.id, dispatch.attempt, agent.id)
    await store.finish_attempts([AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=T0)

    later = T0 + timedelta(minutes=5)
    replay = await store.replay_task(original.id, now=later)
    assert replay.id != original.id
    assert replay.replay_of == original.id
    assert replay.status is TaskStatus.PENDING
    assert (replay.created_at, replay.scheduled_at) == (later, later)
    assert replay.idempotency_key is None  # the key stays with the original
    for key in ("name", "task_type", "payload", "priority", "timeout_seconds", "retry"):
        assert getattr(replay, key) == getattr(original, key)
    assert await store.get_task(replay.id) == replay
    stored_original = await store.get_task(original.id)
    assert stored_original is not None
    assert stored_original.replay_of is None
    # a replay is claimable like any new task
    [again] = await store.claim_tasks([group([agent])], now=later)
    assert again.task.id == replay.id
    # the link outlives the original, which the cleanup loop may delete
    assert await store.delete_finished_tasks(finished_before=later, limit=10) == 1
    kept = await store.get_task(replay.id)
    assert kept is not None
    assert kept.replay_of == original.id


async def test_replay_refuses_unfinished_and_unknown_tasks(store: Store) -> None:
    [(pending, _)] = await store.create_tasks([NewTask("n", "t")], now=T0)
    with pytest.raises(TaskNotFinished):
        await store.replay_task(pending.id, now=T0)
    with pytest.raises(TaskNotFound):
        await store.replay_task(uuid.uuid4(), now=T0)
    cancelled = await store.cancel_task(pending.id, now=T0)
    assert (await store.replay_task(cancelled.id, now=T0)).replay_of == pending.id


async def test_task_type_stats_counts_and_percentiles(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", task_types=("t",))
    await store.create_tasks([NewTask("old", "t")], now=T0 - timedelta(hours=2))
    await store.cancel_task(
        (await store.create_tasks([NewTask("gone", "t")], now=T0 - timedelta(hours=2)))[0][0].id,
        now=T0,
    )
    created = await store.create_tasks([NewTask(f"t{i}", "t") for i in range(3)], now=T0)
    await store.create_tasks([NewTask("u", "u")], now=T0 + timedelta(seconds=1))
    # the two old ones are claimed too (oldest first), so take five and finish the new three
    dispatches = await store.claim_tasks([group([agent])], now=T0)
    by_id = {d.task.id: d for d in dispatches}
    waits, runs = [1, 2, 10], [5, 10, 20]
    for (task, _), wait, run in zip(created, waits, runs, strict=True):
        ref = AttemptRef(task.id, by_id[task.id].attempt, agent.id)
        started = T0 + timedelta(seconds=wait)
        assert await store.start_attempts([AttemptStart(ref, started)]) == [True]
        finished = started + timedelta(seconds=run)
        await store.finish_attempts(
            [AttemptResult(ref, AttemptOutcome.SUCCEEDED, finished_at=finished)], now=finished
        )

    stats = await store.task_type_stats(since=T0 - timedelta(minutes=1), limit=1000)
    assert [item.task_type for item in stats] == ["t", "u"]
    t, u = stats
    assert t.by_status == {TaskStatus.SUCCEEDED: 3}
    assert t.queue_wait == Percentiles(p50=2.0, p95=10.0)  # nearest rank of [1, 2, 10]
    assert t.run_time == Percentiles(p50=10.0, p95=20.0)  # of [5, 10, 20]
    assert u.by_status == {TaskStatus.PENDING: 1}
    assert u.queue_wait == Percentiles() == u.run_time

    # the newest `limit` tasks only
    newest = await store.task_type_stats(since=T0 - timedelta(days=1), limit=2)
    assert sum(sum(item.by_status.values()) for item in newest) == 2
    assert await store.task_type_stats(since=T0 + timedelta(hours=1), limit=10) == []


async def test_count_pending_groups(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", task_types=("busy",))
    await store.create_tasks(
        [
            NewTask("a", "t"),
            NewTask("b", "t"),
            NewTask("c", "t", required_capabilities=("gpu",)),
            NewTask("later", "t", scheduled_at=T0 + timedelta(hours=1)),
            NewTask("held", "busy"),
            NewTask("x", "other"),
        ],
        now=T0,
    )
    await store.claim_tasks([group([agent], task_types=("busy",))], now=T0)
    groups = await store.count_pending_groups(now=T0, limit=10)
    assert groups == [
        PendingGroup("t", (), 2),
        PendingGroup("other", (), 1),
        PendingGroup("t", ("gpu",), 1),
    ]
    assert await store.count_pending_groups(now=T0, limit=1) == [PendingGroup("t", (), 2)]
    # once due, the delayed task counts with its group
    assert (await store.count_pending_groups(now=T0 + timedelta(hours=2), limit=1)) == [
        PendingGroup("t", (), 3)
    ]


async def test_timeline_buckets_finished_tasks_with_their_percentiles(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(5)], now=T0)
    dispatches = await store.claim_tasks([group([agent], free=5)], now=T0)
    # Bucket 0 ([T0, T0+60s)): runs of 1, 2 and 10 s; bucket 2: one of 3 s; one task unfinished.
    plan = [(0, 1, AttemptOutcome.SUCCEEDED), (0, 2, AttemptOutcome.FAILED)]
    plan += [(0, 10, AttemptOutcome.SUCCEEDED), (2, 3, AttemptOutcome.SUCCEEDED)]
    for dispatch, (bucket, run, outcome) in zip(dispatches, plan, strict=False):
        started = T0 + timedelta(seconds=60 * bucket + 5)
        ref = AttemptRef(dispatch.task.id, dispatch.attempt, agent.id)
        result = AttemptResult(ref, outcome, started_at=started)
        await store.finish_attempts([result], now=started + timedelta(seconds=run))

    buckets = await store.task_timeline(since=T0, bucket_seconds=60, buckets=3, limit=1000)
    assert [bucket.index for bucket in buckets] == [0, 2]
    first, last = buckets
    assert first.by_status == {TaskStatus.SUCCEEDED: 2, TaskStatus.FAILED: 1}
    assert first.run_time == Percentiles(p50=2.0, p95=10.0)  # nearest rank
    assert first.queue_wait == Percentiles(p50=5.0, p95=5.0)  # due at T0, started T0+5s
    assert last.by_status == {TaskStatus.SUCCEEDED: 1}
    assert last.run_time == Percentiles(p50=3.0, p95=3.0)
    # a window that ends before the last bucket leaves its tasks out
    assert [
        b.index
        for b in await store.task_timeline(since=T0, bucket_seconds=60, buckets=2, limit=1000)
    ] == [0]
