"""Cron job routes: create, list, get, change, delete, enable/disable, run now, next fires,
preview an expression, tick history. Thin: each parses, calls ``CronJobs``, serialises."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from hetuflow.errors import InvalidInput
from hetuflow.models import (
    MAX_CONCURRENCY_KEY_LENGTH,
    MAX_RATE_LIMITS_PER_TASK,
    MAX_RETRY_JITTER,
    ConcurrencyStrategy,
    CronJob,
    CronJobChanges,
    CronTick,
    FailureKind,
    MisfirePolicy,
    NewCronJob,
    OverlapPolicy,
    Priority,
    RetryPolicy,
    TaskStatus,
    TickOutcome,
    retry_on_of,
)
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import (
    MAX_BACKOFF_SECONDS,
    MAX_RETRIES,
    MAX_TIMEOUT_SECONDS,
    WEBHOOK_URL_DESCRIPTION,
    Label,
    Name,
    Payload,
    RateLimitUseOut,
    RateLimitUses,
    RetryBackoffMax,
    RetryJitter,
    RetryOn,
    TaskOut,
    WebhookUrl,
    retry_policy,
    storable_text,
)
from hetuflow.server.api.workflow_schemas import WorkflowCreate, workflow_document
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_jobs import CronJobs

router = APIRouter(prefix="/api/cron-jobs", tags=["cron jobs"])

MAX_FIRE_TIMES = 100
MAX_TICKS = 1000
MAX_CATCH_UP = 10_000
MAX_DEADLINE_SECONDS = 365 * 24 * 3600.0
_RETRY_FIELDS = frozenset(
    {
        "max_retries",
        "retry_backoff_seconds",
        "retry_backoff_max_seconds",
        "retry_jitter",
        "retry_on",
    }
)
_NULLABLE = frozenset(
    {
        "timeout_seconds",
        "start_deadline_seconds",
        "webhook_url",
        "concurrency_key",
        "max_concurrent_per_key",
    }
)

Expression = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(storable_text)
]
TimeZone = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(storable_text)
]

_EXPRESSION = (
    "5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, "
    "or a macro: @hourly @daily @midnight @weekly @monthly @yearly @annually. Checked when "
    "saved; a mistake is a 422 naming the field and why."
)
_TIMEZONE = (
    "IANA time zone the expression is read in. DST: a local time that does not exist fires "
    "once at the first instant after the gap; a repeated local time fires once (its first "
    "occurrence) unless the hour field is `*` or `*/n`, which follows elapsed time."
)
_MISFIRE = (
    "Ticks missed while no server ran or the job was disabled: `skip` them all, `run_once` "
    "(one task now for all of them; the default) or `catch_up` (one task per missed tick, the "
    "most recent `catch_up_limit`)."
)
_OVERLAP = (
    "A tick while the job's previous task is still pending or running: `allow` (default), "
    "`skip` the tick, `queue` (wait for it, at most one waiting) or `cancel_previous`."
)
_WORKFLOW = (
    "Instead of `task_type`: a workflow document, as `POST /api/workflows` takes it, checked"
    " when saved the same way (a 422 `workflow_invalid` naming the step). Each fired tick"
    " starts one such workflow, in the transaction that records the tick (`workflow_id` in"
    " the tick history). The task fields (`payload`, `priority`, ...) do not apply; the steps"
    " carry their own."
)
_WEBHOOK = f"Given to every task it creates. {WEBHOOK_URL_DESCRIPTION}"
_RATE_LIMITS = (
    "Named rate limits every task it creates spends from when dispatched (`units` each,"
    " default 1), as a task's `rate_limits`: an unknown name, or more units than the limit"
    " allows, is a 422 `rate_limit_unknown` and nothing is saved. Deleting a limit takes it"
    " out of the jobs that name it."
)
_STRATEGY = (
    "Given to every task it creates, as a task's `concurrency_strategy`: when the key is at its"
    " limit as the task is created, `queue` (wait; the default), `cancel_newest` (the new task"
    " is created cancelled) or `cancel_in_progress` (the oldest unfinished tasks with the key"
    " are cancelled to make room). Needs `concurrency_key`."
)
_DEADLINE = (
    "Skip a tick (recorded as skipped, with why) when its task could only start more than "
    "this many seconds after the tick. None: no deadline."
)


def _jobs(request: Request) -> CronJobs:
    context: ServerContext = request.app.state.context
    return CronJobs(context)


# --- bodies -----------------------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class CronJobCreate(_Input):
    """A cron job. The seed sends name, cron_expression, task_type, payload, enabled. A job
    that starts a workflow at each tick sends `workflow` instead of `task_type`."""

    name: Name = Field(description="Unique name of the cron job.", examples=["daily-backup"])
    cron_expression: Expression = Field(description=_EXPRESSION, examples=["0 2 * * *"])
    task_type: Name | None = Field(
        default=None,
        description="Task type of the tasks it creates; required unless `workflow` is given.",
        examples=["backup"],
    )
    workflow: WorkflowCreate | None = Field(
        default=None,
        description=_WORKFLOW,
    )
    payload: Payload = Field(
        default_factory=dict,
        description="JSON object given to every task it creates.",
        examples=[{"type": "full"}],
    )
    enabled: bool = Field(default=True, description="Disabled jobs do not fire.")
    timezone: TimeZone = Field(default="UTC", description=_TIMEZONE, examples=["Europe/Berlin"])
    priority: Priority = Field(default=Priority.NORMAL, description="Priority of its tasks.")
    required_capabilities: list[Label] = Field(
        default_factory=list,
        max_length=64,
        description="Only agents with every one of these capabilities run its tasks.",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="Execution limit of one attempt."
    )
    max_retries: int = Field(
        default=0, ge=0, le=MAX_RETRIES, description="Further attempts after a failure."
    )
    retry_backoff_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_BACKOFF_SECONDS,
        allow_inf_nan=False,
        description="Wait before the first retry, doubled each time; default "
        "`[scheduler] retry_interval_seconds`.",
    )
    retry_backoff_max_seconds: RetryBackoffMax = None
    retry_jitter: RetryJitter = 0.0
    retry_on: RetryOn = None
    misfire_policy: MisfirePolicy = Field(default=MisfirePolicy.RUN_ONCE, description=_MISFIRE)
    catch_up_limit: int = Field(
        default=1,
        ge=0,
        le=MAX_CATCH_UP,
        description="Most missed ticks run by `misfire_policy=catch_up`.",
    )
    overlap_policy: OverlapPolicy = Field(default=OverlapPolicy.ALLOW, description=_OVERLAP)
    start_deadline_seconds: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_SECONDS, description=_DEADLINE
    )
    webhook_url: WebhookUrl | None = Field(default=None, description=_WEBHOOK)
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONCURRENCY_KEY_LENGTH,
        description="Given to every task it creates: at most `max_concurrent_per_key` of "
        "them (and other tasks with the key) dispatched or running at once.",
    )
    max_concurrent_per_key: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The key's limit; default the `[concurrency]` limit of the task type, else 1.",
    )
    concurrency_strategy: ConcurrencyStrategy = Field(
        default=ConcurrencyStrategy.QUEUE, description=_STRATEGY
    )
    rate_limits: RateLimitUses = Field(
        default_factory=list,
        max_length=MAX_RATE_LIMITS_PER_TASK,
        description=_RATE_LIMITS,
        examples=[[{"name": "crm-api", "units": 1}]],
    )

    @model_validator(mode="after")
    def _key_with_limit(self) -> CronJobCreate:
        if self.max_concurrent_per_key is not None and self.concurrency_key is None:
            raise ValueError("max_concurrent_per_key needs a concurrency_key")
        if (
            self.concurrency_strategy is not ConcurrencyStrategy.QUEUE
            and self.concurrency_key is None
        ):
            raise ValueError("concurrency_strategy needs a concurrency_key")
        return self

    def _task_type_or_workflow(self) -> None:
        if (self.task_type is None) == (self.workflow is None):
            raise InvalidInput(
                "a cron job creates a task (task_type) or starts a workflow (workflow): give"
                " exactly one",
                field="task_type",
            )
        if self.workflow is not None and self.overlap_policy is not OverlapPolicy.ALLOW:
            raise InvalidInput(
                "overlap_policy applies to a job's previous task; a cron job that starts"
                " workflows takes only overlap_policy allow",
                field="overlap_policy",
            )

    def to_new_cron_job(self, default_backoff_seconds: float) -> NewCronJob:
        """The job to create (``InvalidInput`` unless it names exactly one of a task type
        and a workflow); its workflow document is checked by ``CronJobs.create``."""
        self._task_type_or_workflow()
        backoff = self.retry_backoff_seconds
        return NewCronJob(
            name=self.name,
            cron_expression=self.cron_expression,
            task_type=self.task_type or "",
            payload=self.payload,
            timezone=self.timezone,
            priority=self.priority,
            required_capabilities=tuple(dict.fromkeys(self.required_capabilities)),
            timeout_seconds=self.timeout_seconds,
            retry=retry_policy(
                max_retries=self.max_retries,
                backoff_seconds=default_backoff_seconds if backoff is None else backoff,
                max_backoff_seconds=self.retry_backoff_max_seconds,
                jitter=self.retry_jitter,
                retry_on=self.retry_on,
            ),
            enabled=self.enabled,
            misfire_policy=self.misfire_policy,
            catch_up_limit=self.catch_up_limit,
            overlap_policy=self.overlap_policy,
            start_deadline_seconds=self.start_deadline_seconds,
            webhook_url=self.webhook_url,
            concurrency_key=self.concurrency_key,
            max_concurrent_per_key=self.max_concurrent_per_key,
            concurrency_strategy=self.concurrency_strategy,
            workflow=None if self.workflow is None else workflow_document(self.workflow),
            rate_limits=tuple(use.to_use() for use in self.rate_limits),
        )


class CronJobUpdate(_Input):
    """Fields to change; those left out stay as they are. Changing the expression or the time
    zone restarts the schedule from now."""

    name: Name | None = None
    cron_expression: Expression | None = Field(default=None, description=_EXPRESSION)
    task_type: Name | None = Field(
        default=None, description="Makes a job that started workflows create tasks of this type."
    )
    workflow: WorkflowCreate | None = Field(
        default=None, description=f"{_WORKFLOW} Replaces the job's task type or workflow."
    )
    payload: Payload | None = None
    enabled: bool | None = None
    timezone: TimeZone | None = Field(default=None, description=_TIMEZONE)
    priority: Priority | None = None
    required_capabilities: list[Label] | None = Field(default=None, max_length=64)
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="null removes the limit."
    )
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    retry_backoff_seconds: float | None = Field(
        default=None, ge=0, le=MAX_BACKOFF_SECONDS, allow_inf_nan=False
    )
    retry_backoff_max_seconds: float | None = Field(
        default=None, ge=0, le=MAX_BACKOFF_SECONDS, allow_inf_nan=False
    )
    retry_jitter: float | None = Field(default=None, ge=0, le=MAX_RETRY_JITTER, allow_inf_nan=False)
    retry_on: list[FailureKind] | None = Field(default=None, max_length=16)
    misfire_policy: MisfirePolicy | None = Field(default=None, description=_MISFIRE)
    catch_up_limit: int | None = Field(default=None, ge=0, le=MAX_CATCH_UP)
    overlap_policy: OverlapPolicy | None = Field(default=None, description=_OVERLAP)
    start_deadline_seconds: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_SECONDS, description=f"{_DEADLINE} null removes it."
    )
    webhook_url: WebhookUrl | None = Field(
        default=None, description=f"{_WEBHOOK} null removes it (tasks already created keep theirs)."
    )
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONCURRENCY_KEY_LENGTH,
        description="null removes it (tasks already created keep theirs).",
    )
    max_concurrent_per_key: int | None = Field(
        default=None, ge=1, le=1_000_000, description="null: the `[concurrency]` default."
    )
    concurrency_strategy: ConcurrencyStrategy | None = Field(
        default=None,
        description=f"{_STRATEGY} Tasks already created keep theirs; removing the key needs"
        " `queue` too.",
    )
    rate_limits: RateLimitUses | None = Field(
        default=None,
        max_length=MAX_RATE_LIMITS_PER_TASK,
        description=f"{_RATE_LIMITS} Replaces the job's list (`[]` removes them; tasks already"
        " created keep theirs).",
    )

    def to_changes(self, job: CronJob) -> CronJobChanges:
        """The ``CronJobChanges`` of the fields sent (the others left ``UNSET``)."""
        changes: dict[str, Any] = {}
        for key in self.model_fields_set:
            value = getattr(self, key)
            if value is None and key not in _NULLABLE:
                raise InvalidInput(f"{key} cannot be null", field=key)
            if key in _RETRY_FIELDS:
                continue
            if key == "required_capabilities":
                value = tuple(dict.fromkeys(value))
            if key == "rate_limits":
                value = tuple(use.to_use() for use in value)
            if key == "workflow":
                value = workflow_document(value)
                changes["task_type"] = ""
            changes[key] = value
        if "task_type" in self.model_fields_set and job.workflow is not None:
            if "workflow" in self.model_fields_set:
                raise InvalidInput("give task_type or workflow, not both", field="task_type")
            changes["workflow"] = None  # a task job from now on
        if _RETRY_FIELDS & self.model_fields_set:
            retry = job.retry
            changes["retry"] = RetryPolicy(
                max_retries=self.max_retries if self.max_retries is not None else retry.max_retries,
                backoff_seconds=(
                    self.retry_backoff_seconds
                    if self.retry_backoff_seconds is not None
                    else retry.backoff_seconds
                ),
                backoff_factor=retry.backoff_factor,
                max_backoff_seconds=(
                    self.retry_backoff_max_seconds
                    if self.retry_backoff_max_seconds is not None
                    else retry.max_backoff_seconds
                ),
                jitter=self.retry_jitter if self.retry_jitter is not None else retry.jitter,
                retry_on=retry.retry_on if self.retry_on is None else retry_on_of(self.retry_on),
            )
        return CronJobChanges(**changes)


class CronJobOut(_Output):
    id: UUID
    name: str
    cron_expression: str
    timezone: str
    task_type: str | None = Field(description="Null for a job that starts workflows.")
    workflow: dict[str, Any] | None = Field(
        default=None,
        description="The workflow document each tick starts (as `POST /api/workflows`).",
    )
    payload: dict[str, Any]
    priority: Priority
    required_capabilities: list[str]
    timeout_seconds: float | None
    max_retries: int
    retry_backoff_seconds: float
    retry_backoff_max_seconds: float = Field(description="No retry waits longer.")
    retry_jitter: float = Field(description="The fraction of each backoff that is random (0..1).")
    retry_on: list[FailureKind] = Field(description="The kinds of failure that are retried.")
    enabled: bool
    misfire_policy: MisfirePolicy
    catch_up_limit: int
    overlap_policy: OverlapPolicy
    start_deadline_seconds: float | None
    webhook_url: str | None = Field(
        default=None, description="Given to every task it creates; null: none."
    )
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    concurrency_strategy: ConcurrencyStrategy = Field(
        default=ConcurrencyStrategy.QUEUE, description="Given to every task it creates."
    )
    rate_limits: list[RateLimitUseOut] = Field(
        default_factory=list, description="Given to every task it creates."
    )
    next_fire_at: datetime | None = Field(
        description="The next tick to be settled (fired or skipped). Null when disabled "
        "before its first tick."
    )
    last_fire_at: datetime | None = Field(description="Tick of the last task it created.")
    last_task_id: UUID | None = Field(description="Its last task (a tick's or a manual run).")
    last_outcome: TaskStatus | None = Field(
        description="Status of the last task; null if it never ran."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: CronJob, last_outcome: TaskStatus | None) -> CronJobOut:
        return cls(
            id=job.id,
            name=job.name,
            cron_expression=job.cron_expression,
            timezone=job.timezone,
            task_type=job.task_type if job.workflow is None else None,
            workflow=job.workflow,
            payload=job.payload,
            priority=job.priority,
            required_capabilities=list(job.required_capabilities),
            timeout_seconds=job.timeout_seconds,
            max_retries=job.retry.max_retries,
            retry_backoff_seconds=job.retry.backoff_seconds,
            retry_backoff_max_seconds=job.retry.max_backoff_seconds,
            retry_jitter=job.retry.jitter,
            retry_on=list(job.retry.retry_on),
            enabled=job.enabled,
            misfire_policy=job.misfire_policy,
            catch_up_limit=job.catch_up_limit,
            overlap_policy=job.overlap_policy,
            start_deadline_seconds=job.start_deadline_seconds,
            webhook_url=job.webhook_url,
            concurrency_key=job.concurrency_key,
            max_concurrent_per_key=job.max_concurrent_per_key,
            concurrency_strategy=job.concurrency_strategy,
            rate_limits=[RateLimitUseOut(name=u.name, units=u.units) for u in job.rate_limits],
            next_fire_at=job.next_fire_at,
            last_fire_at=job.last_fire_at,
            last_task_id=job.last_task_id,
            last_outcome=last_outcome,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class CronJobList(_Output):
    items: list[CronJobOut] = Field(description="Cron jobs by name.")
    total: int


class PreviewRequest(_Input):
    cron_expression: Expression = Field(description=_EXPRESSION, examples=["*/15 9-17 * * MON-FRI"])
    timezone: TimeZone = Field(default="UTC", description=_TIMEZONE)
    count: int = Field(default=5, ge=1, le=MAX_FIRE_TIMES, description="How many fire times.")


class FireTimes(_Output):
    cron_expression: str
    timezone: str
    fire_times: list[datetime] = Field(description="Next fire times after now, in UTC.")


class CronTickOut(_Output):
    cron_job_id: UUID
    tick_at: datetime = Field(description="The instant the schedule named.")
    outcome: TickOutcome = Field(
        description="`fired` (a task was created, or a workflow started) or `skipped`."
    )
    task_id: UUID | None
    workflow_id: UUID | None = Field(
        default=None, description="The workflow the tick started (a job with `workflow`)."
    )
    reason: str | None = Field(description="Why it was skipped, or how a late tick ran.")
    recorded_at: datetime

    @classmethod
    def of(cls, tick: CronTick) -> CronTickOut:
        return cls(
            cron_job_id=tick.cron_job_id,
            tick_at=tick.tick_at,
            outcome=tick.outcome,
            task_id=tick.task_id,
            workflow_id=tick.workflow_id,
            reason=tick.reason,
            recorded_at=tick.recorded_at,
        )


class CronTickList(_Output):
    items: list[CronTickOut] = Field(description="Newest tick first.")


# --- routes -----------------------------------------------------------------------------------


async def _out(jobs: CronJobs, job: CronJob) -> CronJobOut:
    outcomes = await jobs.last_outcomes([job])
    return CronJobOut.of(job, outcomes.get(job.id))


@router.post(
    "",
    status_code=201,
    response_model=CronJobOut,
    summary="Create a cron job",
    responses=error_responses(400, 409, 413, 422),
)
async def create_cron_job(body: CronJobCreate, request: Request) -> CronJobOut:
    """Create a cron job. **422** for an invalid expression or time zone, **409** if the
    name is taken."""
    jobs = _jobs(request)
    backoff = jobs.context.config.scheduler.retry_interval_seconds
    job = await jobs.create(body.to_new_cron_job(backoff))
    return CronJobOut.of(job, None)


@router.get("", response_model=CronJobList, summary="List cron jobs")
async def list_cron_jobs(request: Request) -> CronJobList:
    """Every cron job, by name, with its next and last fire and the last task's status."""
    jobs = _jobs(request)
    found = await jobs.list_jobs()
    outcomes = await jobs.last_outcomes(found)
    items = [CronJobOut.of(job, outcomes.get(job.id)) for job in found]
    return CronJobList(items=items, total=len(items))


@router.post(
    "/preview",
    response_model=FireTimes,
    summary="Preview an expression",
    responses=error_responses(400, 422),
)
async def preview(body: PreviewRequest, request: Request) -> FireTimes:
    """The next fire times of an expression in a time zone, without saving anything."""
    times = _jobs(request).preview(body.cron_expression, body.timezone, body.count)
    return FireTimes(cron_expression=body.cron_expression, timezone=body.timezone, fire_times=times)


@router.get(
    "/{cron_job_id}",
    response_model=CronJobOut,
    summary="Get a cron job",
    responses=error_responses(404, 422),
)
async def get_cron_job(cron_job_id: UUID, request: Request) -> CronJobOut:
    jobs = _jobs(request)
    return await _out(jobs, await jobs.get(cron_job_id))


@router.patch(
    "/{cron_job_id}",
    response_model=CronJobOut,
    summary="Change a cron job",
    responses=error_responses(400, 404, 409, 413, 422),
)
async def update_cron_job(cron_job_id: UUID, body: CronJobUpdate, request: Request) -> CronJobOut:
    """Change the fields sent. A new expression or time zone restarts the schedule from now."""
    jobs = _jobs(request)
    job = await jobs.get(cron_job_id)
    return await _out(jobs, await jobs.update(cron_job_id, body.to_changes(job)))


@router.delete(
    "/{cron_job_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a cron job",
    responses=error_responses(404, 422),
)
async def delete_cron_job(cron_job_id: UUID, request: Request) -> Response:
    """Delete the job and its tick history. Tasks it created are kept."""
    await _jobs(request).delete(cron_job_id)
    return Response(status_code=204)


@router.post(
    "/{cron_job_id}/enable",
    response_model=CronJobOut,
    summary="Enable a cron job",
    responses=error_responses(404, 422),
)
async def enable_cron_job(cron_job_id: UUID, request: Request) -> CronJobOut:
    """Ticks missed while it was disabled are handled by its misfire policy."""
    jobs = _jobs(request)
    return await _out(jobs, await jobs.set_enabled(cron_job_id, True))


@router.post(
    "/{cron_job_id}/disable",
    response_model=CronJobOut,
    summary="Disable a cron job",
    responses=error_responses(404, 422),
)
async def disable_cron_job(cron_job_id: UUID, request: Request) -> CronJobOut:
    jobs = _jobs(request)
    return await _out(jobs, await jobs.set_enabled(cron_job_id, False))


@router.post(
    "/{cron_job_id}/trigger",
    status_code=201,
    response_model=TaskOut,
    summary="Run a cron job now",
    responses=error_responses(404, 422),
)
async def trigger_cron_job(cron_job_id: UUID, request: Request) -> TaskOut:
    """Create one task from the job now, outside its schedule (also when disabled)."""
    return TaskOut.of(await _jobs(request).trigger(cron_job_id))


@router.get(
    "/{cron_job_id}/next-fires",
    response_model=FireTimes,
    summary="Next fire times of a cron job",
    responses=error_responses(404, 422),
)
async def next_fires(
    cron_job_id: UUID,
    request: Request,
    count: Annotated[int, Query(ge=1, le=MAX_FIRE_TIMES, description="How many.")] = 5,
) -> FireTimes:
    jobs = _jobs(request)
    job = await jobs.get(cron_job_id)
    times = jobs.preview(job.cron_expression, job.timezone, count)
    return FireTimes(cron_expression=job.cron_expression, timezone=job.timezone, fire_times=times)


@router.get(
    "/{cron_job_id}/ticks",
    response_model=CronTickList,
    summary="Tick history of a cron job",
    responses=error_responses(404, 422),
)
async def ticks(
    cron_job_id: UUID,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_TICKS, description="Most recent ticks.")] = 50,
) -> CronTickList:
    """Settled ticks, newest first: fired (with the task) or skipped (with why)."""
    found = await _jobs(request).ticks(cron_job_id, limit)
    return CronTickList(items=[CronTickOut.of(tick) for tick in found])
