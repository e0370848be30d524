"""The SDK's bulk actions and replay (docs/api.md#bulk-actions): cancel or retry many tasks at
once, by id or by the filters of ``list_tasks`` (``final=True``: the dead letters), and replay
a finished task. Shared by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from hetuflow.client.calls import Call, jsonable, parse_one
from hetuflow.client.models import Task
from hetuflow.models import TaskStatus


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class BulkError(_Model):
    code: str
    """What the single-task route would answer: ``task_already_finished``,
    ``task_not_retryable``, ``task_not_found``..."""
    message: str
    status: int


class BulkItem(_Model):
    id: UUID
    ok: bool
    task: Task | None = None
    """Cancel: the task as it is now. Retry: the new task."""
    error: BulkError | None = None


class BulkResult(_Model):
    """One outcome per task acted on, in request order (newest first for a filter)."""

    items: list[BulkItem] = []
    succeeded: int
    failed: int
    matched: int
    """Tasks named, or matching the filter over all pages."""
    truncated: bool
    """The filter matched more than one request acts on (``[server] max_batch_tasks``):
    call again for the rest."""


def bulk_body(
    ids: Sequence[UUID | str] | None,
    *,
    status: TaskStatus | str | Sequence[TaskStatus | str] | None,
    task_type: str | None,
    agent_id: UUID | str | None,
    cron_job_id: UUID | str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    q: str | None,
    final: bool | None,
    concurrency_key: str | None,
    rate_limit: str | None,
) -> dict[str, Any]:
    """``{"ids": [...]}`` when ids are given, else ``{"filter": {...}}`` of the filters set
    (an empty filter: every task the action applies to, newest first)."""
    selection = {
        "status": [status] if isinstance(status, str) else status,
        "task_type": task_type,
        "agent_id": agent_id,
        "cron_job_id": cron_job_id,
        "created_after": created_after,
        "created_before": created_before,
        "q": q,
        "final": final,
        "concurrency_key": concurrency_key,
        "rate_limit": rate_limit,
    }
    chosen = {key: value for key, value in selection.items() if value is not None}
    if ids is not None:
        if chosen:
            raise ValueError("give either ids or filters, not both")
        return {"ids": [str(task_id) for task_id in ids]}
    filters: dict[str, Any] = jsonable(chosen)
    if isinstance(filters.get("status"), list):
        filters["status"] = [str(item) for item in filters["status"]]
    return {"filter": filters}


class BulkCalls:
    @staticmethod
    def act(action: Literal["cancel", "retry"], body: dict[str, Any]) -> Call[BulkResult]:
        return Call("POST", f"/api/tasks/bulk-{action}", parse_one(BulkResult), body=body)

    @staticmethod
    def replay(task_id: UUID | str) -> Call[Task]:
        return Call("POST", f"/api/tasks/{task_id}/replay", parse_one(Task))
