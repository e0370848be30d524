"""The attempts an agent holds, one per slot, and the asyncio task running each.

``Slots.dispatch`` takes the tasks of a ``TaskDispatch``: each is accepted (``TaskAccepted``),
waits for its ``start_at`` if that is in the future (never a moment early), starts
(``TaskStarted``), runs its handler under the execution timeout and reports a result. Never
more than ``max_concurrent_tasks`` attempts are held: a dispatch beyond that is answered at once
with a failed result, error ``"agent has no free slot"``. Attempts already told to stop
(superseded, cancelled, timed out) do not count for that: their runners only wind down, and the
server may already count their slots free (it dispatches to an agent that reconnected while
the agent still stops the attempts it superseded). A task taken that way waits, before it
starts, until the stopped ones have ended, a stopped sync handler's thread included (at most
``SLOT_WAIT_SECONDS``, else it is answered ``"agent has no free slot"``), so no more than
``max_concurrent_tasks`` ever run.

Stopping an attempt (``Slots.stop``) cancels its asyncio task; the reason decides the report:
``cancelled`` → outcome ``cancelled``, ``timed_out`` → ``timed_out``, ``superseded`` and
``released`` (agent shutting down) → no result at all (the server owns the attempt's fate).

A sync handler cannot be interrupted. One that has not returned ``kill_grace_seconds`` after
its cancel is **abandoned**: its outcome is reported, but its thread still runs and still
takes its slot until it returns. ``capacity`` minus the abandoned threads is what the agent
declares to the server (``declared_capacity``; ``on_capacity_changed`` is called whenever it
changes, and the agent sends a fresh ``AgentCapabilities``), and a dispatch beyond it gets
``NO_FREE_SLOT``. So a retry never runs beside the old thread past the agent's slots, and as
the thread pool has more threads than slots, a started sync task always gets a thread. With
every slot held by an abandoned thread the agent declares 0 slots (degraded) until one ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic_core import to_jsonable_python

from hetuflow.agent.context import TaskContext
from hetuflow.agent.handlers import Handler, Handlers
from hetuflow.agent.outbox import AttemptKey, Outbox
from hetuflow.errors import TaskFailed, TaskTimedOut
from hetuflow.protocol import (
    DispatchedTask,
    RunningAttempt,
    TaskAccepted,
    TaskOutcomeField,
    TaskStarted,
)

log = logging.getLogger("hetuflow.agent")

StopReason = Literal["cancelled", "superseded", "timed_out", "released"]
NO_FREE_SLOT = "agent has no free slot"
SLOT_WAIT_SECONDS = 60.0
"""How long a task taken beside stopping attempts waits for their slots (see above)."""
FINAL_WAIT_SECONDS = 0.004
"""``start_at`` waits sleep until half this close, then yield to the loop until the instant.

The loop's timers fire up to ~1 ms late (uvloop counts in milliseconds), so the sleep stops
2 ms short and the rest is spent in ``sleep(0)`` turns: the start lands within a few
microseconds after the instant, and the loop keeps serving everything else meanwhile."""

_PLAIN = (str, int, float, bool)


async def wait_until(instant: datetime) -> None:
    """Return at ``instant`` (aware), never earlier by ``time.time()``, within ~0.1 ms after."""
    target = instant.timestamp()
    while (remaining := target - time.time()) > 0:
        if remaining > FINAL_WAIT_SECONDS:
            await asyncio.sleep(remaining - FINAL_WAIT_SECONDS / 2)
        else:
            await asyncio.sleep(0)


class Job:
    """One held attempt."""

    __slots__ = ("ctx", "handler", "key", "runner", "started_at", "stop_reason", "task")

    def __init__(self, task: DispatchedTask, handler: Handler, ctx: TaskContext) -> None:
        self.task = task
        self.key: AttemptKey = (task.task_id, task.attempt)
        self.handler = handler
        self.ctx = ctx
        self.runner: asyncio.Task[None] | None = None
        self.started_at: datetime | None = None
        self.stop_reason: StopReason | None = None


def _failed(task_id: str, attempt: int, error: str) -> TaskOutcomeField:
    return TaskOutcomeField(
        task_id=task_id,
        attempt=attempt,
        outcome="failed",
        error=error,
        finished_at=datetime.now(UTC),
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, _PLAIN):
        return value
    return to_jsonable_python(value)


class Slots:
    """Held attempts and their runners."""

    def __init__(
        self,
        handlers: Handlers,
        outbox: Outbox,
        *,
        max_concurrent_tasks: int,
        kill_grace_seconds: float,
        max_log_line_bytes: int,
        thread_pool: Callable[[], concurrent.futures.Executor],
        redact: Callable[[str], str] | None = None,
        on_capacity_changed: Callable[[], None] | None = None,
    ) -> None:
        self.handlers = handlers
        self.outbox = outbox
        self.capacity = max_concurrent_tasks
        self.kill_grace_seconds = kill_grace_seconds
        self.max_log_line_bytes = max_log_line_bytes
        self._thread_pool = thread_pool
        self._redact = redact
        self._on_capacity_changed = on_capacity_changed
        self._abandoned = 0
        self._jobs: dict[AttemptKey, Job] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._freed = asyncio.Event()
        self.accepting = True

    # --- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def held(self) -> list[RunningAttempt]:
        return [RunningAttempt(task_id=key[0], attempt=key[1]) for key in self._jobs]

    def held_keys(self) -> set[AttemptKey]:
        return set(self._jobs)

    def jobs(self) -> list[tuple[AttemptKey, Job]]:
        return list(self._jobs.items())

    @property
    def abandoned_threads(self) -> int:
        """Threads of sync handlers given up on after a cancel and still running."""
        return self._abandoned

    @property
    def declared_capacity(self) -> int:
        """The slots the agent can really offer: ``capacity`` minus the abandoned threads."""
        return max(self.capacity - self._abandoned, 0)

    # --- dispatch --------------------------------------------------------------------------

    def dispatch(self, tasks: Iterable[DispatchedTask]) -> None:
        """Take the tasks of one ``TaskDispatch`` (event-loop thread; does not block)."""
        for task in tasks:
            key = (task.task_id, task.attempt)
            if key in self._jobs:
                continue  # the same attempt again (e.g. after a reconnect): already held
            if not self.accepting:
                log.info("not taking task %s attempt %d: draining", task.task_id, task.attempt)
                continue  # unanswered: the server re-dispatches it when this agent leaves
            if self._winding_down_excluded() + self._abandoned >= self.capacity:
                log.warning(
                    "task %s attempt %d dispatched with no free slot (%d held, %d by abandoned "
                    "threads)",
                    task.task_id,
                    task.attempt,
                    len(self._jobs) + self._abandoned,
                    self._abandoned,
                )
                self.outbox.result(_failed(task.task_id, task.attempt, NO_FREE_SLOT))
                continue
            handler = self.handlers.get(task.task_type)
            if handler is None:
                self.outbox.result(_failed(task.task_id, task.attempt, _no_handler(task)))
                continue
            ctx = TaskContext(
                task_id=task.task_id,
                attempt=task.attempt,
                name=task.name,
                task_type=task.task_type,
                payload=task.payload,
                priority=task.priority,
                timeout_seconds=task.timeout_seconds,
                outbox=self.outbox,
                max_line_bytes=self.max_log_line_bytes,
                redact=self._redact,
                parents=task.parents,
                scheduled_at=task.scheduled_at,
                max_retries=task.max_retries,
                cron_job_id=task.cron_job_id,
                cron_tick_at=task.cron_tick_at,
                workflow_id=task.workflow_id,
                step=task.step,
                broadcast_of=task.broadcast_of,
            )
            job = Job(task, handler, ctx)
            self._jobs[key] = job
            self._empty.clear()
            self.outbox.control(
                TaskAccepted.model_construct(task_id=task.task_id, attempt=task.attempt)
            )
            job.runner = asyncio.create_task(self._run(job))
            job.runner.add_done_callback(functools.partial(self._runner_done, job))

    def _winding_down_excluded(self) -> int:
        """Held attempts, not counting those already told to stop (their runners are winding
        down: a superseded attempt's slot is already free in the server's eyes)."""
        return sum(1 for job in self._jobs.values() if job.stop_reason is None)

    async def _slot_free(self, job: Job) -> bool:
        """Wait until ``job`` fits beside the other held attempts and abandoned threads (it
        was taken while stopped attempts still wound down); False if they did not end within
        ``SLOT_WAIT_SECONDS`` (a stopped sync handler's thread that does not return)."""
        try:
            async with asyncio.timeout(SLOT_WAIT_SECONDS):
                while len(self._jobs) + self._abandoned > self.capacity:
                    self._freed.clear()
                    await self._freed.wait()
        except TimeoutError:
            return False
        return True

    def _release(self, job: Job) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
            self._freed.set()
            if not self._jobs:
                self._empty.set()

    # --- stopping --------------------------------------------------------------------------

    def stop(self, task_id: str, attempt: int, reason: StopReason) -> bool:
        """Stop one attempt; False if it is not held (already finished or never seen)."""
        job = self._jobs.get((task_id, attempt))
        if job is None:
            return False
        if job.stop_reason == reason:
            return True  # told again (a server re-sends cancels): already stopping
        if job.stop_reason is None or reason == "superseded":
            job.stop_reason = reason
        job.ctx.request_cancel()
        if job.runner is not None:
            job.runner.cancel()
        return True

    def stop_all(self, reason: StopReason) -> None:
        for task_id, attempt in list(self._jobs):
            self.stop(task_id, attempt, reason)

    async def wait_empty(self, timeout_seconds: float | None = None) -> bool:
        """Until no attempt is held; False if ``timeout_seconds`` passed first."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Release every attempt (no results) and wait for the runners to end."""
        self.accepting = False
        self.stop_all("released")
        runners = [job.runner for job in self._jobs.values() if job.runner is not None]
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)

    # --- abandoned threads -----------------------------------------------------------------

    def _abandon(self, job: Job, thread: asyncio.Future[Any]) -> None:
        """The sync handler of ``job`` ignored its cancel: count its thread until it ends."""
        self._abandoned += 1
        thread.add_done_callback(self._thread_ended)
        if self._abandoned >= self.capacity:
            log.error(
                "degraded: all %d slot(s) are held by sync handler threads that ignored their "
                "cancel; no task is taken until one returns",
                self.capacity,
            )
        else:
            log.warning(
                "the slot of task %s attempt %d stays taken until its thread returns: "
                "%d of %d slot(s) offered",
                job.task.task_id,
                job.task.attempt,
                self.declared_capacity,
                self.capacity,
            )
        if self._on_capacity_changed is not None:
            self._on_capacity_changed()

    def _thread_ended(self, _: asyncio.Future[Any]) -> None:
        self._abandoned -= 1
        self._freed.set()
        log.info(
            "an abandoned sync handler thread returned: %d abandoned thread(s) left",
            self._abandoned,
        )
        if self._on_capacity_changed is not None:
            self._on_capacity_changed()

    # --- running ---------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        task = job.task
        entry: TaskOutcomeField | None
        try:
            entry = await self._execute(job)
        except asyncio.CancelledError:
            entry = self._stopped(job, None)
        except BaseException:  # pragma: no cover - _execute catches handler errors
            log.exception("runner of task %s attempt %d crashed", task.task_id, task.attempt)
            entry = _failed(task.task_id, task.attempt, "agent error while running the task")
        finally:
            self._release(job)
        if entry is not None:
            self.outbox.result(entry)

    def _runner_done(self, job: Job, _: asyncio.Task[None]) -> None:
        """A runner cancelled before its first step never runs its body (nor its cleanup):
        release its slot and report it here (a stop right after the dispatch)."""
        if self._jobs.get(job.key) is not job:
            return  # _run released it
        self._release(job)
        entry = self._stopped(job, None)
        if entry is not None:
            self.outbox.result(entry)

    def _finished(
        self,
        job: Job,
        outcome: Literal["succeeded", "failed", "timed_out", "cancelled"],
        *,
        result: Any = None,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> TaskOutcomeField:
        if error is not None and self._redact is not None:
            error = self._redact(error)
        return TaskOutcomeField.model_construct(
            task_id=job.task.task_id,
            attempt=job.task.attempt,
            result=result,
            error=error,
            outcome=outcome,
            exit_code=exit_code,
            finished_at=datetime.now(UTC),
            started_at=job.started_at,
        )

    def _stopped(self, job: Job, timeout_seconds: float | None) -> TaskOutcomeField | None:
        reason = job.stop_reason
        if reason == "cancelled":
            return self._finished(job, "cancelled", error="cancelled")
        if reason == "timed_out" or (reason is None and timeout_seconds is not None):
            limit = job.task.timeout_seconds
            error = f"timed out after {limit:g} s" if limit is not None else "timed out"
            return self._finished(job, "timed_out", error=error)
        return None  # superseded or released: nothing to report

    async def _execute(self, job: Job) -> TaskOutcomeField | None:
        task = job.task
        if not await self._slot_free(job):
            log.warning(
                "task %s attempt %d: no slot came free (%d held, %d by abandoned threads)",
                task.task_id,
                task.attempt,
                len(self._jobs) + self._abandoned - 1,
                self._abandoned,
            )
            return _failed(task.task_id, task.attempt, NO_FREE_SLOT)
        if task.start_at is not None and task.start_at.timestamp() > time.time():
            await wait_until(task.start_at)
        job.started_at = job.ctx.started_at = datetime.now(UTC)
        self.outbox.control(
            TaskStarted.model_construct(
                task_id=task.task_id, attempt=task.attempt, started_at=job.started_at
            )
        )
        timeout = asyncio.timeout(task.timeout_seconds)
        try:
            async with timeout:
                value = await job.handler.invoke(
                    task.payload,
                    job.ctx,
                    self._thread_pool,
                    self.kill_grace_seconds,
                    lambda thread: self._abandon(job, thread),
                )
        except TimeoutError as error:
            if timeout.expired():
                return self._stopped(job, task.timeout_seconds)
            return self._error(job, error)
        except asyncio.CancelledError:
            if job.stop_reason is None:
                raise
            return self._stopped(job, None)
        except TaskTimedOut as stop:
            return self._finished(
                job,
                "timed_out",
                error=stop.message,
                exit_code=stop.exit_code,
                result=_safe_jsonable(stop.result),
            )
        except TaskFailed as failure:
            return self._finished(
                job,
                "failed",
                error=failure.message,
                exit_code=failure.exit_code,
                result=_safe_jsonable(failure.result),
            )
        except Exception as error:
            return self._error(job, error)
        if job.stop_reason == "superseded":
            return None
        try:
            result = _jsonable(value)
        except Exception as error:
            return self._finished(job, "failed", error=f"result is not JSON serialisable: {error}")
        return self._finished(job, "succeeded", result=result)

    def _error(self, job: Job, error: BaseException) -> TaskOutcomeField:
        """A handler raised: the traceback goes to the task's log, ``Type: message`` to the
        result's error."""
        job.ctx.log("".join(traceback.format_exception(error)).rstrip(), stream="log")
        summary = "".join(traceback.format_exception_only(error)).strip()
        return self._finished(job, "failed", error=summary)


def _no_handler(task: DispatchedTask) -> str:
    if task.task_type == "shell":
        return (
            "shell tasks are off on this agent: it runs them only when started with --shell"
            " (or with shell named in --task-types)"
        )
    return f"no handler for task type {task.task_type!r} on this agent"


def _safe_jsonable(value: Any) -> Any:
    try:
        return _jsonable(value)
    except Exception:
        return None
