"""CronJobs: create, change, enable, disable, delete and run cron jobs; preview fire times.

Used by the REST routes (``hetuflow.server.api.cron_jobs``). Firing the ticks is the loop's
job: ``hetuflow.server.cron_service.CronService``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from hetuflow.cron import parse
from hetuflow.errors import CronJobNotFound, InvalidInput, PayloadTooLarge, WorkflowInvalid
from hetuflow.models import (
    UNSET,
    ConcurrencyLimits,
    ConcurrencyStrategy,
    CronJob,
    CronJobChanges,
    CronTick,
    NewCronJob,
    OverlapPolicy,
    Task,
    TaskStatus,
)
from hetuflow.server.api.workflow_schemas import workflow_from_document
from hetuflow.server.concurrency import ConcurrencyKeys
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_policy import cron_task
from hetuflow.server.tasks import TaskQueue
from hetuflow.server.webhooks import check_webhook_target
from hetuflow.server.workflows import check_payloads
from hetuflow.store.base import CRON_CHANGED
from hetuflow.workflows import NewWorkflow, check_workflow

log = logging.getLogger("hetuflow.cron")


class CronJobs:
    """Create, change, enable, disable, delete and run cron jobs; preview fire times.

    Every change is validated here (``CronExpressionInvalid``, ``TimeZoneInvalid``) and
    followed by ``CRON_CHANGED`` so the cron loop of every node re-reads the next fire time.

    ``next_fire_at`` rules: a new enabled job starts at its first tick after now; a job
    created disabled, or whose schedule changes while disabled, has none until it is enabled
    (it starts fresh then); a job disabled after it was scheduled keeps its ``next_fire_at``,
    so enabling it again applies the misfire policy to the ticks missed meanwhile.
    """

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.store = context.store
        self.clock = context.clock
        self.tasks = TaskQueue(
            context.store,
            context.notifier,
            context.clock,
            context.config.scheduler,
            metrics=context.metrics,
            concurrency=ConcurrencyKeys(
                context.store, ConcurrencyLimits(dict(context.config.concurrency))
            ),
        )

    async def create(self, job: NewCronJob) -> CronJob:
        check_webhook_target(job.webhook_url, self.context.config.webhooks, field="webhook_url")
        _no_webhook_with_workflow(job.workflow, job.webhook_url)
        if (
            job.concurrency_key is None
            and job.concurrency_strategy is not ConcurrencyStrategy.QUEUE
        ):
            raise InvalidInput(
                "concurrency_strategy needs a concurrency_key", field="concurrency_strategy"
            )
        if job.workflow is not None:
            self.workflow_of(job.workflow)
        schedule = parse(job.cron_expression, job.timezone)
        now = self.clock.now()
        first = schedule.next_after(now) if job.enabled else None
        created = await self.store.create_cron_job(job, next_fire_at=first, now=now)
        await self._changed()
        return created

    async def get(self, cron_job_id: UUID) -> CronJob:
        job = await self.store.get_cron_job(cron_job_id)
        if job is None:
            raise CronJobNotFound(f"no cron job with id {cron_job_id}", field="cron_job_id")
        return job

    async def list_jobs(self) -> list[CronJob]:
        return await self.store.list_cron_jobs()

    async def update(self, cron_job_id: UUID, changes: CronJobChanges) -> CronJob:
        """Apply ``changes`` (``enabled`` included); the job's next fire time follows."""
        job = await self.get(cron_job_id)
        if changes.workflow is not UNSET and changes.workflow is not None:
            self.workflow_of(changes.workflow)
        workflow = job.workflow if changes.workflow is UNSET else changes.workflow
        if changes.webhook_url is not UNSET:
            check_webhook_target(
                changes.webhook_url, self.context.config.webhooks, field="webhook_url"
            )
        _no_webhook_with_workflow(
            workflow, job.webhook_url if changes.webhook_url is UNSET else changes.webhook_url
        )
        overlap = job.overlap_policy if changes.overlap_policy is UNSET else changes.overlap_policy
        if workflow is not None and overlap is not OverlapPolicy.ALLOW:
            raise InvalidInput(
                "overlap_policy applies to a job's previous task; a cron job that starts"
                " workflows takes only overlap_policy allow",
                field="overlap_policy",
            )
        key = job.concurrency_key if changes.concurrency_key is UNSET else changes.concurrency_key
        limit = (
            job.max_concurrent_per_key
            if changes.max_concurrent_per_key is UNSET
            else changes.max_concurrent_per_key
        )
        if key is None and limit is not None:
            raise InvalidInput(
                "max_concurrent_per_key needs a concurrency_key (removing the key: send"
                " max_concurrent_per_key null too)",
                field="max_concurrent_per_key",
            )
        strategy = (
            job.concurrency_strategy
            if changes.concurrency_strategy is UNSET
            else changes.concurrency_strategy
        )
        if key is None and strategy is not ConcurrencyStrategy.QUEUE:
            raise InvalidInput(
                f"concurrency_strategy {strategy.value} needs a concurrency_key (removing the"
                " key: send concurrency_strategy queue too)",
                field="concurrency_strategy",
            )
        expression = (
            job.cron_expression if changes.cron_expression is UNSET else changes.cron_expression
        )
        timezone = job.timezone if changes.timezone is UNSET else changes.timezone
        schedule = parse(expression, timezone)
        enabled = job.enabled if changes.enabled is UNSET else changes.enabled
        rescheduled = expression != job.cron_expression or timezone != job.timezone
        now = self.clock.now()
        if not enabled:
            if rescheduled:
                changes = replace(changes, next_fire_at=None)
        elif rescheduled or job.next_fire_at is None:
            # Start fresh after the last recorded fire (ticks may be fired ahead of now).
            start = max(now, job.last_fire_at) if job.last_fire_at is not None else now
            changes = replace(changes, next_fire_at=schedule.next_after(start))
        if changes.empty:
            return job
        updated = await self.store.update_cron_job(cron_job_id, changes, now=now)
        await self._changed()
        return updated

    async def set_enabled(self, cron_job_id: UUID, enabled: bool) -> CronJob:
        return await self.update(cron_job_id, CronJobChanges(enabled=enabled))

    async def delete(self, cron_job_id: UUID) -> None:
        await self.store.delete_cron_job(cron_job_id)
        await self._changed()

    async def trigger(self, cron_job_id: UUID) -> Task:
        """Run the job now, outside its schedule: a task linked to the job, no tick.

        It becomes the job's last task, so the overlap policy of the next tick sees it."""
        job = await self.get(cron_job_id)
        if job.workflow is not None:
            raise InvalidInput(
                f"cron job {job.name!r} starts workflows; run now creates a task: submit its"
                " workflow with POST /api/workflows instead",
                field="cron_job_id",
            )
        task, _ = await self.tasks.create(cron_task(job, None, None))
        await self.store.update_cron_job(
            cron_job_id, CronJobChanges(last_task_id=task.id), now=self.clock.now()
        )
        await self._changed()
        return task

    def workflow_of(self, document: dict[str, Any]) -> NewWorkflow:
        """The workflow a tick of a job with this document starts now; ``WorkflowInvalid``
        (its field under ``workflow.``) or ``PayloadTooLarge`` as ``POST /api/workflows``."""
        scheduler = self.context.config.scheduler
        workflow = workflow_from_document(
            document, now=self.clock.now(), default_backoff_seconds=scheduler.retry_interval_seconds
        )
        try:
            check_workflow(workflow)
            check_payloads(workflow, self.context.config.server.max_payload_bytes)
        except (WorkflowInvalid, PayloadTooLarge) as error:
            field = f"workflow.{error.field}" if error.field else "workflow"
            raise type(error)(error.message, field=field) from error
        return workflow

    def preview(self, expression: str, timezone: str, count: int) -> list[datetime]:
        """The next ``count`` fire times after now of an expression in a time zone."""
        return parse(expression, timezone).fire_times(self.clock.now(), count)

    async def ticks(self, cron_job_id: UUID, limit: int) -> list[CronTick]:
        await self.get(cron_job_id)
        return await self.store.list_cron_ticks(cron_job_id, limit=limit)

    async def last_outcomes(self, jobs: Sequence[CronJob]) -> dict[UUID, TaskStatus]:
        """The status of each job's last task (jobs that never ran are left out)."""
        outcomes: dict[UUID, TaskStatus] = {}
        for job in jobs:
            if job.last_task_id is not None:
                task = await self.store.get_task(job.last_task_id)
                if task is not None:
                    outcomes[job.id] = task.status
        return outcomes

    async def _changed(self) -> None:
        try:
            await self.context.notifier.publish(CRON_CHANGED)
        except Exception:
            log.warning("could not publish %s", CRON_CHANGED, exc_info=True)


def _no_webhook_with_workflow(workflow: object, webhook_url: str | None) -> None:
    if workflow is not None and webhook_url is not None:
        raise InvalidInput(
            "webhook_url is given to the tasks a cron job creates; a cron job that starts"
            " workflows takes none",
            field="webhook_url",
        )
