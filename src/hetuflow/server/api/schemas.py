"""Request and response bodies of the REST API (pydantic), and their mapping to the domain.

Inputs forbid unknown fields (a typo is a 422 naming the field, not a silently ignored
option). Every string that reaches the database is checked to be storable on both databases
(no NUL character, no lone surrogate), and every payload to be plain JSON (finite numbers,
integers within 64 bits), so no input can fail later inside the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from hetuflow.models import (
    MAX_CONCURRENCY_KEY_LENGTH,
    MAX_RATE_LIMIT_NAME_LENGTH,
    MAX_RATE_LIMITS_PER_TASK,
    MAX_RETRY_JITTER,
    Agent,
    AgentStatus,
    Attempt,
    AttemptOutcome,
    BroadcastPolicy,
    ConcurrencyStrategy,
    FailureKind,
    JSONObject,
    LogLine,
    NewAgent,
    NewBroadcast,
    NewTask,
    PendingReason,
    Priority,
    RateLimitUse,
    RetryPolicy,
    Stats,
    Task,
    TaskStatus,
    retry_on_of,
)
from hetuflow.webhooks import (
    MAX_WEBHOOK_URL_LENGTH,
    DeliveryState,
    WebhookDelivery,
    check_webhook_url,
)

MAX_DELAY_SECONDS = 10 * 365 * 24 * 3600.0
MAX_TIMEOUT_SECONDS = 365 * 24 * 3600.0
MAX_BACKOFF_SECONDS = 30 * 24 * 3600.0
MAX_RETRIES = 1000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- storable values --------------------------------------------------------------------------


def storable_text(value: str) -> str:
    """Refuse what PostgreSQL or SQLite could not store as text."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogate escapes)") from None
    return value


def storable_json(value: Any) -> Any:
    """Refuse JSON values the stores cannot keep: NaN/Infinity, huge integers, bad text."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        where = f" (at {path})" if path else ""
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, f"{path}.{key}" if path else str(key), "a key")
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str):
            _check_text(item, path, "a string")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT64_MIN <= item <= _INT64_MAX:
                raise ValueError(f"integers must fit in 64 bits{where}")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"numbers must be finite (no NaN or Infinity){where}")
    return value


def _check_text(text: str, path: str, what: str) -> None:
    try:
        storable_text(text)
    except ValueError as error:
        where = f" (at {path})" if path else ""
        raise ValueError(f"{what} {error}{where}") from None


def utc_datetime(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("datetime is out of range") from None


Text = Annotated[str, AfterValidator(storable_text)]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable_text)
]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(storable_text)
]
Payload = Annotated[JSONObject, AfterValidator(storable_json)]
RateLimitName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_RATE_LIMIT_NAME_LENGTH),
    AfterValidator(storable_text),
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(utc_datetime)]

WEBHOOK_URL_DESCRIPTION = (
    "POST the task's final status here once it ends (succeeded, failed or timed out with no "
    "retry left, cancelled, skipped, quarantined; not a failed attempt that is retried), "
    "signed with the server's `[webhooks] secret`, retried with backoff until the receiver "
    "answers 2xx (docs/webhooks.md). An absolute http:// or https:// URL with a host, no "
    "credentials, no fragment, at most 2048 characters; 422 when the server has no "
    "`[webhooks] secret` or the host is not in `[webhooks] allowed_hosts`."
)


def _webhook_url(value: str) -> str:
    return check_webhook_url(storable_text(value))


WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH),
    AfterValidator(_webhook_url),
]
"""``webhook_url`` of a task or cron job create."""


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- retry policies (tasks and cron jobs) ------------------------------------------------------

RETRY_BACKOFF_MAX_DESCRIPTION = (
    "The cap of the exponential backoff: no retry waits longer (default 3600). A cap below "
    "`retry_backoff_seconds` makes every wait the cap."
)
RETRY_JITTER_DESCRIPTION = (
    "How much of each backoff is random, 0..1 (default 0): each wait is the delay times "
    "`1 - retry_jitter * u`, `u` uniform in [0, 1) drawn per retry. 1 is full jitter "
    "(anywhere from 0 to the delay), 0.2 spreads retries over the last fifth before it; a "
    "wait never exceeds the cap. Spreads the retries of tasks that failed together."
)
RETRY_ON_DESCRIPTION = (
    "The kinds of failure that are retried (default all three): `failed` (the handler "
    "failed), `timed_out` (past `timeout_seconds`), `agent_lost` (its agent vanished while "
    "holding it). An attempt that ends with a kind not listed ends the task at once: "
    "`failed` or `timed_out` (`failed` for a lost agent), its `error` ending with "
    "`not retried: retry_on does not include <kind>`. A lost attempt that is retried does not "
    "spend `max_retries`; `[]` retries nothing."
)


RetryBackoffMax = Annotated[
    float | None,
    Field(
        ge=0, le=MAX_BACKOFF_SECONDS, allow_inf_nan=False, description=RETRY_BACKOFF_MAX_DESCRIPTION
    ),
]
"""``retry_backoff_max_seconds`` of a task or cron job create (default None: 3600)."""
RetryJitter = Annotated[
    float,
    Field(ge=0, le=MAX_RETRY_JITTER, allow_inf_nan=False, description=RETRY_JITTER_DESCRIPTION),
]
"""``retry_jitter`` of a task or cron job create (default 0)."""
RetryOn = Annotated[
    list[FailureKind] | None, Field(max_length=16, description=RETRY_ON_DESCRIPTION)
]
"""``retry_on`` of a task or cron job create (default None: every kind)."""


def retry_policy(
    *,
    max_retries: int,
    backoff_seconds: float,
    max_backoff_seconds: float | None,
    jitter: float,
    retry_on: Sequence[FailureKind] | None,
) -> RetryPolicy:
    """The retry policy of a task or cron job from its API fields (None: the default)."""
    default = RetryPolicy()
    return RetryPolicy(
        max_retries=max_retries,
        backoff_seconds=backoff_seconds,
        max_backoff_seconds=default.max_backoff_seconds
        if max_backoff_seconds is None
        else max_backoff_seconds,
        jitter=jitter,
        retry_on=default.retry_on if retry_on is None else retry_on_of(retry_on),
    )


FINAL_DESCRIPTION = (
    "Only dead letters: tasks that ended `failed`, `timed_out` or `quarantined` (no automatic "
    "retry left: `max_retries` spent, a failure kind not in `retry_on`, or a poison task) and "
    "that no task retries or replays yet (none names them in `replay_of`). A `status` filter "
    "narrows it (`status=failed&final=true`: failed ones only)."
)


class RateLimitUseIn(_Input):
    name: RateLimitName = Field(description="A rate limit (`POST /api/rate-limits`).")
    units: int = Field(default=1, ge=1, le=1_000_000_000, description="What one dispatch spends.")

    def to_use(self) -> RateLimitUse:
        return RateLimitUse(self.name, self.units)


class RateLimitUseOut(_Output):
    name: str
    units: int


def _distinct_names(uses: list[RateLimitUseIn]) -> list[RateLimitUseIn]:
    names = [use.name for use in uses]
    if len(set(names)) != len(names):
        raise ValueError("name each rate limit once")
    return uses


RateLimitUses = Annotated[list[RateLimitUseIn], AfterValidator(_distinct_names)]

# --- tasks ------------------------------------------------------------------------------------


class TaskCreate(_Input):
    """A task to run. Only `task_type` is required; the seed sends name, task_type, priority,
    payload."""

    name: Name | None = Field(
        default=None,
        description="Label for people; defaults to the task type.",
        examples=["test-task"],
    )
    task_type: Name = Field(
        description="Which handler runs it; agents declare the task types they support.",
        examples=["data-processing"],
    )
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="Higher dispatches first among equal waits; each level is worth"
        " `[scheduler] priority_aging_seconds` (default 60 s) of waiting.",
    )
    payload: Payload = Field(
        default_factory=dict,
        description="JSON object handed to the handler.",
        examples=[{"data": "test"}],
    )
    required_capabilities: list[Label] = Field(
        default_factory=list,
        max_length=64,
        description="Only agents with every one of these capabilities may run it. "
        "`capabilities` is the same field under the name the CLI flag and the agent use: "
        "give one or the other, not both (422).",
        examples=[["chrome", "headless"]],
    )
    capabilities: list[Label] | None = Field(
        default=None,
        max_length=64,
        description="Alias of `required_capabilities` (as in `--capabilities chrome headless` "
        "and an agent's own `capabilities`); give one or the other, not both.",
        examples=[["chrome", "headless"]],
    )
    scheduled_at: UtcDatetime | None = Field(
        default=None, description="Do not start before this instant (ISO-8601 with offset)."
    )
    delay_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        description="Do not start before now + this many seconds (instead of scheduled_at).",
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="Execution time limit of one attempt; none by default.",
    )
    max_retries: int = Field(
        default=0, ge=0, le=MAX_RETRIES, description="Further attempts after a failure or timeout."
    )
    retry_backoff_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_BACKOFF_SECONDS,
        allow_inf_nan=False,
        description="Wait before the first retry, doubled for each next one; default "
        "`[scheduler] retry_interval_seconds`.",
    )
    retry_backoff_max_seconds: RetryBackoffMax = None
    retry_jitter: RetryJitter = 0.0
    retry_on: RetryOn = None
    idempotency_key: Label | None = Field(
        default=None,
        description="A second create with the same key returns the existing task (200, not 201).",
    )
    concurrency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONCURRENCY_KEY_LENGTH,
        description="At most `max_concurrent_per_key` tasks with this key are dispatched or "
        "running at once, across all nodes; the rest wait (`pending_reason: "
        "concurrency_limit`). E.g. `customer:42`.",
        examples=["customer:42"],
    )
    max_concurrent_per_key: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="The limit of its `concurrency_key`; default the `[concurrency]` limit of "
        "its task type, else 1.",
    )
    rate_limits: RateLimitUses = Field(
        default_factory=list,
        max_length=MAX_RATE_LIMITS_PER_TASK,
        description="Named rate limits it spends from when dispatched (`units` each, default "
        "1): it is dispatched only while every one has its units left in its window, across "
        "all nodes; otherwise it waits (`pending_reason: rate_limited`, `rate_limited_until`). "
        "An unknown name, or more units than the limit allows, is a 422.",
        examples=[[{"name": "crm-api", "units": 1}]],
    )
    concurrency_strategy: ConcurrencyStrategy = Field(
        default=ConcurrencyStrategy.QUEUE,
        description="When its key is at its limit: `queue` (wait), `cancel_newest` (this task "
        "is created cancelled) or `cancel_in_progress` (the oldest active tasks with the key "
        "are cancelled to make room).",
    )

    dispatch: Literal["one", "all"] = Field(
        default="one",
        description="`one` (default): one agent runs it. `all`: a broadcast, run once on "
        "every agent that is online, enabled and matches its task type and capabilities now "
        "(agents that connect later get nothing): the task made is a parent that no agent "
        "runs, with one child pinned to each of those agents; the parent ends when every "
        "child has, its `result` `{agent name: result}`. 409 `no_agent_for_broadcast` "
        "(nothing created) when no agent matches. Not with `idempotency_key` or "
        "`concurrency_key`, nor in a batch.",
    )
    broadcast: bool | None = Field(
        default=None, description='Alias: `true` is `"dispatch": "all"`, `false` is `"one"`.'
    )
    broadcast_policy: BroadcastPolicy | None = Field(
        default=None,
        description="A broadcast's success rule: `all` (default: every child succeeded) or "
        "`any` (one did). Otherwise it fails, its `error` naming the agents.",
    )
    webhook_url: WebhookUrl | None = Field(
        default=None,
        description=WEBHOOK_URL_DESCRIPTION,
        examples=["https://hooks.example.com/hetuflow"],
    )
    start_deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        description="A broadcast's bound on waiting for an agent: a child its agent has not "
        "started this many seconds after the task's start time (`scheduled_at`, or now) ends "
        "`failed`, its `error` naming the agent and how it was (offline, draining, disabled, "
        "busy); the parent then settles by its `broadcast_policy`. Default: a child waits for "
        'its agent without limit. Needs `"dispatch": "all"`.',
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskCreate:
        if self.scheduled_at is not None and self.delay_seconds is not None:
            raise ValueError("give scheduled_at or delay_seconds, not both")
        if self.capabilities is not None and "required_capabilities" in self.model_fields_set:
            raise ValueError(
                "give capabilities or required_capabilities (the same field), not both"
            )
        if self.concurrency_key is None and (
            self.max_concurrent_per_key is not None
            or self.concurrency_strategy is not ConcurrencyStrategy.QUEUE
        ):
            raise ValueError(
                "max_concurrent_per_key and concurrency_strategy need a concurrency_key"
            )
        if (
            self.broadcast is not None
            and "dispatch" in self.model_fields_set
            and self.broadcast != (self.dispatch == "all")
        ):
            raise ValueError("broadcast and dispatch disagree: give one of them")
        if self.broadcast_policy is not None and not self.is_broadcast:
            raise ValueError('broadcast_policy needs "dispatch": "all" (or "broadcast": true)')
        if self.start_deadline_seconds is not None and not self.is_broadcast:
            raise ValueError(
                'start_deadline_seconds needs "dispatch": "all" (or "broadcast": true)'
            )
        if self.is_broadcast and self.idempotency_key is not None:
            raise ValueError("a broadcast takes no idempotency_key")
        if self.is_broadcast and self.concurrency_key is not None:
            raise ValueError("a broadcast takes no concurrency_key")
        return self

    @property
    def is_broadcast(self) -> bool:
        """``dispatch: all``, or its alias ``broadcast: true``."""
        return self.broadcast if self.broadcast is not None else self.dispatch == "all"

    @property
    def wanted_capabilities(self) -> list[str]:
        """``required_capabilities``, or ``capabilities`` when given under that name."""
        return self.required_capabilities if self.capabilities is None else self.capabilities

    def to_new_task(self, *, now: datetime, default_backoff_seconds: float) -> NewTask:
        scheduled_at = self.scheduled_at
        if self.delay_seconds is not None:
            scheduled_at = now + timedelta(seconds=self.delay_seconds)
        backoff = self.retry_backoff_seconds
        return NewTask(
            name=self.name or self.task_type,
            task_type=self.task_type,
            payload=self.payload,
            priority=self.priority,
            required_capabilities=tuple(dict.fromkeys(self.wanted_capabilities)),
            scheduled_at=scheduled_at,
            timeout_seconds=self.timeout_seconds,
            retry=retry_policy(
                max_retries=self.max_retries,
                backoff_seconds=default_backoff_seconds if backoff is None else backoff,
                max_backoff_seconds=self.retry_backoff_max_seconds,
                jitter=self.retry_jitter,
                retry_on=self.retry_on,
            ),
            idempotency_key=self.idempotency_key,
            concurrency_key=self.concurrency_key,
            max_concurrent_per_key=self.max_concurrent_per_key,
            concurrency_strategy=None
            if self.concurrency_key is None
            else self.concurrency_strategy,
            rate_limits=tuple(use.to_use() for use in self.rate_limits),
            webhook_url=self.webhook_url,
        )

    def to_item(self, *, now: datetime, default_backoff_seconds: float) -> NewTask | NewBroadcast:
        """``to_new_task``, or for a broadcast the ``NewBroadcast`` of it."""
        task = self.to_new_task(now=now, default_backoff_seconds=default_backoff_seconds)
        if not self.is_broadcast:
            return task
        return NewBroadcast(
            task, self.broadcast_policy or BroadcastPolicy.ALL, self.start_deadline_seconds
        )


class TaskBatchCreate(_Input):
    tasks: list[TaskCreate] = Field(
        min_length=1,
        description="Tasks created together in one transaction, all or none. A broadcast "
        '(`"dispatch": "all"`) among them is created with its children in that transaction; '
        "its item is the parent. One that no agent matches fails the batch (409 "
        "`no_agent_for_broadcast` naming `tasks[i]`): nothing is created.",
    )


class TaskOut(_Output):
    id: UUID
    name: str
    task_type: str
    priority: Priority
    payload: JSONObject
    required_capabilities: list[str]
    status: TaskStatus
    pending_reason: PendingReason | None = Field(
        default=None,
        description="Why a pending task is not running yet: `scheduled` (waiting for "
        "scheduled_at or a retry backoff), `no_agent_for_task_type`, "
        "`no_agent_with_capabilities`, `agents_busy`, `global_limit`, `concurrency_limit` (its "
        "`concurrency_key` has its limit of tasks active), `rate_limited` (a rate limit it "
        "names has no units left in its window: see `rate_limited_until`), `agent_offline` "
        "(a broadcast child whose agent is not online and enabled) or `queued` (about to be "
        "dispatched). Null unless the task is pending.",
    )
    scheduled_at: datetime
    timeout_seconds: float | None
    max_retries: int
    retry_backoff_seconds: float
    retry_backoff_max_seconds: float = Field(description="No retry waits longer.")
    retry_jitter: float = Field(description="The fraction of each backoff that is random (0..1).")
    retry_on: list[FailureKind] = Field(description="The kinds of failure that are retried.")
    idempotency_key: str | None
    result: Any = Field(description="What the handler returned (succeeded tasks).")
    error: str | None = Field(description="Why the last attempt failed, if it did.")
    attempts: int = Field(description="Number of the current or last attempt; 0 before dispatch.")
    agent_id: UUID | None = Field(description="Agent holding, or that last held, the task.")
    cron_job_id: UUID | None
    cron_tick_at: datetime | None
    progress: float | None = Field(description="Last progress (0..1) reported by the agent.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    replay_of: UUID | None = Field(
        default=None,
        description="The finished task this one replays (`POST /api/tasks/{id}/replay`); null "
        "for other tasks. The original may since have been deleted by the cleanup loop.",
    )
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = Field(
        default=None,
        description="As created; null: the `[concurrency]` limit of its task type, else 1.",
    )
    rate_limits: list[RateLimitUseOut] = Field(default_factory=list)
    rate_limited_until: datetime | None = Field(
        default=None,
        description="A `rate_limited` task: when a unit of the limits holding it back frees "
        "(the oldest dispatch leaves the window); it may need more. Null otherwise.",
    )
    broadcast_policy: BroadcastPolicy | None = Field(
        default=None,
        description="Set on a broadcast's parent (`waiting` until every child has ended; no "
        "agent runs it); null for any other task.",
    )
    broadcast_of: UUID | None = Field(
        default=None, description="A broadcast child: its parent; null for any other task."
    )
    pinned_agent_id: UUID | None = Field(
        default=None,
        description="A broadcast child: the only agent that may run it (while that agent is "
        "offline it waits, `pending_reason: agent_offline`).",
    )
    webhook_url: str | None = Field(
        default=None,
        description="Where its final status is POSTed (`GET /api/tasks/{id}/webhook` shows "
        "how that went); null: nowhere.",
    )
    start_deadline_at: datetime | None = Field(
        default=None,
        description="A broadcast's (parent and children) with `start_deadline_seconds`: a "
        "child still pending then ends `failed`. Null otherwise.",
    )

    @classmethod
    def of(
        cls,
        task: Task,
        reason: PendingReason | None = None,
        rate_limited_until: datetime | None = None,
    ) -> TaskOut:
        return cls(
            id=task.id,
            name=task.name,
            task_type=task.task_type,
            priority=task.priority,
            payload=task.payload,
            required_capabilities=list(task.required_capabilities),
            status=task.status,
            pending_reason=reason if task.status is TaskStatus.PENDING else None,
            scheduled_at=task.scheduled_at,
            timeout_seconds=task.timeout_seconds,
            max_retries=task.retry.max_retries,
            retry_backoff_seconds=task.retry.backoff_seconds,
            retry_backoff_max_seconds=task.retry.max_backoff_seconds,
            retry_jitter=task.retry.jitter,
            retry_on=list(task.retry.retry_on),
            idempotency_key=task.idempotency_key,
            result=task.result,
            error=task.error,
            attempts=task.attempts,
            agent_id=task.agent_id,
            cron_job_id=task.cron_job_id,
            cron_tick_at=task.cron_tick_at,
            progress=task.progress,
            created_at=task.created_at,
            updated_at=task.updated_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            replay_of=task.replay_of,
            concurrency_key=task.concurrency_key,
            max_concurrent_per_key=task.max_concurrent_per_key,
            rate_limits=[RateLimitUseOut(name=u.name, units=u.units) for u in task.rate_limits],
            rate_limited_until=rate_limited_until if reason is PendingReason.RATE_LIMITED else None,
            broadcast_policy=task.broadcast_policy,
            broadcast_of=task.broadcast_of,
            pinned_agent_id=task.pinned_agent_id,
            webhook_url=task.webhook_url,
            start_deadline_at=task.start_deadline_at,
        )


def task_json(
    task: Task,
    reason: PendingReason | None = None,
    rate_limited_until: datetime | None = None,
) -> dict[str, Any]:
    """``TaskOut.of(task, reason)`` as plain JSON values, for ``encode_json``: the create
    routes answer hundreds of tasks per request, and building and validating a pydantic
    model for each cost more than storing it. A test holds both to the same output."""
    retry = task.retry
    return {
        "id": task.id,
        "name": task.name,
        "task_type": task.task_type,
        "priority": task.priority,
        "payload": task.payload,
        "required_capabilities": list(task.required_capabilities),
        "status": task.status,
        "pending_reason": reason if task.status is TaskStatus.PENDING else None,
        "scheduled_at": task.scheduled_at,
        "timeout_seconds": None if task.timeout_seconds is None else float(task.timeout_seconds),
        "max_retries": retry.max_retries,
        "retry_backoff_seconds": float(retry.backoff_seconds),
        "retry_backoff_max_seconds": float(retry.max_backoff_seconds),
        "retry_jitter": float(retry.jitter),
        "retry_on": list(retry.retry_on),
        "idempotency_key": task.idempotency_key,
        "result": task.result,
        "error": task.error,
        "attempts": task.attempts,
        "agent_id": task.agent_id,
        "cron_job_id": task.cron_job_id,
        "cron_tick_at": task.cron_tick_at,
        "progress": None if task.progress is None else float(task.progress),
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "replay_of": task.replay_of,
        "concurrency_key": task.concurrency_key,
        "max_concurrent_per_key": task.max_concurrent_per_key,
        "rate_limits": [{"name": u.name, "units": u.units} for u in task.rate_limits],
        "rate_limited_until": rate_limited_until
        if reason is PendingReason.RATE_LIMITED and task.status is TaskStatus.PENDING
        else None,
        "broadcast_policy": task.broadcast_policy,
        "broadcast_of": task.broadcast_of,
        "pinned_agent_id": task.pinned_agent_id,
        "webhook_url": task.webhook_url,
        "start_deadline_at": task.start_deadline_at,
    }


def encode_json(value: Any) -> bytes:
    """JSON as pydantic writes it for the API (UTC datetimes with ``Z``)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


class WebhookDeliveryOut(_Output):
    id: UUID = Field(description="Sent as `X-Hetuflow-Delivery-Id` on every attempt.")
    url: str
    status: TaskStatus = Field(description="The task's final status it reports.")
    state: DeliveryState = Field(
        description="`pending` (due at `next_attempt_at`, or being sent), `delivered` (the "
        "receiver answered 2xx) or `given_up` (`[webhooks] max_attempts` POSTs failed)."
    )
    attempts: int = Field(description="POSTs started so far.")
    next_attempt_at: datetime | None = Field(
        description="When a pending delivery is sent (again); null once it ended."
    )
    last_attempt_at: datetime | None
    last_status_code: int | None = Field(
        description="The receiver's HTTP status at the last attempt; null when none came."
    )
    last_error: str | None = Field(
        description="Why the last attempt failed (`answered HTTP 500`, `timed out after 10 "
        "s`, a connection error); null when it succeeded."
    )
    delivered_at: datetime | None
    created_at: datetime = Field(description="When the task ended and the delivery was written.")

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryOut:
        return cls(
            id=delivery.id,
            url=delivery.url,
            status=delivery.status,
            state=delivery.state,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            delivered_at=delivery.delivered_at,
            created_at=delivery.created_at,
        )


class TaskWebhookOut(_Output):
    webhook_url: str | None = Field(description="The task's; null: it reports to nowhere.")
    items: list[WebhookDeliveryOut] = Field(
        description="One delivery per time the task ended (once, unless a workflow retry ran "
        "it again), oldest first; empty until it ends."
    )


class TaskPage(_Output):
    items: list[TaskOut]
    total: int | None = Field(
        description="Tasks matching the filters, over all pages; null unless counted "
        "(`include_total`, by default on a first page only)."
    )
    limit: int
    offset: int
    next: str | None = Field(
        description="Pass as `cursor` for the next page (opaque); null on the last page."
    )


class TaskChildren(_Output):
    items: list[TaskOut] = Field(description="A broadcast's children, by agent name.")


class TaskBatchOut(_Output):
    items: list[TaskOut] = Field(description="The tasks, in the order they were sent.")
    created: list[bool] = Field(
        description="Per task: false when an idempotency key matched an existing task."
    )


class AttemptOut(_Output):
    task_id: UUID
    number: int = Field(description="1 for the first dispatch; fences results of old attempts.")
    agent_id: UUID | None
    dispatched_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: AttemptOutcome | None = Field(description="Null while the attempt runs.")
    error: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            task_id=attempt.task_id,
            number=attempt.number,
            agent_id=attempt.agent_id,
            dispatched_at=attempt.dispatched_at,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            outcome=attempt.outcome,
            error=attempt.error,
        )


class AttemptList(_Output):
    items: list[AttemptOut]


class LogLineOut(_Output):
    seq: int = Field(description="Increasing per task; pass the last one as `after_seq`.")
    attempt: int
    stream: str = Field(description="`stdout`, `stderr` or `log`.")
    line: str
    at: datetime

    @classmethod
    def of(cls, line: LogLine) -> LogLineOut:
        return cls(
            seq=line.seq, attempt=line.attempt, stream=line.stream, line=line.line, at=line.at
        )


class LogPage(_Output):
    items: list[LogLineOut]
    next_after_seq: int = Field(description="The `after_seq` that fetches the lines after these.")


# --- agents -----------------------------------------------------------------------------------


class AgentCreate(_Input):
    """Pre-create an agent; a process connecting with this name becomes it."""

    name: Name = Field(description="Unique agent name.", examples=["agent-1"])
    capabilities: list[Label] = Field(
        default_factory=list,
        max_length=256,
        description="What it offers; a task runs only where all its required ones are.",
        examples=[["chrome", "headless"]],
    )
    status: Literal["active", "disabled"] = Field(
        default="active",
        description="`active`: may receive tasks once connected; `disabled`: never receives any.",
    )
    supported_task_types: list[Name] = Field(
        default_factory=list,
        max_length=1024,
        description="Task types it runs (the connecting agent declares its own as well).",
    )
    max_concurrent_tasks: int = Field(
        default=1, ge=1, le=100_000, description="Tasks it may hold at once (its slots)."
    )

    def to_new_agent(self) -> NewAgent:
        return NewAgent(
            name=self.name,
            capabilities=tuple(dict.fromkeys(self.capabilities)),
            supported_task_types=tuple(dict.fromkeys(self.supported_task_types)),
            max_concurrent_tasks=self.max_concurrent_tasks,
            enabled=self.status == "active",
        )


class AgentOut(_Output):
    id: UUID
    name: str
    status: AgentStatus = Field(description="Connection state: online, offline or draining.")
    enabled: bool = Field(description="False for an agent created with status `disabled`.")
    drained: bool = Field(
        description="Drained by an operator (`POST /api/agents/{id}/drain`) and not resumed: "
        "it gets no new task, also after it reconnects (status `draining` while connected)."
    )
    capabilities: list[str]
    supported_task_types: list[str]
    max_concurrent_tasks: int
    running: int = Field(description="Tasks it holds now (dispatched, running or cancelling).")
    last_heartbeat_at: datetime | None
    connected_at: datetime | None
    node_id: str | None = Field(description="Server node holding its connection.")
    created_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(
            id=agent.id,
            name=agent.name,
            status=agent.status,
            enabled=agent.enabled,
            drained=agent.drained,
            capabilities=list(agent.capabilities),
            supported_task_types=list(agent.supported_task_types),
            max_concurrent_tasks=agent.max_concurrent_tasks,
            running=agent.running,
            last_heartbeat_at=agent.last_heartbeat_at,
            connected_at=agent.connected_at,
            node_id=agent.node_id,
            created_at=agent.created_at,
        )


class AgentCreated(AgentOut):
    token: str = Field(
        description="The agent's token (`hetuflow-agent --token`), shown this once: the server "
        "keeps only its hash."
    )


class AgentList(_Output):
    items: list[AgentOut]


# --- system -----------------------------------------------------------------------------------


class StatsOut(_Output):
    tasks_by_status: dict[TaskStatus, int] = Field(description="Every status, zero included.")
    tasks_total: int
    agents_online: int
    agents_total: int
    cron_jobs_enabled: int

    @classmethod
    def of(cls, stats: Stats) -> StatsOut:
        counts = {status: stats.tasks_by_status.get(status, 0) for status in TaskStatus}
        return cls(
            tasks_by_status=counts,
            tasks_total=sum(counts.values()),
            agents_online=stats.agents_online,
            agents_total=stats.agents_total,
            cron_jobs_enabled=stats.cron_jobs_enabled,
        )


class Health(_Output):
    status: Literal["ok", "unavailable"]
    detail: str | None = None
