"""WorkflowService: submit, read, list, cancel and retry workflows (docs/workflows.md).

A thin service over the Store, built per request from the node's ``TaskQueue`` (whose store,
notifier, clock, dispatcher and payload limit it shares). Releasing steps needs no code here:
the Store does it in the transaction that finishes a step's last parent, and the finish wakes
every node's dispatcher as any finish does.
"""

from __future__ import annotations

import logging
from collections import Counter
from uuid import UUID

import orjson

from hetuflow.errors import PayloadTooLarge, TaskAlreadyFinished, WorkflowNotFound
from hetuflow.models import Page
from hetuflow.server.tasks import TaskQueue
from hetuflow.server.webhooks import check_webhook_target
from hetuflow.store.base import TASKS_READY
from hetuflow.workflows import NewWorkflow, Workflow, WorkflowSummary, check_workflow

log = logging.getLogger("hetuflow.workflows")


def check_payloads(workflow: NewWorkflow, limit: int | None) -> None:
    """``PayloadTooLarge`` naming the first step whose payload is over ``limit`` bytes."""
    if limit is None:
        return
    for step in workflow.steps:
        size = len(orjson.dumps(step.task.payload))
        if size > limit:
            raise PayloadTooLarge(
                f"step {step.name!r}: the payload is {size} bytes as JSON; the limit is"
                f" {limit} bytes ([server] max_payload_bytes)",
                field=f"steps.{step.name}.payload",
            )


class WorkflowService:
    def __init__(self, queue: TaskQueue) -> None:
        self._queue = queue

    async def submit(self, workflow: NewWorkflow) -> Workflow:
        """Check the document (``WorkflowInvalid`` naming the step, ``PayloadTooLarge``),
        create the workflow and every step in one transaction, then wake the dispatchers:
        the steps without parents are pending."""
        ordered = check_workflow(workflow)
        check_payloads(workflow, self._queue.max_payload_bytes)
        queue = self._queue
        if queue.webhooks is not None:
            for step in workflow.steps:
                check_webhook_target(
                    step.task.webhook_url, queue.webhooks, field=f"steps.{step.name}.webhook_url"
                )
        created = await queue.store.create_workflow(workflow, ordered, now=queue.clock.now())
        if queue.metrics is not None:
            queue.metrics.workflow_created()
            for task_type, count in Counter(s.task.task_type for s in created.steps).items():
                queue.metrics.task_submitted(task_type, count)
        if queue.dispatcher is not None:
            queue.dispatcher.wake()
        await self._publish_ready()
        return created

    async def get(self, workflow_id: UUID) -> Workflow:
        workflow = await self._queue.store.get_workflow(workflow_id)
        if workflow is None:
            raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
        return workflow

    async def list(self, *, limit: int, offset: int) -> Page[WorkflowSummary]:
        return await self._queue.store.list_workflows(limit=limit, offset=offset)

    async def cancel(self, workflow_id: UUID) -> Workflow:
        """Cancel the waiting and pending steps at once, then each active step through the
        task cancel path (its agent is told to stop; it ends ``cancelled`` when the agent
        confirms). ``WorkflowNotFound``, ``WorkflowAlreadyFinished``."""
        queue = self._queue
        workflow, active = await queue.store.cancel_workflow(workflow_id, now=queue.clock.now())
        for task_id in active:
            try:
                await queue.cancel(task_id)
            except TaskAlreadyFinished:
                continue  # it ended meanwhile
        if not active:
            return workflow
        return await self.get(workflow_id)

    async def retry(self, workflow_id: UUID) -> Workflow:
        """Start over what did not succeed and what depends on it, in one transaction
        (``Store.retry_workflow``), then wake the dispatchers. ``WorkflowNotFound``,
        ``WorkflowNotRetryable``."""
        queue = self._queue
        workflow, released = await queue.store.retry_workflow(workflow_id, now=queue.clock.now())
        if released:
            if queue.dispatcher is not None:
                queue.dispatcher.wake()
            await self._publish_ready()
        return workflow

    async def _publish_ready(self) -> None:
        try:
            await self._queue.notifier.publish(TASKS_READY)
        except Exception:
            log.warning("could not publish %s", TASKS_READY, exc_info=True)
