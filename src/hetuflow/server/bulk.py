"""Bulk cancel and retry: many tasks by id, or every task matching a filter, one outcome each.

Each task goes through the same service call as its single-task route (``TaskQueue.cancel``,
``TaskQueue.retry``), so a bulk action means exactly what repeating the single action would,
and one task's refusal (already finished, not retryable, gone) never stops the others. The
number of tasks per request is bounded by ``[server] max_batch_tasks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from hetuflow.errors import HetuflowError, InvalidInput, Unavailable
from hetuflow.models import TERMINAL_TASK_STATUSES, Task, TaskFilter, TaskStatus
from hetuflow.server.tasks import RETRYABLE_STATUSES, TaskQueue

CANCELLABLE_STATUSES = tuple(s for s in TaskStatus if s not in TERMINAL_TASK_STATUSES)
"""What a bulk cancel by filter selects (a finished task cannot be cancelled)."""
RETRY_SELECTED_STATUSES = tuple(s for s in TaskStatus if s in RETRYABLE_STATUSES)
"""What a bulk retry by filter selects."""


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """One task's result: ``task`` (the cancelled task, or the new one a retry created), or
    the ``error`` its single-task route would have answered."""

    task_id: UUID
    task: Task | None = None
    error: HetuflowError | None = None


@dataclass(frozen=True, slots=True)
class BulkResult:
    outcomes: list[BulkOutcome]
    matched: int
    """How many tasks the request named (ids) or the filter matched (over all pages)."""
    truncated: bool
    """A filter matched more than one request may act on: repeat it for the rest."""


class BulkActions:
    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue

    @property
    def limit(self) -> int:
        return self.queue.max_batch_tasks

    async def cancel(
        self, *, ids: Sequence[UUID] | None = None, query: TaskFilter | None = None
    ) -> BulkResult:
        """Cancel each task (as ``DELETE /api/tasks/{id}``). A filter only selects tasks that
        have not finished (its statuses, if any, narrowed to those)."""
        return await self._each(self.queue.cancel, ids, query, CANCELLABLE_STATUSES)

    async def retry(
        self, *, ids: Sequence[UUID] | None = None, query: TaskFilter | None = None
    ) -> BulkResult:
        """Retry each task (as ``POST /api/tasks/{id}/retry``). A filter only selects failed,
        timed-out and cancelled tasks (its statuses, if any, narrowed to those)."""
        return await self._each(self.queue.retry, ids, query, RETRY_SELECTED_STATUSES)

    async def _each(
        self,
        act: Callable[[UUID], Awaitable[Task]],
        ids: Sequence[UUID] | None,
        query: TaskFilter | None,
        selectable: tuple[TaskStatus, ...],
    ) -> BulkResult:
        if (ids is None) == (query is None):
            raise InvalidInput("give either ids or a filter", field="ids")
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            if not wanted:
                raise InvalidInput("give at least one id", field="ids")
            if len(wanted) > self.limit:
                raise InvalidInput(
                    f"at most {self.limit} tasks per request, got {len(wanted)}"
                    " ([server] max_batch_tasks)",
                    field="ids",
                )
            matched, truncated = len(wanted), False
        else:
            assert query is not None
            statuses = tuple(s for s in (query.statuses or selectable) if s in selectable)
            if not statuses:
                return BulkResult([], 0, False)
            page = await self.queue.list(
                dataclasses.replace(query, statuses=statuses), limit=self.limit, offset=0
            )
            wanted = [task.id for task in page.items]
            matched = len(wanted) if page.total is None else page.total
            truncated = matched > len(wanted)
        outcomes: list[BulkOutcome] = []
        for task_id in wanted:
            try:
                outcomes.append(BulkOutcome(task_id, task=await act(task_id)))
            except HetuflowError as error:
                if isinstance(error, Unavailable):
                    raise  # the database is down: a 503 for the whole request
                outcomes.append(BulkOutcome(task_id, error=error))
        return BulkResult(outcomes, matched, truncated)
