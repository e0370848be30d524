"""The agent protocol: every WebSocket message as a typed variant tagged by ``type``.

JSON text frames; one frame carries one message. The three messages of the seed
(``AgentCapabilities``, ``AgentHeartbeat``, ``TaskResult``) are accepted exactly as written
there; every other field they may carry is optional. Batching is by message, not by frame:
``TaskDispatch`` carries many tasks, ``TaskResults`` and ``TaskLogs`` many entries.

``decode_agent_message`` / ``decode_server_message`` are the only ways in; both raise
``ProtocolViolation`` with a message naming the problem. Every server -> agent frame is built
here (``*_frame``: plain typed dicts, no pydantic on the hot path) and encoded with
``encode_frame``; ``CloseCode`` names every close code. See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal, NotRequired, TypeAlias, TypedDict
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hetuflow.errors import ProtocolViolation as ProtocolViolation
from hetuflow.models import ClaimedTask

PROTOCOL_VERSION = 1
"""Bumped on incompatible changes. Agents send theirs in ``AgentCapabilities``."""
MAX_ATTEMPT = 2**31 - 1
"""Attempt numbers are 32-bit in the database; a larger one names no attempt."""


def parse_uuid(text: str) -> UUID | None:
    """An id a frame carries as text, or None when it is no UUID."""
    try:
        return UUID(text)
    except ValueError:
        return None


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- shared parts -----------------------------------------------------------------------------


class CapabilitySet(_Message):
    capabilities: list[str] = Field(default_factory=list, max_length=256)
    max_concurrent_tasks: int = Field(default=1, ge=0, le=100_000)
    supported_task_types: list[str] = Field(default_factory=list, max_length=1024)


class RunningAttempt(_Message):
    """An attempt an agent is working on, reported on reconnect and in heartbeats."""

    task_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)


class TaskOutcomeField(_Message):
    """Common fields of a result, alone (``TaskResult``) or batched (``TaskResults``)."""

    task_id: str
    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    result: Any = None
    error: str | None = None
    outcome: Literal["succeeded", "failed", "timed_out", "cancelled"] | None = None
    exit_code: int | None = None
    finished_at: datetime | None = None
    started_at: datetime | None = None  # when the attempt started (a result may come without
    # a TaskStarted: the agent folds an unsent TaskStarted into the result)

    def resolved_outcome(self) -> str:
        """The outcome, defaulting as the seed implies: no error means success."""
        if self.outcome is not None:
            return self.outcome
        return "succeeded" if self.error is None else "failed"


class LogEntry(_Message):
    task_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    stream: Literal["stdout", "stderr", "log"] = "log"
    line: str
    at: datetime | None = None


# --- agent -> server --------------------------------------------------------------------------


class AgentCapabilities(_Message):
    """Registration. First message on a connection; may be repeated to update capabilities."""

    type: Literal["AgentCapabilities"] = "AgentCapabilities"
    capabilities: CapabilitySet
    agent_id: str | None = None
    name: str | None = Field(default=None, max_length=200)
    protocol_version: int = PROTOCOL_VERSION
    running: list[RunningAttempt] = Field(default_factory=list)


class AgentHeartbeat(_Message):
    type: Literal["AgentHeartbeat"] = "AgentHeartbeat"
    agent_id: str | None = None
    timestamp: datetime | None = None
    running: list[RunningAttempt] | None = None


class TaskAccepted(_Message):
    """The agent holds the attempt and will start it at ``start_at`` (two-level scheduling)."""

    type: Literal["TaskAccepted"] = "TaskAccepted"
    task_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)


class TaskStarted(_Message):
    type: Literal["TaskStarted"] = "TaskStarted"
    task_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    started_at: datetime | None = None


class TaskProgress(_Message):
    type: Literal["TaskProgress"] = "TaskProgress"
    task_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = None


class TaskLogs(_Message):
    type: Literal["TaskLogs"] = "TaskLogs"
    lines: list[LogEntry]


class TaskResult(TaskOutcomeField):
    type: Literal["TaskResult"] = "TaskResult"


class TaskResults(_Message):
    type: Literal["TaskResults"] = "TaskResults"
    results: list[TaskOutcomeField]


class AgentDraining(_Message):
    """The agent takes no new tasks; running ones finish (sent on SIGTERM)."""

    type: Literal["AgentDraining"] = "AgentDraining"


class Pong(_Message):
    type: Literal["Pong"] = "Pong"
    timestamp: datetime | None = None


AgentMessage: TypeAlias = Annotated[
    AgentCapabilities
    | AgentHeartbeat
    | TaskAccepted
    | TaskStarted
    | TaskProgress
    | TaskLogs
    | TaskResult
    | TaskResults
    | AgentDraining
    | Pong,
    Field(discriminator="type"),
]

# --- server -> agent --------------------------------------------------------------------------


class AgentRegistered(_Message):
    """Acknowledges ``AgentCapabilities``: the id the server knows this agent by."""

    type: Literal["AgentRegistered"] = "AgentRegistered"
    agent_id: str
    name: str
    protocol_version: int = PROTOCOL_VERSION
    heartbeat_interval_seconds: float
    server_time: datetime
    superseded: list[RunningAttempt] = Field(default_factory=list)


class DispatchedTask(_Message):
    task_id: str
    attempt: int
    name: str
    task_type: str
    payload: dict[str, Any]
    priority: str = "normal"
    timeout_seconds: float | None = None
    start_at: datetime | None = None  # None: start now; else not one moment earlier
    parents: dict[str, Any] | None = None
    """A workflow step's parents' results, ``{step name: result}`` (docs/workflows.md);
    absent for a task that is no step, or a step without parents."""
    # --- the task's context (docs/protocol.md); absent from older servers ---
    scheduled_at: datetime | None = None
    """When the task was due (its ``scheduled_at``; a retry's is when the retry was due)."""
    max_retries: int | None = None
    cron_job_id: str | None = None
    cron_tick_at: datetime | None = None
    """The logical time of the cron run that created the task (which night a nightly job is
    for), not when it runs; absent for a task no cron job created."""
    workflow_id: str | None = None
    step: str | None = None
    """The workflow and step name of a workflow step; absent otherwise."""
    broadcast_of: str | None = None
    """A broadcast child's parent task (``dispatch: all``); absent otherwise."""


class TaskDispatch(_Message):
    type: Literal["TaskDispatch"] = "TaskDispatch"
    tasks: list[DispatchedTask]


class TaskCancel(_Message):
    """Stop this attempt. ``reason``: ``cancelled`` (asked by a user) or ``superseded``."""

    type: Literal["TaskCancel"] = "TaskCancel"
    task_id: str
    attempt: int
    reason: Literal["cancelled", "superseded", "timed_out"] = "cancelled"


class Ping(_Message):
    type: Literal["Ping"] = "Ping"
    timestamp: datetime


class Error(_Message):
    """The server could not act on a message; the connection carries on."""

    type: Literal["Error"] = "Error"
    code: str
    message: str
    message_type: str | None = None
    task_id: str | None = None


ServerMessage: TypeAlias = Annotated[
    AgentRegistered | TaskDispatch | TaskCancel | Ping | Error,
    Field(discriminator="type"),
]

_agent_adapter: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)
AGENT_MESSAGE_TYPES = frozenset(
    {
        "AgentCapabilities",
        "AgentHeartbeat",
        "TaskAccepted",
        "TaskStarted",
        "TaskProgress",
        "TaskLogs",
        "TaskResult",
        "TaskResults",
        "AgentDraining",
        "Pong",
    }
)
SERVER_MESSAGE_TYPES = frozenset({"AgentRegistered", "TaskDispatch", "TaskCancel", "Ping", "Error"})


def _describe(error: ValidationError, known: frozenset[str]) -> str:
    first = error.errors()[0]
    kind = first["type"]
    if kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", "?")
        return f"unknown message type {tag!r}; expected one of {', '.join(sorted(known))}"
    if kind == "union_tag_not_found":
        return "message has no 'type' field"
    if kind in ("json_invalid", "json_type"):
        return f"frame is not valid JSON: {first['msg']}"
    if kind == "model_attributes_type":
        return "message must be a JSON object"
    location = ".".join(str(part) for part in first["loc"][1:]) or "message"
    return f"{location}: {first['msg']}"


def decode_agent_message(frame: str | bytes) -> AgentMessage:
    """Parse one agent frame. Raises ``ProtocolViolation`` naming the problem."""
    try:
        return _agent_adapter.validate_json(frame)
    except ValidationError as error:
        raise ProtocolViolation(_describe(error, AGENT_MESSAGE_TYPES)) from None


def decode_server_message(frame: str | bytes) -> ServerMessage:
    """Parse one server frame (used by the agent). Raises ``ProtocolViolation``."""
    try:
        return _server_adapter.validate_json(frame)
    except ValidationError as error:
        raise ProtocolViolation(_describe(error, SERVER_MESSAGE_TYPES)) from None


def encode(message: _Message) -> str:
    """One message as a JSON text frame."""
    return message.model_dump_json(exclude_none=False)


# --- close codes ------------------------------------------------------------------------------


class CloseCode(IntEnum):
    """WebSocket close codes (docs/protocol.md): the standard ones (1000-range) and this
    protocol's own (4000-range). An agent reconnects after any of them except those it is
    told not to come back after (4001, 4003, 4004, 4010)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # this node shuts down: reconnect (to another node)
    NO_STATUS = 1005  # the peer closed without a code (what a missing code reads as)
    ABNORMAL = 1006  # the connection dropped without a close frame
    POLICY_VIOLATION = 1008  # too many bad frames, or refused at the edge
    MESSAGE_TOO_BIG = 1009  # uvicorn: a frame over [server] max_frame_bytes
    SERVICE_RESTART = 1012  # uvicorn closes every WebSocket with it when the server stops
    TRY_AGAIN_LATER = 1013  # the database did not answer during registration
    SUPERSEDED = 4000  # a newer connection of the same agent took over
    UNAUTHORIZED = 4001  # the token does not allow this (e.g. it belongs to another agent)
    HEARTBEAT_TIMEOUT = 4002  # nothing heard for heartbeat_interval * heartbeat_misses
    PROTOCOL_VERSION = 4003  # protocol version not supported
    AGENT_NOT_FOUND = 4004  # AgentCapabilities named an unknown agent id
    REGISTRATION_TIMEOUT = 4008  # no AgentCapabilities in time
    DECLARED_OFFLINE = 4009  # the cluster declared the agent offline; register again
    AGENT_DELETED = 4010  # the agent was deleted (DELETE /api/agents/{id}): do not come back


# --- server -> agent frames, built without pydantic (the hot path) ----------------------------
#
# The server builds its frames as these TypedDicts (the shapes of the models above) and
# encodes them once with orjson; ``tests/server/test_frames.py`` checks every builder against
# ``decode_server_message``. The agent decodes them with the models.


class AttemptFrame(TypedDict):
    task_id: str
    attempt: int


class DispatchedTaskFrame(TypedDict):
    """One ``TaskDispatch.tasks`` entry (``DispatchedTask``)."""

    task_id: str
    attempt: int
    name: str
    task_type: str
    payload: Any
    priority: str
    timeout_seconds: float | None
    start_at: datetime | None
    scheduled_at: datetime
    max_retries: int
    parents: NotRequired[Any]
    cron_job_id: NotRequired[str]
    cron_tick_at: NotRequired[datetime | None]
    workflow_id: NotRequired[str]
    step: NotRequired[str | None]
    broadcast_of: NotRequired[str]


class TaskDispatchFrame(TypedDict):
    type: Literal["TaskDispatch"]
    tasks: list[DispatchedTaskFrame]


class TaskCancelFrame(TypedDict):
    type: Literal["TaskCancel"]
    task_id: str
    attempt: int
    reason: str


class ErrorFrame(TypedDict):
    type: Literal["Error"]
    code: str
    message: str
    message_type: str | None
    task_id: str | None


class PingFrame(TypedDict):
    type: Literal["Ping"]
    timestamp: datetime


class AgentRegisteredFrame(TypedDict):
    type: Literal["AgentRegistered"]
    agent_id: str
    name: str
    protocol_version: int
    heartbeat_interval_seconds: float
    server_time: str
    superseded: list[AttemptFrame]


ServerFrame: TypeAlias = (
    TaskDispatchFrame | TaskCancelFrame | ErrorFrame | PingFrame | AgentRegisteredFrame
)


def dispatched_task_frame(
    task: ClaimedTask, attempt: int, start_at: datetime | None
) -> DispatchedTaskFrame:
    """The ``TaskDispatch`` entry of a claimed attempt (``start_at`` None: start now)."""
    frame: DispatchedTaskFrame = {
        "task_id": str(task.id),
        "attempt": attempt,
        "name": task.name,
        "task_type": task.task_type,
        "payload": task.payload,
        "priority": task.priority.value,
        "timeout_seconds": task.timeout_seconds,
        "start_at": start_at,
        "scheduled_at": task.scheduled_at,
        "max_retries": task.max_retries,
    }
    if task.parents is not None:  # a released workflow step
        frame["parents"] = task.parents
    if task.cron_job_id is not None:
        frame["cron_job_id"] = str(task.cron_job_id)
        frame["cron_tick_at"] = task.cron_tick_at
    if task.workflow_id is not None:
        frame["workflow_id"] = str(task.workflow_id)
        frame["step"] = task.step
    if task.broadcast_of is not None:
        frame["broadcast_of"] = str(task.broadcast_of)
    return frame


def task_dispatch_frame(tasks: list[DispatchedTaskFrame]) -> TaskDispatchFrame:
    return {"type": "TaskDispatch", "tasks": tasks}


def task_cancel_frame(task_id: UUID, attempt: int, reason: str) -> TaskCancelFrame:
    """``reason``: ``cancelled``, ``superseded`` or ``timed_out`` (``TaskCancel``)."""
    return {"type": "TaskCancel", "task_id": str(task_id), "attempt": attempt, "reason": reason}


def error_frame(
    code: str, message: str, *, message_type: str | None = None, task_id: str | None = None
) -> ErrorFrame:
    return {
        "type": "Error",
        "code": code,
        "message": message,
        "message_type": message_type,
        "task_id": task_id,
    }


def ping_frame(now: datetime) -> PingFrame:
    return {"type": "Ping", "timestamp": now}


def agent_registered_frame(
    agent_id: UUID,
    name: str,
    *,
    heartbeat_interval_seconds: float,
    now: datetime,
    superseded: list[AttemptFrame] | None = None,
) -> AgentRegisteredFrame:
    """The answer to ``AgentCapabilities``; ``superseded``: the reported attempts to stop."""
    return {
        "type": "AgentRegistered",
        "agent_id": str(agent_id),
        "name": name,
        "protocol_version": PROTOCOL_VERSION,
        "heartbeat_interval_seconds": heartbeat_interval_seconds,
        "server_time": now.astimezone(UTC).isoformat(),
        "superseded": [] if superseded is None else superseded,
    }


def encode_frame(frame: ServerFrame | Mapping[str, Any]) -> str:
    """One server frame as a JSON text frame (orjson: datetimes as ISO 8601)."""
    return orjson.dumps(frame).decode()
