"""CronService against real stores (SQLite and PostgreSQL) with a frozen clock.

``fire_due()`` is one pass of the service's loop: the tests move the clock and call it, so
nothing sleeps. One test runs the real loop (``run``) with the system clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hetuflow.clock import FrozenClock, SystemClock
from hetuflow.config import Config, DatabaseConfig, SchedulerConfig
from hetuflow.cron import parse
from hetuflow.models import (
    AgentRegistration,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimGroup,
    CronJob,
    CronJobChanges,
    MisfirePolicy,
    NewCronJob,
    OverlapPolicy,
    SlotOffer,
    Task,
    TaskFilter,
    TaskStatus,
    TickOutcome,
)
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_service import BATCH, MAX_SLEEP, CronService
from hetuflow.store import create_store
from hetuflow.store.base import CRON_CHANGED, TASK_CANCEL, TASKS_READY, Store
from hetuflow.store.notify_local import LocalNotifier

T0 = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)


def make_service(
    store: Store, clock: FrozenClock | SystemClock, *, node: str = "node-a", lookahead: float = 2.0
) -> CronService:
    config = Config(scheduler=SchedulerConfig(dispatch_lookahead_seconds=lookahead))
    context = ServerContext(
        config=config, store=store, notifier=LocalNotifier(), clock=clock, node_id=node
    )
    return CronService(context)


async def add_job(
    store: Store,
    clock: FrozenClock,
    expression: str = "* * * * *",
    *,
    name: str | None = None,
    **fields: Any,
) -> CronJob:
    job = NewCronJob(
        name=name or f"job-{expression}", cron_expression=expression, task_type="t", **fields
    )
    first = parse(expression, job.timezone).next_after(clock.now())
    return await store.create_cron_job(job, next_fire_at=first, now=clock.now())


async def tasks_of(store: Store, job: CronJob) -> list[Task]:
    page = await store.list_tasks(TaskFilter(cron_job_id=job.id), limit=1000, offset=0)
    return sorted(page.items, key=lambda task: task.cron_tick_at or task.created_at)


def at(hour: int, minute: int, second: float = 0) -> datetime:
    return datetime(2024, 5, 1, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


# --- firing ahead, exactly once -----------------------------------------------------------


async def test_fires_one_lookahead_before_the_tick_and_never_starts_early(store: Store) -> None:
    clock = FrozenClock(T0)
    service = make_service(store, clock)
    job = await add_job(store, clock, payload={"k": 1})
    assert job.next_fire_at == at(10, 1)

    clock.set(at(10, 0, 57.5))  # 2.5 s before the tick: too early
    wake_at = await service.fire_due()
    assert await tasks_of(store, job) == []
    assert wake_at == at(10, 0, 58)

    clock.set(at(10, 0, 58))  # one lookahead before
    wake_at = await service.fire_due()
    [task] = await tasks_of(store, job)
    assert task.scheduled_at == at(10, 1)  # the agent starts it at the tick, not before
    assert task.cron_tick_at == at(10, 1)
    assert task.cron_job_id == job.id
    assert task.payload == {"k": 1}
    assert task.status is TaskStatus.PENDING
    assert wake_at == at(10, 0, 58) + MAX_SLEEP  # next tick is further: re-check anyway

    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == at(10, 2)
    assert after.last_fire_at == at(10, 1)
    assert after.last_task_id == task.id
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert (tick.tick_at, tick.outcome, tick.task_id) == (at(10, 1), TickOutcome.FIRED, task.id)

    # Asking again changes nothing: the tick is settled.
    await service.fire_due()
    assert len(await tasks_of(store, job)) == 1


async def test_publishes_tasks_ready_after_firing(store: Store) -> None:
    clock = FrozenClock(at(10, 0, 58))
    service = make_service(store, clock)
    seen: list[str] = []
    service.context.notifier.subscribe(TASKS_READY, lambda payload: seen.append(payload))
    await add_job(store, FrozenClock(T0))
    await service.fire_due()
    assert seen == [""]


async def test_per_second_job_fires_every_tick_in_the_lookahead(store: Store) -> None:
    clock = FrozenClock(at(10, 0, 0.4))
    service = make_service(store, clock)
    job = await add_job(store, clock, "* * * * * *")
    await service.fire_due()
    assert [task.scheduled_at for task in await tasks_of(store, job)] == [
        at(10, 0, 1),
        at(10, 0, 2),
    ]
    clock.advance(1.0)
    await service.fire_due()
    assert [task.scheduled_at for task in await tasks_of(store, job)] == [
        at(10, 0, 1),
        at(10, 0, 2),
        at(10, 0, 3),
    ]


async def test_two_services_fire_each_tick_once(store: Store) -> None:
    clock = FrozenClock(at(10, 0, 0.5))
    first = make_service(store, clock, node="node-a")
    second = make_service(store, clock, node="node-b")
    jobs = []
    for index in range(5):
        new = NewCronJob(name=f"every-second-{index}", cron_expression="* * * * * *", task_type="t")
        jobs.append(
            await store.create_cron_job(
                new, next_fire_at=parse("* * * * * *").next_after(clock.now()), now=clock.now()
            )
        )
    for _ in range(5):
        await asyncio.gather(first.fire_due(), second.fire_due())
        clock.advance(1.0)
    for job in jobs:
        ticks = [task.cron_tick_at for task in await tasks_of(store, job)]
        assert ticks == [at(10, 0, second) for second in range(1, 7)]


@pytest.mark.postgres
async def test_two_nodes_on_one_postgres_fire_each_tick_once(pg_database: DatabaseConfig) -> None:
    stores = [create_store(pg_database), create_store(pg_database)]
    for opened in stores:
        await opened.open()
    try:
        clock = FrozenClock(at(10, 0, 0.5))
        services = [
            make_service(opened, clock, node=f"node-{i}") for i, opened in enumerate(stores)
        ]
        jobs = [
            await stores[0].create_cron_job(
                NewCronJob(name=f"job-{index}", cron_expression="* * * * * *", task_type="t"),
                next_fire_at=parse("* * * * * *").next_after(clock.now()),
                now=clock.now(),
            )
            for index in range(20)
        ]
        for _ in range(5):
            await asyncio.gather(*(service.fire_due() for service in services))
            clock.advance(1.0)
        for job in jobs:
            ticks = [task.cron_tick_at for task in await tasks_of(stores[0], job)]
            assert ticks == [at(10, 0, second) for second in range(1, 7)]
    finally:
        for opened in stores:
            await opened.close()


async def test_a_burst_of_jobs_due_in_one_second_fires_ahead_once_each(store: Store) -> None:
    clock = FrozenClock(at(10, 0, 0.5))
    nodes = [make_service(store, clock, node="node-a"), make_service(store, clock, node="node-b")]
    tick = at(10, 0, 2)
    count = 2 * BATCH + 50  # more than one batch per pass
    for index in range(count):
        new = NewCronJob(name=f"burst-{index:04}", cron_expression="2 * * * * *", task_type="t")
        await store.create_cron_job(new, next_fire_at=tick, now=clock.now())
    await asyncio.gather(*(node.fire_due() for node in nodes))
    page = await store.list_tasks(TaskFilter(), limit=10 * count, offset=0)
    assert page.total == count
    assert {(task.cron_tick_at, task.scheduled_at) for task in page.items} == {(tick, tick)}
    assert len({task.cron_job_id for task in page.items}) == count
    fires = [
        node.context.metrics.registry.get_sample_value("hetuflow_cron_fires_total") or 0.0
        for node in nodes
    ]
    assert sum(fires) == count
    submitted = [
        node.context.metrics.registry.get_sample_value(
            "hetuflow_tasks_submitted_total", {"task_type": "t"}
        )
        or 0.0
        for node in nodes
    ]
    assert sum(submitted) == count  # cron-created tasks count as submitted, once each
    for job in await store.list_cron_jobs():
        assert job.next_fire_at == at(10, 1, 2)
        [recorded] = await store.list_cron_ticks(job.id, limit=5)
        assert recorded.outcome is TickOutcome.FIRED


async def test_a_job_pointing_at_an_already_recorded_tick_moves_on(store: Store) -> None:
    clock = FrozenClock(at(10, 0, 0.5))
    service = make_service(store, clock)
    job = await add_job(store, clock, "* * * * * *")
    await service.fire_due()  # fires 10:00:01 and 10:00:02 ahead
    await store.update_cron_job(job.id, CronJobChanges(next_fire_at=at(10, 0, 1)), now=clock.now())
    clock.advance(1.0)
    await service.fire_due()
    ticks = [task.cron_tick_at for task in await tasks_of(store, job)]
    assert ticks == [at(10, 0, 1), at(10, 0, 2), at(10, 0, 3)]
    current = await store.get_cron_job(job.id)
    assert current is not None
    assert current.next_fire_at == at(10, 0, 4)


def misfires(service: CronService, action: str) -> float:
    value = service.context.metrics.registry.get_sample_value(
        "hetuflow_cron_misfires_total", {"action": action}
    )
    return value or 0.0


async def test_a_late_or_skipped_tick_is_counted_once_across_nodes(store: Store) -> None:
    clock_a = FrozenClock(at(9, 30))
    skipped = await add_job(store, clock_a, "0 * * * *", misfire_policy=MisfirePolicy.SKIP)
    once = await add_job(store, clock_a, "30 * * * *", misfire_policy=MisfirePolicy.RUN_ONCE)
    clock_a.set(at(13, 45))
    clock_b = FrozenClock(at(13, 45) + timedelta(microseconds=1))  # real clocks differ
    nodes = [make_service(store, clock_a, node="node-a"), make_service(store, clock_b, node="b")]
    await asyncio.gather(*(node.fire_due() for node in nodes))
    assert len(await store.list_cron_ticks(skipped.id, limit=10)) == 1
    assert len(await tasks_of(store, once)) == 1
    assert sum(misfires(node, "skipped") for node in nodes) == 1
    assert sum(misfires(node, "run_once") for node in nodes) == 1


async def test_disabled_job_does_not_fire(store: Store) -> None:
    clock = FrozenClock(T0)
    service = make_service(store, clock)
    job = await add_job(store, clock, enabled=False)
    clock.set(at(10, 5))
    await service.fire_due()
    assert await tasks_of(store, job) == []


# --- misfire ----------------------------------------------------------------------------------


async def missed_hourly(
    store: Store, policy: MisfirePolicy, **fields: Any
) -> tuple[CronJob, CronService]:
    clock = FrozenClock(at(9, 30))
    job = await add_job(store, clock, "0 * * * *", misfire_policy=policy, **fields)
    assert job.next_fire_at == at(10, 0)
    clock.set(at(13, 30))  # 10:00, 11:00, 12:00 and 13:00 were missed
    return job, make_service(store, clock)


async def test_misfire_skip_records_one_skip_and_resumes_at_the_next_tick(store: Store) -> None:
    job, service = await missed_hourly(store, MisfirePolicy.SKIP)
    await service.fire_due()
    assert await tasks_of(store, job) == []
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert tick.outcome is TickOutcome.SKIPPED
    assert tick.tick_at == at(10, 0)
    assert tick.reason is not None
    assert "missed 4 ticks" in tick.reason
    assert "misfire_policy=skip" in tick.reason
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == at(14, 0)


async def test_misfire_run_once_runs_one_task_now(store: Store) -> None:
    job, service = await missed_hourly(store, MisfirePolicy.RUN_ONCE)
    await service.fire_due()
    [task] = await tasks_of(store, job)
    assert task.scheduled_at == at(13, 30)  # now, not in the past
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert tick.outcome is TickOutcome.FIRED
    assert tick.task_id == task.id
    assert tick.reason is not None
    assert "ran once now for 4 ticks" in tick.reason
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == at(14, 0)


async def test_misfire_catch_up_runs_the_most_recent_n(store: Store) -> None:
    job, service = await missed_hourly(store, MisfirePolicy.CATCH_UP, catch_up_limit=2)
    await service.fire_due()
    tasks = await tasks_of(store, job)
    assert [task.cron_tick_at for task in tasks] == [at(12, 0), at(13, 0)]
    ticks = await store.list_cron_ticks(job.id, limit=10)
    assert [(tick.tick_at, tick.outcome) for tick in ticks] == [
        (at(13, 0), TickOutcome.FIRED),
        (at(12, 0), TickOutcome.FIRED),
        (at(10, 0), TickOutcome.SKIPPED),
    ]
    assert ticks[-1].reason is not None
    assert "the oldest 2 skipped" in ticks[-1].reason
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == at(14, 0)


async def test_misfire_catch_up_within_limit_runs_all(store: Store) -> None:
    job, service = await missed_hourly(store, MisfirePolicy.CATCH_UP, catch_up_limit=10)
    await service.fire_due()
    assert [task.cron_tick_at for task in await tasks_of(store, job)] == [
        at(10, 0),
        at(11, 0),
        at(12, 0),
        at(13, 0),
    ]


async def test_enabling_after_a_pause_applies_the_misfire_policy(store: Store) -> None:
    clock = FrozenClock(at(9, 30))
    job = await add_job(store, clock, "0 * * * *", misfire_policy=MisfirePolicy.SKIP)
    await store.update_cron_job(job.id, CronJobChanges(enabled=False), now=clock.now())
    clock.set(at(12, 10))
    service = make_service(store, clock)
    await service.fire_due()
    assert await store.list_cron_ticks(job.id, limit=10) == []
    await store.update_cron_job(job.id, CronJobChanges(enabled=True), now=clock.now())
    await service.fire_due()
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert tick.outcome is TickOutcome.SKIPPED
    assert await tasks_of(store, job) == []


# --- start deadline ---------------------------------------------------------------------------


async def test_start_deadline_skips_a_late_tick(store: Store) -> None:
    clock = FrozenClock(T0)
    job = await add_job(store, clock, start_deadline_seconds=0.5)
    clock.set(at(10, 1, 0.8))  # late, but within the misfire grace: the deadline decides
    await make_service(store, clock).fire_due()
    assert await tasks_of(store, job) == []
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert tick.outcome is TickOutcome.SKIPPED
    assert tick.reason is not None
    assert "start deadline of 0.5s passed: 0.800s late" in tick.reason


async def test_start_deadline_also_bounds_a_missed_run(store: Store) -> None:
    job, service = await missed_hourly(store, MisfirePolicy.RUN_ONCE, start_deadline_seconds=3600)
    await service.fire_due()  # the latest missed tick (13:00) is 30 min late: within deadline
    assert len(await tasks_of(store, job)) == 1

    job2, service2 = await missed_hourly(
        store, MisfirePolicy.RUN_ONCE, start_deadline_seconds=60, name="strict"
    )
    await service2.fire_due()
    assert await tasks_of(store, job2) == []
    [tick] = await store.list_cron_ticks(job2.id, limit=10)
    assert tick.reason is not None
    assert "start deadline of 60s passed" in tick.reason


async def test_a_tick_on_time_is_not_affected_by_the_deadline(store: Store) -> None:
    clock = FrozenClock(T0)
    job = await add_job(store, clock, start_deadline_seconds=0.1)
    clock.set(at(10, 0, 58))
    await make_service(store, clock).fire_due()
    assert len(await tasks_of(store, job)) == 1


# --- overlap ----------------------------------------------------------------------------------


async def first_task(
    store: Store, policy: OverlapPolicy
) -> tuple[CronJob, Task, FrozenClock, CronService]:
    clock = FrozenClock(T0)
    job = await add_job(store, clock, overlap_policy=policy)
    service = make_service(store, clock)
    clock.set(at(10, 1))
    await service.fire_due()
    [task] = await tasks_of(store, job)
    return job, task, clock, service


async def run_on_agent(store: Store, task: Task, now: datetime) -> AttemptRef:
    agent = await store.connect_agent(
        AgentRegistration(capabilities=(), supported_task_types=("t",), max_concurrent_tasks=5),
        node_id="node-a",
        now=now,
    )
    group = ClaimGroup(
        task_types=frozenset({"t"}),
        capabilities=frozenset(),
        offers=(SlotOffer(agent_id=agent.id, free_slots=5, running=0),),
    )
    [dispatch] = await store.claim_tasks([group], now=now)
    assert dispatch.task.id == task.id
    return AttemptRef(task_id=task.id, attempt=dispatch.attempt, agent_id=agent.id)


async def test_overlap_allow_fires_ahead_even_while_the_previous_runs(store: Store) -> None:
    job, _, clock, service = await first_task(store, OverlapPolicy.ALLOW)
    clock.set(at(10, 1, 58))
    await service.fire_due()
    assert len(await tasks_of(store, job)) == 2


async def test_overlap_skip_waits_for_the_tick_then_skips(store: Store) -> None:
    job, first, clock, service = await first_task(store, OverlapPolicy.SKIP)
    clock.set(at(10, 1, 58))  # within the lookahead, but the previous task is not done
    wake_at = await service.fire_due()
    assert await store.list_cron_ticks(job.id, limit=10) != []
    assert len(await store.list_cron_ticks(job.id, limit=10)) == 1  # nothing decided yet
    assert wake_at == at(10, 2)  # decide at the tick
    clock.set(at(10, 2))
    await service.fire_due()
    assert len(await tasks_of(store, job)) == 1
    latest = (await store.list_cron_ticks(job.id, limit=10))[0]
    assert latest.tick_at == at(10, 2)
    assert latest.outcome is TickOutcome.SKIPPED
    assert latest.reason == f"overlap_policy=skip: task {first.id} is still pending"


async def test_a_tick_deferred_to_its_instant_is_decided_when_the_pass_runs_past_it(
    store: Store,
) -> None:
    """A busy job's tick is deferred to its instant; if the same pass is still going when that
    instant comes (other jobs kept it busy), the tick is decided then, not taken for a stuck
    job and put off by a second (which turned it into a misfire on a loaded machine)."""
    job, first, clock, service = await first_task(store, OverlapPolicy.SKIP)
    clock.set(at(10, 1, 59.5))
    busy = await add_job(store, clock, "* * * * * *", name="every-second")
    assert busy.next_fire_at == at(10, 2)
    record = service._record

    async def slow_record(decided: Any, now: datetime) -> int:
        fired = await record(decided, now)
        clock.set(at(10, 2, 0.2))  # the commit ran past the skip job's tick
        return fired

    service._record = slow_record  # type: ignore[method-assign]
    await service.fire_due()
    latest = (await store.list_cron_ticks(job.id, limit=10))[0]
    assert latest.tick_at == at(10, 2)
    assert latest.outcome is TickOutcome.SKIPPED
    assert latest.reason == f"overlap_policy=skip: task {first.id} is still pending"


async def test_overlap_skip_fires_ahead_when_the_previous_finished(store: Store) -> None:
    job, first, clock, service = await first_task(store, OverlapPolicy.SKIP)
    ref = await run_on_agent(store, first, at(10, 1))
    await store.finish_attempts(
        [AttemptResult(ref=ref, outcome=AttemptOutcome.SUCCEEDED)], now=at(10, 1, 5)
    )
    clock.set(at(10, 1, 58))
    await service.fire_due()
    tasks = await tasks_of(store, job)
    assert [task.scheduled_at for task in tasks] == [at(10, 1), at(10, 2)]


async def test_overlap_cancel_previous(store: Store) -> None:
    job, first, clock, service = await first_task(store, OverlapPolicy.CANCEL_PREVIOUS)
    await run_on_agent(store, first, at(10, 1))
    cancels: list[str] = []
    service.context.notifier.subscribe(TASK_CANCEL, lambda payload: cancels.append(payload))
    clock.set(at(10, 2))
    await service.fire_due()
    old = await store.get_task(first.id)
    assert old is not None
    assert old.status is TaskStatus.CANCELLING  # its agent is told to stop it
    assert len(cancels) == 1
    assert cancels[0].startswith(f"{first.id}:1:")
    tasks = await tasks_of(store, job)
    assert len(tasks) == 2
    latest = (await store.list_cron_ticks(job.id, limit=1))[0]
    assert latest.outcome is TickOutcome.FIRED
    assert latest.reason == f"cancelled task {first.id} (dispatched)"


async def test_overlap_queue_waits_for_the_running_task(store: Store) -> None:
    job, first, clock, service = await first_task(store, OverlapPolicy.QUEUE)
    ref = await run_on_agent(store, first, at(10, 1))
    clock.set(at(10, 2))
    wake_at = await service.fire_due()
    assert len(await tasks_of(store, job)) == 1  # waiting behind the running one
    assert wake_at <= at(10, 2, 1)
    clock.set(at(10, 4, 10))  # 10:03 and 10:04 come while it still runs
    await service.fire_due()
    assert len(await tasks_of(store, job)) == 1
    await store.finish_attempts(
        [AttemptResult(ref=ref, outcome=AttemptOutcome.SUCCEEDED)], now=at(10, 4, 20)
    )
    clock.set(at(10, 4, 20))
    await service.fire_due()
    tasks = await tasks_of(store, job)
    assert len(tasks) == 2
    assert tasks[1].cron_tick_at == at(10, 2)  # the queued tick runs now
    assert tasks[1].scheduled_at == at(10, 4, 20)
    latest = (await store.list_cron_ticks(job.id, limit=1))[0]
    assert latest.reason is not None
    assert latest.reason.startswith(f"waited for task {first.id} to finish; 2 ticks")
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at == at(10, 5)


async def test_overlap_queue_keeps_at_most_one_waiting(store: Store) -> None:
    job, first, clock, service = await first_task(store, OverlapPolicy.QUEUE)
    # The first task never got an agent: it is the one waiting, so the next tick is skipped.
    clock.set(at(10, 2))
    await service.fire_due()
    assert len(await tasks_of(store, job)) == 1
    latest = (await store.list_cron_ticks(job.id, limit=1))[0]
    assert latest.outcome is TickOutcome.SKIPPED
    assert latest.reason == f"overlap_policy=queue: task {first.id} already waits to run"


# --- broken jobs ------------------------------------------------------------------------------


async def test_a_job_whose_expression_no_longer_parses_stops_with_a_reason(store: Store) -> None:
    clock = FrozenClock(T0)
    job = await store.create_cron_job(
        NewCronJob(name="broken", cron_expression="* * * * *", task_type="t", timezone="No/Where"),
        next_fire_at=at(10, 1),
        now=clock.now(),
    )
    clock.set(at(10, 1))
    service = make_service(store, clock)
    await service.fire_due()
    [tick] = await store.list_cron_ticks(job.id, limit=10)
    assert tick.outcome is TickOutcome.SKIPPED
    assert tick.reason is not None
    assert "cannot be scheduled: unknown time zone 'No/Where'" in tick.reason
    after = await store.get_cron_job(job.id)
    assert after is not None
    assert after.next_fire_at is None


# --- the loop ---------------------------------------------------------------------------------


@pytest.fixture
async def running(store: Store) -> AsyncIterator[CronService]:
    service = make_service(store, SystemClock(), lookahead=0.3)
    runner = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_run_wakes_on_cron_changed_and_fires_ahead(
    store: Store, running: CronService
) -> None:
    now = datetime.now(UTC)
    job = await store.create_cron_job(
        NewCronJob(name="per-second", cron_expression="* * * * * *", task_type="t"),
        next_fire_at=parse("* * * * * *").next_after(now),
        now=now,
    )
    await running.context.notifier.publish(CRON_CHANGED)
    deadline = asyncio.get_running_loop().time() + 5
    tasks: list[Task] = []
    while len(tasks) < 2:
        assert asyncio.get_running_loop().time() < deadline, "no cron task within 5 s"
        await asyncio.sleep(0.02)
        tasks = await tasks_of(store, job)
    for task in tasks:
        assert task.scheduled_at.microsecond == 0
        assert task.created_at < task.scheduled_at  # created ahead, started at the tick
    assert tasks[1].scheduled_at - tasks[0].scheduled_at == timedelta(seconds=1)
