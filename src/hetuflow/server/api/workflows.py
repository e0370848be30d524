"""Workflow routes: submit, list, get, cancel, retry (docs/workflows.md)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from hetuflow.server.api.deps import Context, Queue
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.workflow_schemas import (
    WorkflowCreate,
    WorkflowOut,
    WorkflowPage,
    WorkflowSummaryOut,
)
from hetuflow.server.workflows import WorkflowService

router = APIRouter(prefix="/api/workflows", tags=["workflows"])


async def get_workflows(queue: Queue) -> WorkflowService:
    return WorkflowService(queue)


Workflows = Annotated[WorkflowService, Depends(get_workflows)]


@router.post(
    "",
    status_code=201,
    response_model=WorkflowOut,
    summary="Submit a workflow",
    responses=error_responses(400, 413, 422),
)
async def create_workflow(
    body: WorkflowCreate, workflows: Workflows, context: Context
) -> WorkflowOut:
    """Create the workflow and every step in one transaction. Steps without `depends_on`
    are pending at once; the others are `waiting` until their parents have ended, and are
    released in the transaction that records the last parent's result. A released step's
    task frame carries `parents`: `{step name: result}`."""
    new = body.to_new_workflow(
        now=context.clock.now(),
        default_backoff_seconds=context.config.scheduler.retry_interval_seconds,
    )
    return WorkflowOut.of_workflow(await workflows.submit(new))


@router.get(
    "", response_model=WorkflowPage, summary="List workflows", responses=error_responses(422)
)
async def list_workflows(
    workflows: Workflows,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> WorkflowPage:
    """Newest first, each with its status and its steps counted by status."""
    page = await workflows.list(limit=limit, offset=offset)
    return WorkflowPage(
        items=[WorkflowSummaryOut.of(w) for w in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{workflow_id}",
    response_model=WorkflowOut,
    summary="Get a workflow and its steps",
    responses=error_responses(404, 422),
)
async def get_workflow(workflow_id: UUID, workflows: Workflows) -> WorkflowOut:
    """The workflow's status and every step with its status, timings, result and error."""
    return WorkflowOut.of_workflow(await workflows.get(workflow_id))


@router.delete(
    "/{workflow_id}",
    response_model=WorkflowOut,
    summary="Cancel a workflow",
    responses=error_responses(404, 409, 422),
)
async def cancel_workflow(workflow_id: UUID, workflows: Workflows) -> WorkflowOut:
    """Cancel every waiting and pending step at once and every running one through the task
    cancel path (its agent is told to stop). **409** when every step has already ended."""
    return WorkflowOut.of_workflow(await workflows.cancel(workflow_id))


@router.post(
    "/{workflow_id}/retry",
    response_model=WorkflowOut,
    summary="Retry a workflow from the steps that did not succeed",
    responses=error_responses(404, 409, 422),
)
async def retry_workflow(workflow_id: UUID, workflows: Workflows) -> WorkflowOut:
    """In one transaction, every step that failed, timed out, was cancelled or was skipped,
    and every step that depends on one of them, goes back to `waiting` (results, errors and
    retry budget cleared); those whose parents all succeeded are released at once (`pending`,
    with the kept parents' results) or decided again by their `run_if`. Steps that succeeded
    are kept. A cancelled workflow runs again. **409** `workflow_not_retryable` while a step
    has not ended, or when every step succeeded."""
    return WorkflowOut.of_workflow(await workflows.retry(workflow_id))
