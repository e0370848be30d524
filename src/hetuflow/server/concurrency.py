"""Concurrency keys at the service level: why a keyed task waits, and the strategies that act
when a task is created over its key's limit (docs/guarantees.md).

The limit itself is the claim's to keep (``Store.claim_tasks``, exact across nodes). Here:

- ``explain``: a pending task whose key has its limit of tasks active says
  ``concurrency_limit``;
- ``cancel_newest``: a new task whose key already has its limit of unfinished tasks (pending
  or active) is cancelled at once, its error naming the key;
- ``cancel_in_progress``: for a new task over the limit, the oldest unfinished tasks with the
  key (running or queued) are cancelled, through the ordinary cancel path (the agents of
  running ones are told to stop), so that only the newest ``limit`` remain; the new task is
  dispatched as soon as a cancelled one has stopped.

The strategies run right after the create commits, from one look at the key's tasks: two
creates racing on one key (on two nodes) may both see room. The claim still never dispatches
more than the limit; such a race only leaves a task queued that a strategy would have
cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

from hetuflow.errors import TaskAlreadyFinished
from hetuflow.models import (
    ACTIVE_TASK_STATUSES,
    ConcurrencyLimits,
    ConcurrencyStrategy,
    NewTask,
    Task,
    TaskStatus,
)
from hetuflow.store import Store

log = logging.getLogger(__name__)

ACTIVE = sorted(ACTIVE_TASK_STATUSES)
UNFINISHED = sorted({*ACTIVE_TASK_STATUSES, TaskStatus.PENDING})

Cancel = Callable[[UUID, str], Awaitable[Task]]
"""Cancel one task, with the reason a pending one records as its error."""


class ConcurrencyKeys:
    def __init__(self, store: Store, limits: ConcurrencyLimits) -> None:
        self.store = store
        self.limits = limits

    def limit_of(self, task: Task) -> int:
        return self.limits.of(task.task_type, task.max_concurrent_per_key)

    async def full(self, tasks: Sequence[Task]) -> set[UUID]:
        """The pending tasks of ``tasks`` whose key has its limit of tasks active."""
        keyed = [
            t for t in tasks if t.concurrency_key is not None and t.status is TaskStatus.PENDING
        ]
        if not keyed:
            return set()
        counts = await self.store.count_active_by_key(
            sorted({t.concurrency_key for t in keyed if t.concurrency_key is not None})
        )
        return {t.id for t in keyed if counts.get(t.concurrency_key or "", 0) >= self.limit_of(t)}

    async def apply(
        self, tasks: Sequence[NewTask], created: Sequence[tuple[Task, bool]], cancel: Cancel
    ) -> list[tuple[Task, bool]]:
        """Apply the cancel strategies of the tasks just created; returns ``created`` with the
        tasks it cancelled as they now are."""
        results = list(created)
        for index, (new, (task, is_new)) in enumerate(zip(tasks, created, strict=True)):
            strategy = new.concurrency_strategy
            key = task.concurrency_key
            if not is_new or key is None or strategy in (None, ConcurrencyStrategy.QUEUE):
                continue
            limit = self.limit_of(task)
            others = [
                t
                for t in await self.store.list_keyed_tasks(key, statuses=UNFINISHED)
                if t.id != task.id
            ]
            if len(others) < limit:
                continue
            if strategy is ConcurrencyStrategy.CANCEL_NEWEST:
                reason = (
                    f"concurrency key {key!r} already has {len(others)} unfinished tasks"
                    f" (limit {limit}; concurrency_strategy cancel_newest)"
                )
                results[index] = (await self._cancel(cancel, task, reason), True)
                continue
            # cancel_in_progress: keep the newest, cancel the oldest (running or queued)
            reason = f"cancelled to make room for {task.id} (concurrency key {key!r})"
            for old in others[: len(others) - limit + 1]:
                await self._cancel(cancel, old, reason)
        return results

    @staticmethod
    async def _cancel(cancel: Cancel, task: Task, reason: str) -> Task:
        try:
            return await cancel(task.id, reason)
        except TaskAlreadyFinished:  # it ended meanwhile: room was made anyway
            log.debug("task %s finished before its concurrency cancel", task.id)
            return task
