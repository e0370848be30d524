"""Bulk task routes: cancel or retry many tasks (by id, or all matching a filter)."""

from __future__ import annotations

from typing import Annotated, Self
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from hetuflow.models import MAX_CONCURRENCY_KEY_LENGTH, TaskFilter, TaskStatus
from hetuflow.server.api.deps import Queue
from hetuflow.server.api.errors import error_responses, status_for
from hetuflow.server.api.schemas import (
    FINAL_DESCRIPTION,
    RateLimitName,
    TaskOut,
    _Input,
    _Output,
    storable_text,
    utc_datetime,
)
from hetuflow.server.bulk import BulkActions, BulkResult

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

FilterText = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable_text)
]
FilterKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CONCURRENCY_KEY_LENGTH),
    AfterValidator(storable_text),
]
FilterDatetime = Annotated[AwareDatetime, AfterValidator(utc_datetime)]


class BulkFilter(_Input):
    """The filters of `GET /api/tasks`, as a JSON object."""

    status: list[TaskStatus] = Field(default_factory=list)
    task_type: FilterText | None = None
    agent_id: UUID | None = None
    cron_job_id: UUID | None = None
    created_after: FilterDatetime | None = None
    created_before: FilterDatetime | None = None
    q: FilterText | None = Field(
        default=None,
        description="Text in the name, task type, payload, result or error (any case).",
    )
    concurrency_key: FilterKey | None = Field(
        default=None, description="Only tasks with this concurrency key (exactly)."
    )
    rate_limit: RateLimitName | None = Field(
        default=None, description="Only tasks that name this rate limit."
    )
    final: bool = Field(default=False, description=FINAL_DESCRIPTION)

    def to_filter(self) -> TaskFilter:
        return TaskFilter(
            statuses=tuple(dict.fromkeys(self.status)),
            task_type=self.task_type,
            agent_id=self.agent_id,
            cron_job_id=self.cron_job_id,
            created_after=self.created_after,
            created_before=self.created_before,
            text=self.q,
            concurrency_key=self.concurrency_key,
            rate_limit=self.rate_limit,
            final=self.final,
        )


class BulkRequest(_Input):
    ids: list[UUID] | None = Field(
        default=None, description="These tasks (at most `[server] max_batch_tasks`)."
    )
    filter: BulkFilter | None = Field(
        default=None,
        description="Every task matching it, newest first, at most `[server] max_batch_tasks`"
        " per request (`truncated` says when more matched).",
    )

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or filter")
        return self


class BulkError(_Output):
    code: str
    message: str
    status: int = Field(description="The HTTP status the single-task route would answer.")


class BulkItem(_Output):
    id: UUID
    ok: bool
    task: TaskOut | None = Field(
        default=None, description="Cancel: the task as it is now. Retry: the new task."
    )
    error: BulkError | None = None


class BulkOut(_Output):
    items: list[BulkItem] = Field(description="One per task acted on, in request order.")
    succeeded: int
    failed: int
    matched: int = Field(description="Tasks named, or matching the filter over all pages.")
    truncated: bool = Field(description="The filter matched more: repeat the request.")

    @classmethod
    def of(cls, result: BulkResult) -> BulkOut:
        items = [
            BulkItem(
                id=outcome.task_id,
                ok=outcome.error is None,
                task=None if outcome.task is None else TaskOut.of(outcome.task),
                error=None
                if outcome.error is None
                else BulkError(
                    code=outcome.error.code,
                    message=outcome.error.message,
                    status=status_for(outcome.error),
                ),
            )
            for outcome in result.outcomes
        ]
        ok = sum(item.ok for item in items)
        return cls(
            items=items,
            succeeded=ok,
            failed=len(items) - ok,
            matched=result.matched,
            truncated=result.truncated,
        )


async def get_bulk_actions(queue: Queue) -> BulkActions:
    return BulkActions(queue)


Bulk = Annotated[BulkActions, Depends(get_bulk_actions)]


@router.post(
    "/bulk-cancel",
    response_model=BulkOut,
    summary="Cancel many tasks",
    responses=error_responses(400, 413, 422),
)
async def bulk_cancel(body: BulkRequest, bulk: Bulk) -> BulkOut:
    """Cancel each task as `DELETE /api/tasks/{id}` would, one outcome per task: `ok` with the
    task (`cancelled`, or `cancelling` while its agent stops it), or the `error` the single
    route would answer (`task_already_finished`, `task_not_found`). A `filter` only selects
    unfinished tasks (its `status` list, if given, is narrowed to those). At most
    `[server] max_batch_tasks` tasks per request: more `ids` is a 422; a filter matching more
    acts on the newest ones and answers `truncated: true`."""
    selection = body.filter.to_filter() if body.filter is not None else None
    return BulkOut.of(await bulk.cancel(ids=body.ids, query=selection))


@router.post(
    "/bulk-retry",
    response_model=BulkOut,
    summary="Retry many tasks",
    responses=error_responses(400, 413, 422),
)
async def bulk_retry(body: BulkRequest, bulk: Bulk) -> BulkOut:
    """Retry each task as `POST /api/tasks/{id}/retry` would (a new task with the same spec),
    one outcome per task: `ok` with the new task, or the `error` (`task_not_retryable` for a
    task that is not failed, timed out, cancelled or quarantined; `task_not_found`). A `filter`
    only selects failed, timed-out, cancelled and quarantined tasks. Bounded as `bulk-cancel`.
    `{"filter": {"final": true}}` retries the dead letters: each retried task leaves that view
    (its new task names it in `replay_of`), so repeating a truncated request goes on with the
    next ones."""
    selection = body.filter.to_filter() if body.filter is not None else None
    return BulkOut.of(await bulk.retry(ids=body.ids, query=selection))
