"""Rows <-> domain objects, shared by both stores.

Each dialect stores values its own way (SQLite: INTEGER microseconds, JSON text, UUID text;
PostgreSQL: timestamptz, jsonb, uuid, text[]). A ``Codec`` hides that difference, so one set of
builders turns a row of either database into a domain object. The tables and column names are
the same in both dialects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.models import (
    UNSET,
    Agent,
    AgentStatus,
    Attempt,
    AttemptOutcome,
    BroadcastPolicy,
    ClaimedTask,
    ConcurrencyStrategy,
    CronJob,
    CronJobChanges,
    CronTick,
    FailureKind,
    LogLine,
    MisfirePolicy,
    NewTask,
    OverlapPolicy,
    Priority,
    RateLimitUse,
    RetryPolicy,
    Task,
    TaskStatus,
    TickOutcome,
    retry_on_of,
)
from hetuflow.tokens import ApiToken, Role


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


class Codec(Protocol):
    """Converts one dialect's column values to Python values and back."""

    def time(self, value: Any) -> datetime | None: ...
    def json(self, value: Any) -> Any: ...
    def texts(self, value: Any) -> tuple[str, ...]: ...
    def uuid(self, value: Any) -> UUID | None: ...
    def put_time(self, value: datetime | None) -> Any: ...
    def put_json(self, value: Any) -> Any: ...
    def put_texts(self, value: Sequence[str]) -> Any: ...
    def put_uuid(self, value: UUID | None) -> Any: ...


def _must_time(codec: Codec, value: Any) -> datetime:
    decoded = codec.time(value)
    if decoded is None:
        raise ValueError("a required timestamp column is NULL")
    return decoded


def _must_uuid(codec: Codec, value: Any) -> UUID:
    decoded = codec.uuid(value)
    if decoded is None:
        raise ValueError("a required uuid column is NULL")
    return decoded


FENCE_COLUMNS = (
    "id, task_type, status, attempts, agent_id, failures,"
    " max_retries, backoff_seconds, backoff_factor, max_backoff_seconds, backoff_jitter,"
    " retry_on"
)
"""The columns a fence and a finish decision read (``Held``, ``retry_of``)."""


_STATUSES = {status.value: status for status in TaskStatus}


def task_status(value: str) -> TaskStatus:
    """``TaskStatus(value)`` by a dict lookup (an enum call costs about a microsecond, and
    every finished task needs one)."""
    return _STATUSES[value]


def retry_of(row: Row, codec: Codec) -> RetryPolicy:
    return RetryPolicy(
        max_retries=row["max_retries"],
        backoff_seconds=row["backoff_seconds"],
        backoff_factor=row["backoff_factor"],
        max_backoff_seconds=row["max_backoff_seconds"],
        jitter=row["backoff_jitter"],
        retry_on=_retry_on(codec.texts(row["retry_on"])),
    )


@functools.lru_cache(maxsize=64)
def _retry_on(kinds: tuple[str, ...]) -> tuple[FailureKind, ...]:
    """``retry_on_of``, remembered: every finished task reads one, and there are few."""
    return retry_on_of(kinds)


def uses_of(value: Any, codec: Codec) -> tuple[RateLimitUse, ...]:
    """A task row's ``rate_limits`` column (NULL: none)."""
    if value is None:
        return ()
    return tuple(RateLimitUse(item["name"], item["units"]) for item in codec.json(value))


def uses_json(uses: Sequence[RateLimitUse]) -> list[dict[str, Any]] | None:
    """``rate_limits`` as the column keeps it (None: no limit)."""
    if not uses:
        return None
    return [{"name": use.name, "units": use.units} for use in uses]


def task_from(row: Row, codec: Codec) -> Task:
    result = row["result"]
    policy = row["broadcast_policy"]
    return Task(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        task_type=row["task_type"],
        priority=Priority.from_rank(row["priority"]),
        payload=codec.json(row["payload"]),
        required_capabilities=codec.texts(row["required_capabilities"]),
        status=task_status(row["status"]),
        scheduled_at=_must_time(codec, row["scheduled_at"]),
        timeout_seconds=row["timeout_seconds"],
        retry=retry_of(row, codec),
        idempotency_key=row["idempotency_key"],
        result=None if result is None else codec.json(result),
        error=row["error"],
        attempts=row["attempts"],
        agent_id=codec.uuid(row["agent_id"]),
        cron_job_id=codec.uuid(row["cron_job_id"]),
        cron_tick_at=codec.time(row["cron_tick_at"]),
        progress=row["progress"],
        created_at=_must_time(codec, row["created_at"]),
        updated_at=_must_time(codec, row["updated_at"]),
        started_at=codec.time(row["started_at"]),
        finished_at=codec.time(row["finished_at"]),
        replay_of=codec.uuid(row["replay_of"]),
        concurrency_key=row["concurrency_key"],
        max_concurrent_per_key=row["max_concurrent_per_key"],
        rate_limits=uses_of(row["rate_limits"], codec),
        pinned_agent_id=codec.uuid(row["pinned_agent_id"]),
        broadcast_of=codec.uuid(row["broadcast_of"]),
        broadcast_policy=None if policy is None else BroadcastPolicy(policy),
        webhook_url=row["webhook_url"],
        start_deadline_at=codec.time(row["start_deadline_at"]),
    )


CLAIMED_COLUMNS = (
    "id, name, task_type, priority, payload, timeout_seconds, scheduled_at, attempts, parents,"
    " max_retries, cron_job_id, cron_tick_at, broadcast_of"
)
"""The columns ``claimed_from`` reads (and the attempt count the claim increments); ``parents``
is NULL except for a released workflow step. The claims also select ``workflow_id`` and
``step`` from ``workflow_steps`` (NULL for a task that is no step)."""


def claimed_from(row: Row, codec: Codec) -> ClaimedTask:
    return ClaimedTask(
        _must_uuid(codec, row["id"]),
        row["name"],
        row["task_type"],
        codec.json(row["payload"]),
        Priority.from_rank(row["priority"]),
        row["timeout_seconds"],
        _must_time(codec, row["scheduled_at"]),
        None if row["parents"] is None else codec.json(row["parents"]),
        row["max_retries"],
        codec.uuid(row["cron_job_id"]),
        codec.time(row["cron_tick_at"]),
        codec.uuid(row["workflow_id"]),
        row["step"],
        codec.uuid(row["broadcast_of"]),
    )


def new_task(
    new: NewTask, task_id: UUID, now: datetime, placed: tuple[UUID, int] | None = None
) -> Task:
    """The task a store has just inserted for ``new`` (every column it does not set starts
    empty), built without reading the row back. ``now`` is UTC with microseconds, as stored.
    ``placed``: the (agent id, attempt) it was inserted dispatched to, if any."""
    return Task(
        id=task_id,
        name=new.name,
        task_type=new.task_type,
        priority=new.priority,
        payload=new.payload,
        required_capabilities=tuple(new.required_capabilities),
        status=TaskStatus.PENDING if placed is None else TaskStatus.DISPATCHED,
        scheduled_at=now if new.scheduled_at is None else utc(new.scheduled_at),
        timeout_seconds=new.timeout_seconds,
        retry=new.retry,
        idempotency_key=new.idempotency_key,
        result=None,
        error=None,
        attempts=0 if placed is None else placed[1],
        agent_id=None if placed is None else placed[0],
        cron_job_id=new.cron_job_id,
        cron_tick_at=None if new.cron_tick_at is None else utc(new.cron_tick_at),
        progress=None,
        created_at=now,
        updated_at=now,
        started_at=None,
        finished_at=None,
        concurrency_key=new.concurrency_key,
        max_concurrent_per_key=new.max_concurrent_per_key,
        replay_of=new.replay_of,
        rate_limits=new.rate_limits,
        webhook_url=new.webhook_url,
    )


def attempt_from(row: Row, codec: Codec) -> Attempt:
    outcome = row["outcome"]
    return Attempt(
        task_id=_must_uuid(codec, row["task_id"]),
        number=row["number"],
        agent_id=codec.uuid(row["agent_id"]),
        dispatched_at=_must_time(codec, row["dispatched_at"]),
        started_at=codec.time(row["started_at"]),
        finished_at=codec.time(row["finished_at"]),
        outcome=None if outcome is None else AttemptOutcome(outcome),
        error=row["error"],
    )


def log_from(row: Row, codec: Codec) -> LogLine:
    return LogLine(
        task_id=_must_uuid(codec, row["task_id"]),
        attempt=row["attempt"],
        stream=row["stream"],
        line=row["line"],
        at=_must_time(codec, row["at"]),
        seq=row["seq"],
    )


def agent_from(row: Row, codec: Codec) -> Agent:
    """An agent row joined with its ``running`` count."""
    return Agent(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        capabilities=codec.texts(row["capabilities"]),
        supported_task_types=codec.texts(row["supported_task_types"]),
        max_concurrent_tasks=row["max_concurrent_tasks"],
        enabled=bool(row["enabled"]),
        drained=bool(row["drained"]),
        status=AgentStatus(row["status"]),
        node_id=row["node_id"],
        session=row["session"],
        running=row["running"] or 0,
        last_heartbeat_at=codec.time(row["last_heartbeat_at"]),
        connected_at=codec.time(row["connected_at"]),
        created_at=_must_time(codec, row["created_at"]),
    )


def cron_job_from(row: Row, codec: Codec) -> CronJob:
    return CronJob(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        cron_expression=row["cron_expression"],
        timezone=row["timezone"],
        task_type=row["task_type"],
        payload=codec.json(row["payload"]),
        priority=Priority.from_rank(row["priority"]),
        required_capabilities=codec.texts(row["required_capabilities"]),
        timeout_seconds=row["timeout_seconds"],
        retry=retry_of(row, codec),
        enabled=bool(row["enabled"]),
        misfire_policy=MisfirePolicy(row["misfire_policy"]),
        catch_up_limit=row["catch_up_limit"],
        overlap_policy=OverlapPolicy(row["overlap_policy"]),
        start_deadline_seconds=row["start_deadline_seconds"],
        next_fire_at=codec.time(row["next_fire_at"]),
        last_fire_at=codec.time(row["last_fire_at"]),
        last_task_id=codec.uuid(row["last_task_id"]),
        created_at=_must_time(codec, row["created_at"]),
        updated_at=_must_time(codec, row["updated_at"]),
        webhook_url=row["webhook_url"],
        concurrency_key=row["concurrency_key"],
        max_concurrent_per_key=row["max_concurrent_per_key"],
        concurrency_strategy=ConcurrencyStrategy(row["concurrency_strategy"]),
        workflow=None if row["workflow"] is None else codec.json(row["workflow"]),
        rate_limits=uses_of(row["rate_limits"], codec),
    )


def cron_tick_from(row: Row, codec: Codec) -> CronTick:
    return CronTick(
        cron_job_id=_must_uuid(codec, row["cron_job_id"]),
        tick_at=_must_time(codec, row["tick_at"]),
        outcome=TickOutcome(row["outcome"]),
        task_id=codec.uuid(row["task_id"]),
        reason=row["reason"],
        recorded_at=_must_time(codec, row["recorded_at"]),
        workflow_id=codec.uuid(row["workflow_id"]),
    )


def token_from(row: Row, codec: Codec) -> ApiToken:
    return ApiToken(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        role=Role(row["role"]),
        hint=row["hint"],
        agent_id=codec.uuid(row["agent_id"]),
        created_at=_must_time(codec, row["created_at"]),
        expires_at=codec.time(row["expires_at"]),
        revoked_at=codec.time(row["revoked_at"]),
    )


# --- cron job changes -------------------------------------------------------------------------

_CRON_PLAIN = (
    "name",
    "cron_expression",
    "timezone",
    "task_type",
    "timeout_seconds",
    "catch_up_limit",
    "start_deadline_seconds",
    "webhook_url",
    "concurrency_key",
    "max_concurrent_per_key",
    "enabled",
)
"""``CronJobChanges`` fields stored as they are, in a column of the same name."""


def cron_columns(changes: CronJobChanges, codec: Codec) -> dict[str, Any]:
    """The columns ``changes`` sets (its ``UNSET`` fields left out), as values for ``codec``."""
    columns: dict[str, Any] = {}
    for name in _CRON_PLAIN:
        value = getattr(changes, name)
        if value is not UNSET:
            columns[name] = value
    for name, convert in _CRON_CONVERTED.items():  # rate_limits: each store's set_rate_limits
        value = getattr(changes, name)
        if value is not UNSET:
            columns[name] = convert(value, codec)
    if changes.retry is not UNSET:
        columns["max_retries"] = changes.retry.max_retries
        columns["backoff_seconds"] = changes.retry.backoff_seconds
        columns["backoff_factor"] = changes.retry.backoff_factor
        columns["max_backoff_seconds"] = changes.retry.max_backoff_seconds
        columns["backoff_jitter"] = changes.retry.jitter
        columns["retry_on"] = codec.put_texts(changes.retry.retry_on)
    return columns


_CRON_CONVERTED: dict[str, Callable[[Any, Codec], Any]] = {
    "required_capabilities": lambda value, codec: codec.put_texts(value),
    "priority": lambda value, codec: value.rank,
    "misfire_policy": lambda value, codec: value.value,
    "overlap_policy": lambda value, codec: value.value,
    "concurrency_strategy": lambda value, codec: value.value,
    "next_fire_at": lambda value, codec: codec.put_time(value),
    "last_fire_at": lambda value, codec: codec.put_time(value),
    "last_task_id": lambda value, codec: codec.put_uuid(value),
    "payload": lambda value, codec: codec.put_json(value),
    # a job's workflow may go (None)
    "workflow": lambda value, codec: None if value is None else codec.put_json(value),
}
"""``CronJobChanges`` fields whose column value ``codec`` converts."""


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` as a substring (``\\`` escapes ``%`` and ``_``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
