"""The cron policies as pure decisions: misfire (skip, run_once, catch_up), the start
deadline and overlap (allow, skip, queue, cancel_previous), with no store and no clock."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hetuflow.cron import parse
from hetuflow.models import (
    CronJob,
    MisfirePolicy,
    OverlapPolicy,
    Priority,
    RetryPolicy,
    Task,
    TaskStatus,
    TickOutcome,
)
from hetuflow.server.cron_policy import (
    MISFIRE_GRACE,
    QUEUE_POLL,
    Decision,
    decide,
    fire_of,
    unschedulable,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EVERY_MINUTE = parse("* * * * *", "UTC")
MINUTE = timedelta(minutes=1)


def job(**changes: object) -> CronJob:
    base = CronJob(
        id=uuid.uuid4(),
        name="j",
        cron_expression="* * * * *",
        timezone="UTC",
        task_type="t",
        payload={"k": 1},
        priority=Priority.HIGH,
        required_capabilities=("disk",),
        timeout_seconds=5.0,
        retry=RetryPolicy(max_retries=2),
        enabled=True,
        misfire_policy=MisfirePolicy.SKIP,
        catch_up_limit=3,
        overlap_policy=OverlapPolicy.ALLOW,
        start_deadline_seconds=None,
        next_fire_at=T0,
        last_fire_at=None,
        last_task_id=None,
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def task(status: TaskStatus, finished_at: datetime | None = None) -> Task:
    return Task(
        id=uuid.uuid4(),
        name="j",
        task_type="t",
        priority=Priority.NORMAL,
        payload={},
        required_capabilities=(),
        status=status,
        scheduled_at=T0,
        timeout_seconds=None,
        retry=RetryPolicy(),
        idempotency_key=None,
        result=None,
        error=None,
        attempts=1,
        agent_id=None,
        cron_job_id=None,
        cron_tick_at=None,
        progress=None,
        created_at=T0,
        updated_at=T0,
        started_at=None,
        finished_at=finished_at,
    )


def test_a_due_tick_fires_a_task_scheduled_at_the_tick() -> None:
    the_job = job()
    decision = decide(the_job, EVERY_MINUTE, T0, T0, None)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.next_fire_at == T0 + MINUTE
    assert decision.task is not None
    assert decision.task.scheduled_at == T0
    assert decision.task.cron_tick_at == T0
    assert decision.task.cron_job_id == the_job.id
    assert (decision.task.priority, decision.task.retry) == (the_job.priority, the_job.retry)
    assert decision.late is None


def test_a_tick_fired_ahead_of_time_fires_too() -> None:
    assert decide(job(), EVERY_MINUTE, T0, T0 - timedelta(seconds=5), None).outcome == "fired"


def test_a_tick_within_the_grace_is_not_missed() -> None:
    decision = decide(job(), EVERY_MINUTE, T0, T0 + MISFIRE_GRACE, None)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.late is None


def test_misfire_skip_skips_every_missed_tick_and_resumes_after_them() -> None:
    now = T0 + 3 * MINUTE + timedelta(seconds=30)
    decision = decide(job(), EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.task is None
    assert decision.next_fire_at == T0 + 4 * MINUTE
    assert decision.reason is not None
    assert decision.reason.startswith(
        "missed 4 ticks (2030-01-01T12:00:00Z to 2030-01-01T12:03:00Z)"
    )


def test_misfire_run_once_runs_one_task_now_for_all_missed_ticks() -> None:
    now = T0 + 3 * MINUTE + timedelta(seconds=30)
    decision = decide(job(misfire_policy=MisfirePolicy.RUN_ONCE), EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.task is not None
    assert decision.task.scheduled_at is None  # now, not at the tick
    assert decision.next_fire_at == T0 + 4 * MINUTE
    assert decision.late == "run_once"
    assert decision.reason is not None
    assert decision.reason.startswith("ran once now for 4 ticks")


def test_catch_up_runs_the_oldest_missed_tick_within_the_limit() -> None:
    now = T0 + 2 * MINUTE + timedelta(seconds=30)  # 3 missed, limit 3
    decision = decide(job(misfire_policy=MisfirePolicy.CATCH_UP), EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.task is not None
    assert decision.task.cron_tick_at == T0
    assert decision.next_fire_at == T0 + MINUTE
    assert (decision.reason, decision.late) == ("caught up", "catch_up")


def test_catch_up_past_the_limit_skips_the_oldest_to_the_first_kept() -> None:
    now = T0 + 4 * MINUTE + timedelta(seconds=30)  # 5 missed, limit 3: skip 2
    decision = decide(job(misfire_policy=MisfirePolicy.CATCH_UP), EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.next_fire_at == T0 + 2 * MINUTE
    assert decision.reason is not None
    assert decision.reason.endswith("catch_up_limit=3: the oldest 2 skipped")


def test_catch_up_limit_zero_skips_everything_missed() -> None:
    now = T0 + 1 * MINUTE + timedelta(seconds=30)
    late = job(misfire_policy=MisfirePolicy.CATCH_UP, catch_up_limit=0)
    decision = decide(late, EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.next_fire_at == T0 + 2 * MINUTE


def test_a_start_deadline_skips_a_late_tick_and_says_how_late() -> None:
    strict = job(start_deadline_seconds=0.5)
    now = T0 + timedelta(seconds=0.75)  # within the misfire grace, past the deadline
    decision = decide(strict, EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.next_fire_at == T0 + MINUTE
    assert decision.reason == "start deadline of 0.5s passed: 0.750s late"
    assert decide(strict, EVERY_MINUTE, T0, T0 + timedelta(seconds=0.5), None).outcome == "fired"


def test_a_start_deadline_also_bounds_a_late_run_once() -> None:
    strict = job(misfire_policy=MisfirePolicy.RUN_ONCE, start_deadline_seconds=10)
    now = T0 + MINUTE + timedelta(seconds=30)  # latest missed tick T0+1min is 30 s old
    decision = decide(strict, EVERY_MINUTE, T0, now, None)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.next_fire_at == T0 + 2 * MINUTE


def test_overlap_skip_skips_while_the_previous_task_runs() -> None:
    running = task(TaskStatus.RUNNING)
    decision = decide(job(overlap_policy=OverlapPolicy.SKIP), EVERY_MINUTE, T0, T0, running)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.reason == f"overlap_policy=skip: task {running.id} is still running"
    assert decision.next_fire_at == T0 + MINUTE


def test_a_busy_previous_task_defers_a_tick_ahead_of_time_to_the_tick() -> None:
    busy = job(overlap_policy=OverlapPolicy.SKIP)
    ahead = decide(busy, EVERY_MINUTE, T0, T0 - timedelta(seconds=5), task(TaskStatus.RUNNING))
    assert ahead == Decision(defer_until=T0)


def test_cancel_previous_fires_and_names_the_task_to_cancel() -> None:
    running = task(TaskStatus.DISPATCHED)
    policy = job(overlap_policy=OverlapPolicy.CANCEL_PREVIOUS)
    decision = decide(policy, EVERY_MINUTE, T0, T0, running)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.cancel == running
    assert decision.reason == f"cancelled task {running.id} (dispatched)"


def test_allow_fires_whatever_the_previous_task_does() -> None:
    decision = decide(job(), EVERY_MINUTE, T0, T0, task(TaskStatus.RUNNING))
    assert decision.outcome is TickOutcome.FIRED
    assert decision.cancel is None


def test_queue_waits_for_a_running_previous_task() -> None:
    queued = job(overlap_policy=OverlapPolicy.QUEUE)
    assert decide(queued, EVERY_MINUTE, T0, T0, task(TaskStatus.RUNNING)) == Decision(
        defer_until=T0 + QUEUE_POLL
    )


def test_queue_skips_a_tick_while_another_run_already_waits() -> None:
    waiting = task(TaskStatus.PENDING)
    decision = decide(job(overlap_policy=OverlapPolicy.QUEUE), EVERY_MINUTE, T0, T0, waiting)
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.reason == f"overlap_policy=queue: task {waiting.id} already waits to run"


def test_queue_runs_after_the_previous_task_and_drops_the_ticks_during_its_run() -> None:
    finished = task(TaskStatus.SUCCEEDED, finished_at=T0 + 2 * MINUTE + timedelta(seconds=10))
    now = finished.finished_at
    assert now is not None
    decision = decide(job(overlap_policy=OverlapPolicy.QUEUE), EVERY_MINUTE, T0, now, finished)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.late == "queued"
    assert decision.next_fire_at == T0 + 3 * MINUTE
    assert decision.task is not None
    assert decision.task.scheduled_at is None
    assert decision.reason is not None
    assert decision.reason.startswith(f"waited for task {finished.id} to finish; 2 ticks")


def test_queue_with_a_previous_task_finished_before_the_tick_fires_as_usual() -> None:
    finished = task(TaskStatus.SUCCEEDED, finished_at=T0 - MINUTE)
    decision = decide(job(overlap_policy=OverlapPolicy.QUEUE), EVERY_MINUTE, T0, T0, finished)
    assert decision.outcome is TickOutcome.FIRED
    assert decision.late is None


def test_an_unschedulable_job_is_skipped_and_stops() -> None:
    decision = unschedulable("bad expression")
    assert decision.outcome is TickOutcome.SKIPPED
    assert decision.next_fire_at is None
    assert decision.reason == "cannot be scheduled: bad expression; fix it to resume"


def test_fire_of_records_the_jobs_current_tick() -> None:
    the_job = job()
    decision = decide(the_job, EVERY_MINUTE, T0, T0, None)
    fire = fire_of(the_job, decision)
    assert (fire.cron_job_id, fire.tick_at, fire.next_fire_at) == (the_job.id, T0, T0 + MINUTE)
    assert (fire.outcome, fire.task) == (TickOutcome.FIRED, decision.task)
