"""CronService: fires the due ticks of cron jobs, exactly once per (job, tick) across nodes.

Every server node runs ``CronService(context).run()`` in the engine's task group. Each pass
reads the enabled jobs whose ``next_fire_at`` falls within one dispatch lookahead from now
(``Store.due_cron_jobs``, ``BATCH`` at a time), decides each job's next tick, and records the
whole batch in one transaction (``Store.fire_cron_ticks``): fired (a task is created with
``scheduled_at = tick``) or skipped (with the reason). 1,000 jobs due in the same second are
five commits, not a thousand. The database's unique key on (job, tick) lets exactly one node
record a tick; the others lose and change nothing. A job moves forward one tick per record,
so every node always races on the same key: the one the job points at.

Managing the jobs themselves (create, change, enable, run now, preview) is
``hetuflow.server.cron_jobs.CronJobs``.

Two-level scheduling: a tick is fired ``[scheduler] dispatch_lookahead_seconds`` before it is
due, the dispatcher hands its task to an agent at once, and the agent starts it at
``scheduled_at``: never before, and not whenever a loop next wakes up.

Policies (defaults in ``models.NewCronJob``; see docs/cron.md), decided by the pure functions of
``hetuflow.server.cron_policy``:

* A tick more than ``MISFIRE_GRACE`` late was *missed* (no server ran, the job was disabled):
  ``misfire_policy`` skip records them skipped; run_once runs one task now for all of them;
  catch_up runs one task per missed tick, at most ``catch_up_limit`` (the most recent ones).
* ``start_deadline_seconds``: a tick whose task could start only later than this after the
  tick is recorded skipped, with how late it was.
* ``overlap_policy`` when the job's previous task has not finished at the tick: allow; skip
  the tick; queue (wait for it to finish, then run; ticks during its run are dropped, and a
  tick while one run already waits is skipped); cancel_previous (cancel it, then fire).
  A tick whose job has a running previous task is not fired ahead: it is decided at the tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

from hetuflow.cron import CronSchedule, parse
from hetuflow.errors import (
    CronExpressionInvalid,
    HetuflowError,
    TaskAlreadyFinished,
    TimeZoneInvalid,
)
from hetuflow.models import (
    ConcurrencyLimits,
    ConcurrencyStrategy,
    CronFire,
    CronJob,
    CronJobChanges,
    NewTask,
    OverlapPolicy,
    Task,
    TickOutcome,
)
from hetuflow.server.api.workflow_schemas import workflow_from_document
from hetuflow.server.concurrency import ConcurrencyKeys
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_policy import Decision, decide, fire_of, unschedulable
from hetuflow.server.resilience import StoreRetry
from hetuflow.server.tasks import TaskQueue
from hetuflow.store.base import CRON_CHANGED, TASKS_READY

log = logging.getLogger("hetuflow.cron")

MAX_SLEEP = timedelta(seconds=10)
"""Longest wait between passes, in case a ``CRON_CHANGED`` wake-up is lost."""
RETRY_AFTER_ERROR = timedelta(seconds=1)
BATCH = 200
"""Jobs read per ``due_cron_jobs`` call; ``TASKS_READY`` is published after each batch."""


class CronService:
    """Fires due cron ticks for one server node. See the module docstring."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.store = context.store
        self.clock = context.clock
        self.lookahead = timedelta(seconds=context.config.scheduler.dispatch_lookahead_seconds)
        self.concurrency = ConcurrencyKeys(
            context.store, ConcurrencyLimits(dict(context.config.concurrency))
        )
        self.tasks = TaskQueue(
            context.store,
            context.notifier,
            context.clock,
            context.config.scheduler,
            metrics=context.metrics,
        )
        self._wake = asyncio.Event()
        self._deferred: dict[UUID, datetime] = {}
        self._schedules: dict[tuple[str, str], CronSchedule] = {}
        self._order_salt = context.node_id.encode()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Fire due ticks until cancelled; sleep until the next one is due (minus the
        lookahead) or a ``CRON_CHANGED`` notification arrives."""
        self.context.notifier.subscribe(CRON_CHANGED, self._on_changed)
        retry = StoreRetry("cron", metrics=self.context.metrics, operation="cron_pass", log=log)
        while True:
            try:
                wake_at = await self.fire_due()
            except Exception as error:
                retry.failed(error)
                wake_at = self.clock.now() + RETRY_AFTER_ERROR
            else:
                retry.succeeded()
            delay = (wake_at - self.clock.now()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    def wake(self) -> None:
        """Re-read the jobs now (a job was created, changed, enabled or deleted)."""
        self._deferred.clear()
        self._wake.set()

    def _on_changed(self, payload: str) -> None:
        self.wake()

    async def fire_due(self) -> datetime:
        """Settle every tick due within the lookahead; return when the next pass is needed.

        Called by ``run``; tests call it directly with a frozen clock.
        """
        settled: set[tuple[UUID, datetime | None]] = set()
        while True:
            now = self.clock.now()
            jobs = await self.store.due_cron_jobs(
                until=now + self.lookahead, limit=BATCH + len(self._deferred)
            )
            ready = [job for job in jobs if self._deferred.get(job.id, now) <= now]
            ready.sort(key=lambda job: self._order(job, now))
            progressed = False
            decided: list[tuple[CronJob, Decision]] = []
            for job in ready[:BATCH]:
                self._deferred.pop(job.id, None)
                key = (job.id, job.next_fire_at)
                if key in settled:
                    # Recorded, yet the job still points at that tick.
                    progressed |= await self._unstick(job, now)
                    continue
                decision = await self._decide_now(job, now)
                if decision is not None:
                    # Only a recorded decision settles the tick: a tick deferred to its
                    # instant (a busy previous task) is decided again once that instant
                    # passes, even within this same call.
                    settled.add(key)
                    decided.append((job, decision))
            if decided:
                progressed = True
                fired = await self._record(decided, now)
                if fired:
                    self.context.metrics.cron_fired(fired)
                    await self._publish(TASKS_READY)
            if not progressed:
                return await self._next_wake(now)

    def _order(self, job: CronJob, now: datetime) -> tuple[datetime, bytes]:
        # Earliest tick first; among jobs due at the same instant each node starts at a
        # different place, so several nodes spread the work instead of queueing on one row.
        digest = hashlib.blake2b(job.id.bytes, key=self._order_salt[:64], digest_size=8)
        return job.next_fire_at or now, digest.digest()

    async def _next_wake(self, now: datetime) -> datetime:
        wake_at = now + MAX_SLEEP
        for until in self._deferred.values():
            wake_at = min(wake_at, until)
        upcoming = await self.store.due_cron_jobs(
            until=now + MAX_SLEEP + self.lookahead, limit=len(self._deferred) + 1
        )
        for job in upcoming:
            if job.id not in self._deferred and job.next_fire_at is not None:
                wake_at = min(wake_at, job.next_fire_at - self.lookahead)
                break
        return wake_at

    # --- one job --------------------------------------------------------------------------

    async def _decide_now(self, job: CronJob, now: datetime) -> Decision | None:
        """The decision to record for the job's current tick; None when there is nothing to
        record yet (deferred, or no tick). Cancels the previous task if the policy says so."""
        tick = job.next_fire_at
        if tick is None:
            return None
        try:
            decision = await self._decide(job, tick, now)
            if decision.defer_until is not None:
                self._deferred[job.id] = decision.defer_until
                return None
            if decision.cancel is not None:
                with contextlib.suppress(TaskAlreadyFinished):
                    await self.tasks.cancel(decision.cancel.id)
        except HetuflowError as error:
            self._failed(job, error, now)
            return None
        return decision

    async def _record(self, decided: Sequence[tuple[CronJob, Decision]], now: datetime) -> int:
        """Record the decided ticks in one transaction (``Store.fire_cron_ticks``); if that
        fails with a domain error (a job deleted meanwhile), one by one. Returns how many
        tasks were created."""
        fires = [self._fire_of(job, decision, now) for job, decision in decided]
        try:
            results = await self.store.fire_cron_ticks(fires, now=now)
        except HetuflowError as error:
            log.warning("firing %d cron ticks at once failed (%s); one by one", len(fires), error)
            results = []
            for (job, _), fire in zip(decided, fires, strict=True):
                try:
                    results.append(await self._record_one(fire, now))
                except HetuflowError as problem:
                    self._failed(job, problem, now)
                    results.append((False, None))
        fired = 0
        for (_, decision), fire, (won, task) in zip(decided, fires, results, strict=True):
            # Count only what this node recorded: with several nodes the losers of the race
            # decided the same, and must not count it again.
            if not won:
                continue
            if fire.workflow is not None:
                fired += 1
                self.context.metrics.workflow_created()
                for step in fire.workflow.steps:
                    self.context.metrics.task_submitted(step.task.task_type)
                if decision.late is not None:
                    self.context.metrics.cron_misfired(decision.late)
            elif task is not None:
                fired += 1
                self.context.metrics.task_submitted(task.task_type)
                if decision.late is not None:
                    self.context.metrics.cron_misfired(decision.late)
            elif decision.outcome is TickOutcome.SKIPPED:
                self.context.metrics.cron_misfired("skipped")
        await self._apply_strategies(
            [
                (fire.task, task)
                for fire, (won, task) in zip(fires, results, strict=True)
                if won and fire.task is not None and task is not None
            ]
        )
        return fired

    async def _apply_strategies(self, fired: list[tuple[NewTask, Task]]) -> None:
        """The concurrency strategies of the tasks just fired (``cancel_newest``,
        ``cancel_in_progress``), as for a task created through the API, after the commit."""
        keyed = [
            (new, task)
            for new, task in fired
            if new.concurrency_strategy not in (None, ConcurrencyStrategy.QUEUE)
        ]
        if not keyed:
            return
        try:
            await self.concurrency.apply(
                [new for new, _ in keyed], [(task, True) for _, task in keyed], self.tasks.cancel
            )
        except HetuflowError as error:  # the ticks are recorded; a task ended or went meanwhile
            log.warning("concurrency strategy of %d cron tasks: %s", len(keyed), error)

    def _fire_of(self, job: CronJob, decision: Decision, now: datetime) -> CronFire:
        """The fire to record; a fired tick of a job that starts workflows starts its
        workflow (built from the stored document) instead of creating a task."""
        fire = fire_of(job, decision)
        if job.workflow is None or fire.task is None:
            return fire
        workflow = workflow_from_document(
            job.workflow,
            now=now,
            default_backoff_seconds=self.context.config.scheduler.retry_interval_seconds,
        )
        at = fire.task.scheduled_at  # a tick fired ahead of its instant starts at it
        if at is not None:
            steps = tuple(
                replace(s, task=replace(s.task, scheduled_at=max(s.task.scheduled_at or at, at)))
                for s in workflow.steps
            )
            workflow = replace(workflow, steps=steps)
        return replace(fire, task=None, workflow=workflow)

    async def _record_one(self, fire: CronFire, now: datetime) -> tuple[bool, Task | None]:
        [result] = await self.store.fire_cron_ticks([fire], now=now)
        return result

    def _failed(self, job: CronJob, error: HetuflowError, now: datetime) -> None:
        log.warning("cron job %s (%s): %s", job.name, job.id, error.message)
        self.context.metrics.database_error("fire_cron_tick")
        self._deferred[job.id] = now + RETRY_AFTER_ERROR

    async def _unstick(self, job: CronJob, now: datetime) -> bool:
        """The job still points at a tick this pass settled: if that tick was recorded
        before without advancing the job (its schedule was changed back onto an old tick),
        move it past that tick so it cannot stall (True); otherwise wait a little."""
        tick = job.next_fire_at
        ticks = await self.store.list_cron_ticks(job.id, limit=1)
        if tick is None or not ticks or ticks[0].tick_at < tick:
            log.warning("cron job %s did not advance past %s", job.id, tick)
            self._deferred[job.id] = now + RETRY_AFTER_ERROR
            return False
        schedule = self._schedule(job)
        log.warning("cron job %s pointed at already recorded tick %s; moving on", job.id, tick)
        try:
            await self.store.update_cron_job(
                job.id,
                CronJobChanges(next_fire_at=schedule.next_after(ticks[0].tick_at)),
                now=self.clock.now(),
            )
        except HetuflowError as error:
            self._failed(job, error, now)
            return False
        return True

    def _schedule(self, job: CronJob) -> CronSchedule:
        key = (job.cron_expression, job.timezone)
        schedule = self._schedules.get(key)
        if schedule is None:
            if len(self._schedules) > 10_000:
                self._schedules.clear()
            schedule = self._schedules[key] = parse(job.cron_expression, job.timezone)
        return schedule

    async def _decide(self, job: CronJob, tick: datetime, now: datetime) -> Decision:
        try:
            schedule = self._schedule(job)
        except (CronExpressionInvalid, TimeZoneInvalid) as error:
            return unschedulable(error.message)
        return decide(job, schedule, tick, now, await self._previous(job))

    async def _previous(self, job: CronJob) -> Task | None:
        """The job's last task if it has not finished and the overlap policy cares (or, for
        ``queue``, also a finished one: when it finished tells which ticks waited for it)."""
        if job.overlap_policy is OverlapPolicy.ALLOW or job.last_task_id is None:
            return None
        task = await self.store.get_task(job.last_task_id)
        if task is None:
            return None
        if task.status.is_terminal and job.overlap_policy is not OverlapPolicy.QUEUE:
            return None
        return task

    async def _publish(self, channel: str) -> None:
        try:
            await self.context.notifier.publish(channel)
        except Exception:
            log.warning("could not publish %s", channel, exc_info=True)
