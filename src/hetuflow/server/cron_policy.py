"""What a cron job does with its current tick, as pure functions of the job, its schedule, the
tick, the time and its previous task: fire, skip (with the reason), or decide later.

``CronService`` (server/cron_service.py) reads the job and its previous task, asks ``decide``
and records the decision; the policies are those of its module docstring (misfire,
``start_deadline_seconds``, overlap) and of docs/cron.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from hetuflow.cron import CronSchedule
from hetuflow.errors import CronExpressionInvalid
from hetuflow.models import (
    CronFire,
    CronJob,
    MisfirePolicy,
    NewTask,
    OverlapPolicy,
    Task,
    TaskStatus,
    TickOutcome,
)

MISFIRE_GRACE = timedelta(seconds=1)
"""A tick later than this when its job is looked at was missed (the misfire policy decides)."""
QUEUE_POLL = timedelta(milliseconds=250)
"""How often a tick queued behind a running task checks whether that task finished."""
MISSED_SCAN_LIMIT = 100_000
"""Missed ticks counted at most per call (a per-second job down for a day has 86,400)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to record for the job's current tick, or ``defer_until`` to decide later."""

    outcome: TickOutcome | None = None
    reason: str | None = None
    next_fire_at: datetime | None = None
    task: NewTask | None = None
    defer_until: datetime | None = None
    cancel: Task | None = None
    late: str | None = None  # for the misfire metric: what a policy did with a late tick


def decide(
    job: CronJob, schedule: CronSchedule, tick: datetime, now: datetime, previous: Task | None
) -> Decision:
    """The decision for the job's tick ``tick`` at ``now``. ``previous``: the job's last task
    when the overlap policy cares (``CronService._previous``), else None."""
    if job.overlap_policy is OverlapPolicy.QUEUE and previous is not None and tick <= now:
        queued = _queued(job, schedule, tick, now, previous)
        if queued is not None:
            return queued
    if tick < now - MISFIRE_GRACE:
        return _missed(job, schedule, tick, now, previous)
    next_fire_at = _next(schedule, tick)
    if job.start_deadline_seconds is not None:
        late = now - tick
        if late > timedelta(seconds=job.start_deadline_seconds):
            return _skip(_deadline_reason(job, late), next_fire_at)
    return _run(job, tick, tick, next_fire_at, now, previous, reason=None)


def unschedulable(message: str) -> Decision:
    """Skip the tick of a job whose expression or time zone no longer parses, and stop."""
    return _skip(f"cannot be scheduled: {message}; fix it to resume", None)


def _missed(
    job: CronJob,
    schedule: CronSchedule,
    tick: datetime,
    now: datetime,
    previous: Task | None,
) -> Decision:
    """``tick`` and maybe more ticks are missed; the misfire policy decides."""
    cutoff = now - MISFIRE_GRACE - timedelta(microseconds=1)
    missed = [tick, *schedule.ticks_between(tick, cutoff, MISSED_SCAN_LIMIT)]
    span = _span(missed)
    after = _next(schedule, missed[-1])
    if job.misfire_policy is MisfirePolicy.SKIP:
        return _skip(
            f"missed {span} (no server ran or the job was disabled); misfire_policy=skip", after
        )
    if job.misfire_policy is MisfirePolicy.RUN_ONCE:
        reason = f"ran once now for {span}" if len(missed) > 1 else "ran late (missed tick)"
        return _late_run(job, missed[-1], tick, after, now, previous, reason)
    limit = max(job.catch_up_limit, 0)
    if len(missed) > limit:
        dropped = len(missed) - limit
        resume = missed[dropped] if limit else after
        return _skip(f"missed {span}; catch_up_limit={limit}: the oldest {dropped} skipped", resume)
    return _late_run(job, tick, tick, _next(schedule, tick), now, previous, "caught up")


def _late_run(
    job: CronJob,
    latest: datetime,
    tick: datetime,
    next_fire_at: datetime | None,
    now: datetime,
    previous: Task | None,
    reason: str,
) -> Decision:
    if job.start_deadline_seconds is not None:
        late = now - latest
        if late > timedelta(seconds=job.start_deadline_seconds):
            return _skip(_deadline_reason(job, late), next_fire_at)
    decision = _run(job, tick, None, next_fire_at, now, previous, reason=reason)
    if decision.outcome is TickOutcome.FIRED:
        return replace(decision, late=job.misfire_policy.value)
    return decision


def _queued(
    job: CronJob, schedule: CronSchedule, tick: datetime, now: datetime, previous: Task
) -> Decision | None:
    """``overlap_policy=queue`` with the tick due: wait, skip or run the queued tick.

    None when the previous task finished before the tick (nothing was queued)."""
    if previous.status is TaskStatus.PENDING:
        return _skip(
            f"overlap_policy=queue: task {previous.id} already waits to run", _next(schedule, tick)
        )
    if not previous.status.is_terminal:
        return Decision(defer_until=now + QUEUE_POLL)
    finished = previous.finished_at or previous.updated_at
    if finished <= tick:
        return None
    dropped = schedule.ticks_between(tick, finished, MISSED_SCAN_LIMIT)
    reason = f"waited for task {previous.id} to finish"
    if dropped:
        reason += f"; {_span(dropped)} during its run dropped"
    next_fire_at = _next(schedule, dropped[-1] if dropped else tick)
    return Decision(
        outcome=TickOutcome.FIRED,
        reason=reason,
        next_fire_at=next_fire_at,
        task=cron_task(job, tick, None),
        late="queued",
    )


def _run(
    job: CronJob,
    tick: datetime,
    scheduled_at: datetime | None,
    next_fire_at: datetime | None,
    now: datetime,
    previous: Task | None,
    *,
    reason: str | None,
) -> Decision:
    """Fire the tick, unless the previous task is still busy and the overlap policy says no."""
    busy = previous is not None and not previous.status.is_terminal
    cancel: Task | None = None
    if busy and previous is not None and job.overlap_policy is not OverlapPolicy.ALLOW:
        if tick > now:
            return Decision(defer_until=tick)  # decide at the tick, not ahead
        if job.overlap_policy is OverlapPolicy.SKIP:
            return _skip(
                f"overlap_policy=skip: task {previous.id} is still {previous.status}",
                next_fire_at,
            )
        if job.overlap_policy is OverlapPolicy.CANCEL_PREVIOUS:
            cancel = previous
            note = f"cancelled task {previous.id} ({previous.status})"
            reason = f"{reason}; {note}" if reason else note
    return Decision(
        outcome=TickOutcome.FIRED,
        reason=reason,
        next_fire_at=next_fire_at,
        task=cron_task(job, tick, scheduled_at),
        cancel=cancel,
    )


def fire_of(job: CronJob, decision: Decision) -> CronFire:
    assert job.next_fire_at is not None
    assert decision.outcome is not None
    return CronFire(
        job.id,
        job.next_fire_at,
        next_fire_at=decision.next_fire_at,
        outcome=decision.outcome,
        task=decision.task,
        reason=decision.reason,
    )


def cron_task(job: CronJob, tick: datetime | None, scheduled_at: datetime | None) -> NewTask:
    """The task a cron job creates: for a tick (``tick``; ``scheduled_at`` to start it at an
    instant) or a manual run (``tick`` None)."""
    return NewTask(
        name=job.name,
        task_type=job.task_type,
        payload=job.payload,
        priority=job.priority,
        required_capabilities=job.required_capabilities,
        scheduled_at=scheduled_at,
        timeout_seconds=job.timeout_seconds,
        retry=job.retry,
        cron_job_id=job.id,
        cron_tick_at=tick,
        concurrency_key=job.concurrency_key,
        max_concurrent_per_key=job.max_concurrent_per_key,
        concurrency_strategy=job.concurrency_strategy,
        webhook_url=job.webhook_url,
        rate_limits=job.rate_limits,
    )


def _skip(reason: str, next_fire_at: datetime | None) -> Decision:
    return Decision(outcome=TickOutcome.SKIPPED, reason=reason, next_fire_at=next_fire_at)


def _next(schedule: CronSchedule, after: datetime) -> datetime | None:
    try:
        return schedule.next_after(after)
    except CronExpressionInvalid:
        return None


def _span(ticks: Sequence[datetime]) -> str:
    first, last = ticks[0], ticks[-1]
    more = "+" if len(ticks) >= MISSED_SCAN_LIMIT else ""
    if len(ticks) == 1:
        return f"1 tick ({_iso(first)})"
    return f"{len(ticks)}{more} ticks ({_iso(first)} to {_iso(last)})"


def _deadline_reason(job: CronJob, late: timedelta) -> str:
    return (
        f"start deadline of {job.start_deadline_seconds:g}s passed: "
        f"{late.total_seconds():.3f}s late"
    )


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
