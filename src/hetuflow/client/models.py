"""The SDK's response models: frozen pydantic views of the server's JSON that ignore fields
they do not know (a newer server does not break an older client), and ``TaskSpec``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Required, TypedDict
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from hetuflow.models import (
    AgentStatus,
    AttemptOutcome,
    BroadcastPolicy,
    FailureKind,
    PendingReason,
    Priority,
    TaskStatus,
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Task(_Model):
    id: UUID
    name: str
    task_type: str
    priority: Priority
    payload: dict[str, Any]
    required_capabilities: list[str]
    status: TaskStatus
    pending_reason: PendingReason | None = None
    scheduled_at: datetime
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float | None = None
    retry_backoff_max_seconds: float | None = None
    retry_jitter: float = 0.0
    retry_on: list[FailureKind] | None = None
    """The failure kinds retried (None: a server that predates ``retry_on``)."""
    idempotency_key: str | None = None
    result: Any = None
    error: str | None = None
    attempts: int = 0
    agent_id: UUID | None = None
    cron_job_id: UUID | None = None
    cron_tick_at: datetime | None = None
    progress: float | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    replay_of: UUID | None = None
    """The task this one retries or replays."""
    rate_limits: list[RateLimitUse] = []
    """The named rate limits it spends from when dispatched."""
    rate_limited_until: datetime | None = None
    """A ``rate_limited`` task: when a unit of the limits holding it back frees."""
    broadcast_policy: BroadcastPolicy | None = None
    """Set on a broadcast's parent (``submit(..., dispatch="all")``)."""
    broadcast_of: UUID | None = None
    """A broadcast child: its parent."""
    pinned_agent_id: UUID | None = None
    """A broadcast child: the only agent that may run it."""
    webhook_url: str | None = None
    """Where its final status is POSTed (``Client.webhook`` shows how that went)."""
    start_deadline_at: datetime | None = None
    """A broadcast (``start_deadline_seconds``): a child still pending then ends failed."""

    @property
    def is_finished(self) -> bool:
        """succeeded, failed, timed_out or cancelled: it will not change any more."""
        return self.status.is_terminal


class RateLimitUse(_Model):
    name: str
    units: int = 1


class RateLimit(_Model):
    """A named rate limit: at most ``limit`` units dispatched in any ``per_seconds``."""

    name: str
    limit: int
    per_seconds: float
    created_at: datetime
    used: int = 0
    """Units dispatched in the window that ends now."""
    next_free_at: datetime | None = None
    waiting: int = 0
    """Due pending tasks it holds back now (``list_tasks(rate_limit=name, status="pending")``)."""


class ConcurrencyKey(_Model):
    """A concurrency key in use: its active tasks of its limit, and the tasks waiting on it."""

    key: str
    active: int
    limit: int
    pending: int
    waiting: int
    """Due pending tasks its limit holds back (``pending_reason: concurrency_limit``)."""
    at_limit: bool


class TaskPage(_Model):
    items: list[Task]
    total: int | None
    """Every match, when counted (``include_total``; by default on a first page only)."""
    limit: int
    offset: int
    next: str | None = None
    """The ``cursor`` of the next page; None on the last page."""


class Attempt(_Model):
    task_id: UUID
    number: int
    agent_id: UUID | None = None
    dispatched_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: AttemptOutcome | None = None
    error: str | None = None


class LogLine(_Model):
    seq: int
    attempt: int
    stream: str
    line: str
    at: datetime


class Agent(_Model):
    id: UUID
    name: str
    status: AgentStatus
    enabled: bool = True
    drained: bool = False
    capabilities: list[str]
    supported_task_types: list[str]
    max_concurrent_tasks: int
    running: int = 0
    last_heartbeat_at: datetime | None = None
    connected_at: datetime | None = None
    node_id: str | None = None
    created_at: datetime | None = None


class Stats(_Model):
    tasks_by_status: dict[TaskStatus, int]
    tasks_total: int
    agents_online: int
    agents_total: int
    cron_jobs_enabled: int


class CronJob(BaseModel):
    """A cron job. The seed's fields are typed; every other field the server sends is kept
    (``job.model_extra``, or ``getattr(job, "overlap_policy")``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: UUID
    name: str
    cron_expression: str
    task_type: str | None = None  # None for a job that starts workflows (``workflow``)
    workflow: dict[str, Any] | None = None
    payload: dict[str, Any] = {}
    enabled: bool = True
    timezone: str = "UTC"
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    webhook_url: str | None = None
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    concurrency_strategy: str = "queue"
    """Given to every task it creates: ``queue``, ``cancel_newest`` or
    ``cancel_in_progress`` (with ``concurrency_key``)."""
    rate_limits: list[RateLimitUse] = []
    """Given to every task it creates."""


class TaskSpec(TypedDict, total=False):
    """One task for ``submit_many``: the body of ``POST /api/tasks``."""

    task_type: Required[str]
    name: str
    priority: str
    payload: dict[str, Any]
    required_capabilities: list[str]
    scheduled_at: datetime | str
    delay_seconds: float
    timeout_seconds: float
    max_retries: int
    retry_backoff_seconds: float
    retry_backoff_max_seconds: float
    retry_jitter: float
    retry_on: list[str]
    rate_limits: list[dict[str, Any]]
    idempotency_key: str
    webhook_url: str
    concurrency_key: str
    max_concurrent_per_key: int
    concurrency_strategy: str
    dispatch: str
    broadcast: bool
    broadcast_policy: str
    start_deadline_seconds: float
