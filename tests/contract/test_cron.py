"""Contract: cron jobs and ticks (each tick fires exactly once across nodes)."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from hetuflow.errors import CronJobNameTaken, CronJobNotFound
from hetuflow.models import (
    CronFire,
    CronJobChanges,
    MisfirePolicy,
    NewCronJob,
    NewTask,
    OverlapPolicy,
    Priority,
    RetryPolicy,
    TaskFilter,
    TickOutcome,
)
from hetuflow.store.base import Store

from ._support import T0, OpenStore

BACKUP = NewCronJob(
    name="daily-backup",
    cron_expression="0 2 * * *",
    task_type="backup",
    payload={"type": "full"},
    timezone="Asia/Shanghai",
    priority=Priority.HIGH,
    required_capabilities=("disk",),
    retry=RetryPolicy(max_retries=3),
    misfire_policy=MisfirePolicy.CATCH_UP,
    catch_up_limit=5,
    overlap_policy=OverlapPolicy.SKIP,
    start_deadline_seconds=60.0,
)


async def test_create_read_update_delete(store: Store) -> None:
    fire = T0 + timedelta(hours=1)
    job = await store.create_cron_job(BACKUP, next_fire_at=fire, now=T0)
    assert (job.name, job.payload, job.timezone, job.priority) == (
        "daily-backup",
        {"type": "full"},
        "Asia/Shanghai",
        Priority.HIGH,
    )
    assert job.required_capabilities == ("disk",)
    assert job.retry.max_retries == 3
    assert job.misfire_policy is MisfirePolicy.CATCH_UP
    assert job.catch_up_limit == 5
    assert job.overlap_policy is OverlapPolicy.SKIP
    assert job.start_deadline_seconds == 60.0
    assert job.next_fire_at == fire
    assert job.last_fire_at is None
    assert job.enabled
    assert await store.get_cron_job(job.id) == job
    with pytest.raises(CronJobNameTaken):
        await store.create_cron_job(BACKUP, next_fire_at=None, now=T0)
    other = await store.create_cron_job(
        NewCronJob("a-first", "* * * * *", "t"), next_fire_at=None, now=T0
    )
    assert [j.name for j in await store.list_cron_jobs()] == ["a-first", "daily-backup"]
    later = T0 + timedelta(minutes=5)
    changed = await store.update_cron_job(
        job.id,
        CronJobChanges(enabled=False, priority=Priority.LOW, retry=RetryPolicy(), payload={}),
        now=later,
    )
    assert not changed.enabled
    assert changed.priority is Priority.LOW
    assert changed.payload == {}
    assert changed.retry == RetryPolicy()
    assert changed.updated_at == later
    with pytest.raises(CronJobNameTaken):
        await store.update_cron_job(other.id, CronJobChanges(name="daily-backup"), now=later)
    with pytest.raises(CronJobNotFound):
        await store.update_cron_job(uuid.uuid4(), CronJobChanges(enabled=True), now=later)
    await store.delete_cron_job(job.id)
    assert await store.get_cron_job(job.id) is None
    with pytest.raises(CronJobNotFound):
        await store.delete_cron_job(job.id)


async def test_update_sets_only_the_fields_given_and_none_is_a_value(store: Store) -> None:
    limited = replace(BACKUP, timeout_seconds=30.0, concurrency_key="backups")
    job = await store.create_cron_job(limited, next_fire_at=T0 + timedelta(hours=1), now=T0)
    later = T0 + timedelta(minutes=5)
    changed = await store.update_cron_job(
        job.id, CronJobChanges(timeout_seconds=None, next_fire_at=None), now=later
    )
    assert changed == replace(job, timeout_seconds=None, next_fire_at=None, updated_at=later)
    assert changed.concurrency_key == "backups"
    touched = await store.update_cron_job(job.id, CronJobChanges(), now=later + timedelta(1))
    assert touched == replace(changed, updated_at=later + timedelta(1))


async def test_due_jobs_earliest_first_and_enabled_only(store: Store) -> None:
    for name, minutes, enabled in [("late", 9, True), ("early", 1, True), ("off", 0, False)]:
        job = NewCronJob(name, "* * * * *", "t", enabled=enabled)
        await store.create_cron_job(job, next_fire_at=T0 + timedelta(minutes=minutes), now=T0)
    await store.create_cron_job(NewCronJob("never", "* * * * *", "t"), next_fire_at=None, now=T0)
    due = await store.due_cron_jobs(until=T0 + timedelta(minutes=10), limit=10)
    assert [job.name for job in due] == ["early", "late"]
    assert [
        j.name for j in await store.due_cron_jobs(until=T0 + timedelta(minutes=5), limit=1)
    ] == ["early"]


async def test_a_tick_fires_exactly_once_under_concurrency(
    store: Store, open_store: OpenStore
) -> None:
    job = await store.create_cron_job(BACKUP, next_fire_at=T0, now=T0)
    stores = [store, *[await open_store() for _ in range(3)]]
    task = NewTask("daily-backup", "backup", cron_job_id=job.id, cron_tick_at=T0)
    nxt = T0 + timedelta(days=1)
    results = await asyncio.gather(
        *(
            s.fire_cron_tick(
                job.id,
                tick_at=T0,
                next_fire_at=nxt,
                task=task,
                outcome=TickOutcome.FIRED,
                reason=None,
                now=T0,
            )
            for s in stores * 2
        )
    )
    fired = [result for result in results if result is not None]
    assert len(fired) == 1
    assert fired[0].cron_job_id == job.id
    assert fired[0].cron_tick_at == T0
    tasks = await store.list_tasks(TaskFilter(cron_job_id=job.id), limit=10, offset=0)
    assert tasks.total == 1
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == nxt
    assert after.last_fire_at == T0
    assert after.last_task_id == fired[0].id
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert (tick.tick_at, tick.outcome, tick.task_id) == (T0, TickOutcome.FIRED, fired[0].id)


async def test_skipped_ticks_are_recorded_newest_first(store: Store) -> None:
    job = await store.create_cron_job(BACKUP, next_fire_at=T0, now=T0)
    for hours in range(3):
        tick = T0 + timedelta(hours=hours)
        result = await store.fire_cron_tick(
            job.id,
            tick_at=tick,
            next_fire_at=tick + timedelta(hours=1),
            task=None,
            outcome=TickOutcome.SKIPPED,
            reason="overlap",
            now=tick,
        )
        assert result is None
    ticks = await store.list_cron_ticks(job.id, limit=2)
    assert [t.tick_at for t in ticks] == [T0 + timedelta(hours=2), T0 + timedelta(hours=1)]
    assert ticks[0].reason == "overlap"
    assert ticks[0].task_id is None
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.last_fire_at is None
    assert after.next_fire_at == T0 + timedelta(hours=3)
    with pytest.raises(CronJobNotFound):
        await store.fire_cron_tick(
            uuid.uuid4(),
            tick_at=T0,
            next_fire_at=None,
            task=None,
            outcome=TickOutcome.SKIPPED,
            reason=None,
            now=T0,
        )


def _fire(job_id: uuid.UUID, tick: datetime, *, fired: bool = True) -> CronFire:
    task = NewTask("batch", "t", cron_job_id=job_id, cron_tick_at=tick, scheduled_at=tick)
    return CronFire(
        job_id,
        tick,
        next_fire_at=tick + timedelta(minutes=1),
        outcome=TickOutcome.FIRED if fired else TickOutcome.SKIPPED,
        task=task if fired else None,
        reason=None if fired else "overlap",
    )


async def test_many_ticks_settle_in_one_call(store: Store) -> None:
    jobs = [
        await store.create_cron_job(
            NewCronJob(f"job-{i}", "* * * * *", "t"), next_fire_at=T0, now=T0
        )
        for i in range(3)
    ]
    gone = uuid.uuid4()
    fires = [
        _fire(jobs[2].id, T0),
        _fire(gone, T0),
        _fire(jobs[0].id, T0, fired=False),
        _fire(jobs[1].id, T0),
    ]
    now = T0 - timedelta(seconds=2)
    results = await store.fire_cron_ticks(fires, now=now)
    assert [won for won, _ in results] == [True, False, True, True]
    assert results[1][1] is None
    assert results[2][1] is None
    for index in (0, 3):
        task = results[index][1]
        assert task is not None
        assert (task.cron_job_id, task.cron_tick_at, task.scheduled_at) == (
            fires[index].cron_job_id,
            T0,
            T0,
        )
    skipped = await store.get_cron_job(jobs[0].id)
    assert skipped is not None
    assert (skipped.next_fire_at, skipped.last_fire_at, skipped.last_task_id) == (
        T0 + timedelta(minutes=1),
        None,
        None,
    )
    [tick] = await store.list_cron_ticks(jobs[0].id, limit=5)
    assert (tick.outcome, tick.reason, tick.task_id, tick.recorded_at) == (
        TickOutcome.SKIPPED,
        "overlap",
        None,
        now,
    )
    for index in (2, 1):
        task = results[3 if index == 1 else 0][1]
        assert task is not None
        job = await store.get_cron_job(jobs[index].id)
        assert job is not None
        assert (job.next_fire_at, job.last_fire_at, job.last_task_id) == (
            T0 + timedelta(minutes=1),
            T0,
            task.id,
        )
        [tick] = await store.list_cron_ticks(jobs[index].id, limit=5)
        assert (tick.outcome, tick.task_id, tick.recorded_at) == (TickOutcome.FIRED, task.id, now)
    # The same ticks again: every one loses, nothing changes.
    assert await store.fire_cron_ticks(fires, now=T0) == [(False, None)] * 4
    assert (await store.list_tasks(TaskFilter(), limit=10, offset=0)).total == 2
    assert await store.fire_cron_ticks([], now=T0) == []


async def test_overlapping_batches_fire_each_tick_exactly_once(
    store: Store, open_store: OpenStore
) -> None:
    jobs = [
        await store.create_cron_job(
            NewCronJob(f"burst-{i:03}", "* * * * *", "t"), next_fire_at=T0, now=T0
        )
        for i in range(400)
    ]
    stores = [store, *[await open_store() for _ in range(3)]]
    batches = []
    for index, _ in enumerate(stores * 2):
        shuffled = [_fire(job.id, T0) for job in jobs]
        random.Random(index).shuffle(shuffled)
        batches.append(shuffled[index * 50 :] + shuffled[: index * 50])
    results = await asyncio.gather(
        *(s.fire_cron_ticks(batch, now=T0) for s, batch in zip(stores * 2, batches, strict=True))
    )
    winners: dict[uuid.UUID, uuid.UUID] = {}
    for batch, settled in zip(batches, results, strict=True):
        for fire, (won, task) in zip(batch, settled, strict=True):
            assert won == (task is not None)
            if task is not None:
                assert fire.cron_job_id not in winners
                winners[fire.cron_job_id] = task.id
    assert set(winners) == {job.id for job in jobs}
    tasks = await store.list_tasks(TaskFilter(), limit=1000, offset=0)
    assert sorted(task.id for task in tasks.items) == sorted(winners.values())
    for job in jobs:
        after = await store.get_cron_job(job.id)
        assert after is not None
        assert (after.next_fire_at, after.last_task_id) == (
            T0 + timedelta(minutes=1),
            winners[job.id],
        )
