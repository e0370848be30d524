"""The domain: tasks, attempts, agents, cron jobs and their statuses.

Objects here are frozen; a change is a new object made by the Store. Every status enum knows
its legal transitions (``TASK_TRANSITIONS``, ``AGENT_TRANSITIONS``; ``check_transition`` checks
one move). The stores make the moves in SQL with conditional updates; the contract test
tests/contract/test_transitions.py drives every store operation and checks that each status
change a store makes is in the table, and each one the table lists is made.

Vocabulary (see docs/glossary.md): task, task type, payload, priority, capability, agent,
cron job, attempt, dispatch, result, cancel.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeAlias, TypeVar
from uuid import UUID

if TYPE_CHECKING:
    from hetuflow.workflows import NewWorkflow

from hetuflow.errors import StatusTransitionInvalid

JSONValue: TypeAlias = Any
"""A value that JSON can carry (dict, list, str, int, float, bool, None)."""
JSONObject: TypeAlias = dict[str, Any]


class Priority(StrEnum):
    """How urgent a task is. Of tasks that have waited equally long, higher ranks dispatch
    first; each rank is worth ``[scheduler] priority_aging_seconds`` of waiting (priority
    aging, docs/guarantees.md)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """The integer stored in the database so ordering by priority is an index scan."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return _RANK_PRIORITY[rank]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}
_RANK_PRIORITY = {rank: priority for priority, rank in _PRIORITY_RANK.items()}


class TaskStatus(StrEnum):
    """Where a task is in its life.

    ``pending`` covers waiting to be dispatched, waiting for ``scheduled_at`` and waiting
    between retries. ``dispatched`` means an agent was handed the current attempt and has not
    yet said it started. ``cancelling`` means a cancel was asked for while an agent held the
    task; the agent's confirmation moves it to ``cancelled``.

    Workflow steps (docs/workflows.md) add two: ``waiting`` (a step whose parents have not all
    finished; it becomes pending in the transaction that finishes the last of them) and
    ``skipped`` (a step that will never run, because a parent failed, the workflow stopped, or
    its ``run_if`` does not hold; ``error`` says why).

    ``quarantined``: a poison task. Its attempts were lost with their agent (the agent
    process crashed, was killed or cut off while holding it) ``[scheduler]
    max_agent_crashes_per_task`` times; it is not dispatched again (``error``: "crashed N
    agents"). ``POST /api/tasks/{id}/retry`` runs it again on purpose.
    """

    WAITING = "waiting"
    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES

    @property
    def is_active(self) -> bool:
        """Held by an agent: counts against slots and the global concurrency limit."""
        return self in ACTIVE_TASK_STATUSES


TERMINAL_TASK_STATUSES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.TIMED_OUT,
        TaskStatus.CANCELLED,
        TaskStatus.SKIPPED,
        TaskStatus.QUARANTINED,
    }
)
ACTIVE_TASK_STATUSES = frozenset({TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.CANCELLING})
DEAD_LETTER_STATUSES = (TaskStatus.FAILED, TaskStatus.QUARANTINED, TaskStatus.TIMED_OUT)
"""Ended without success, with no automatic retry left: what ``TaskFilter.final`` lists
(sorted, as the SQL writes them)."""

_RETRIED_STEP = frozenset({TaskStatus.WAITING, TaskStatus.PENDING})

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.WAITING: frozenset(
        {
            TaskStatus.SUCCEEDED,  # a broadcast parent whose children succeeded (per policy)
            TaskStatus.PENDING,  # the last parent finished and run_if holds
            TaskStatus.SKIPPED,  # a parent failed, the workflow stopped, or run_if fails
            TaskStatus.CANCELLED,
            TaskStatus.FAILED,  # its parents' results are too large; a broadcast failed
        }
    ),
    TaskStatus.PENDING: frozenset({TaskStatus.DISPATCHED, TaskStatus.CANCELLED}),
    TaskStatus.DISPATCHED: frozenset(
        {
            TaskStatus.RUNNING,
            TaskStatus.PENDING,  # agent lost, or the attempt failed and a retry is due
            TaskStatus.QUARANTINED,  # agent lost, for the max_agent_crashes_per_task-th time
            TaskStatus.CANCELLING,
            TaskStatus.SUCCEEDED,  # a result may arrive before (or instead of) the start
            TaskStatus.FAILED,
            TaskStatus.TIMED_OUT,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.PENDING,
            TaskStatus.QUARANTINED,
            TaskStatus.CANCELLING,
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.TIMED_OUT,
            TaskStatus.CANCELLED,
        }
    ),
    # whatever the agent reports (or a release) while cancelling, the task ends cancelled
    TaskStatus.CANCELLING: frozenset({TaskStatus.CANCELLED}),
    TaskStatus.SUCCEEDED: frozenset(),
    # A plain task that ended never changes again (a retry or a replay is a new task); a
    # workflow step that did not succeed starts over when its workflow is retried: waiting
    # again, or pending at once when its parents all succeeded (Store.retry_workflow).
    TaskStatus.FAILED: _RETRIED_STEP,
    TaskStatus.TIMED_OUT: _RETRIED_STEP,
    TaskStatus.CANCELLED: _RETRIED_STEP,
    TaskStatus.SKIPPED: _RETRIED_STEP,
    TaskStatus.QUARANTINED: frozenset(),  # a retry of a quarantined task is a new task
}


class AttemptOutcome(StrEnum):
    """How one attempt ended. ``lost`` means its agent vanished before reporting."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


class AgentStatus(StrEnum):
    """Connection state of an agent, kept by the server node holding its WebSocket."""

    ONLINE = "online"
    OFFLINE = "offline"
    DRAINING = "draining"


AGENT_TRANSITIONS: Mapping[AgentStatus, frozenset[AgentStatus]] = {
    # a drained agent (drained by an operator, not resumed) connects draining
    AgentStatus.OFFLINE: frozenset({AgentStatus.ONLINE, AgentStatus.DRAINING}),
    AgentStatus.ONLINE: frozenset({AgentStatus.OFFLINE, AgentStatus.DRAINING, AgentStatus.ONLINE}),
    AgentStatus.DRAINING: frozenset({AgentStatus.OFFLINE, AgentStatus.ONLINE}),
}


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    """Raise ``StatusTransitionInvalid`` unless ``current -> target`` is a legal task move."""
    if target not in TASK_TRANSITIONS[current]:
        raise StatusTransitionInvalid(f"a {current} task cannot become {target}", field="status")


def check_agent_transition(current: AgentStatus, target: AgentStatus) -> None:
    if target not in AGENT_TRANSITIONS[current]:
        raise StatusTransitionInvalid(f"a {current} agent cannot become {target}", field="status")


class PendingReason(StrEnum):
    """Why a pending task is not running yet (shown by the API)."""

    SCHEDULED = "scheduled"  # scheduled_at is in the future (delayed start or retry backoff)
    NO_AGENT_FOR_TASK_TYPE = "no_agent_for_task_type"
    NO_AGENT_WITH_CAPABILITIES = "no_agent_with_capabilities"
    AGENTS_BUSY = "agents_busy"
    GLOBAL_LIMIT = "global_limit"
    CONCURRENCY_LIMIT = "concurrency_limit"  # its concurrency key has its limit of tasks active
    RATE_LIMITED = "rate_limited"  # a rate limit it names has no units left in its window
    AGENT_OFFLINE = "agent_offline"  # pinned (a broadcast child) to an agent not online/enabled
    QUEUED = "queued"  # eligible and about to be dispatched


# --- tasks ------------------------------------------------------------------------------------

MAX_CONCURRENCY_KEY_LENGTH = 200


class ConcurrencyStrategy(StrEnum):
    """What a new task with a concurrency key does when the key is at its limit."""

    QUEUE = "queue"  # wait, pending (concurrency_limit), until an active one ends
    CANCEL_NEWEST = "cancel_newest"  # the new task is cancelled at create
    CANCEL_IN_PROGRESS = "cancel_in_progress"  # the oldest active ones are cancelled for it


MAX_RATE_LIMIT_NAME_LENGTH = 200
MAX_RATE_LIMITS_PER_TASK = 16


@dataclass(frozen=True, slots=True)
class RateLimitUse:
    """What a task spends of a named rate limit when it is dispatched."""

    name: str
    units: int = 1


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A named rate limit: at most ``limit`` units dispatched in any ``per_seconds`` window,
    across all nodes (a sliding window of the dispatches kept in the store;
    docs/guarantees.md#rate-limits)."""

    name: str
    limit: int
    per_seconds: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """A rate limit as a claim at ``now`` would see it."""

    limit: RateLimit
    used: int
    """Units dispatched in the window that ends now."""
    next_free_at: datetime | None
    """When the oldest dispatch in the window leaves it (None: nothing in the window)."""

    def fits(self, units: int) -> bool:
        return self.used + units <= self.limit.limit


@dataclass(frozen=True, slots=True)
class RateLimitUsage:
    """A rate limit as the console and ``/metrics`` show it: its window at an instant, and
    how many due pending tasks it holds back then."""

    state: RateLimitState
    waiting: int
    """Due pending tasks that name it and ask more units than it has left in the window."""


@dataclass(frozen=True, slots=True)
class ConcurrencyKeyUsage:
    """One concurrency key with unfinished tasks, as the console shows it."""

    key: str
    active: int
    """Its tasks dispatched, running or cancelling (across all nodes)."""
    limit: int
    """Its limit: that of its unfinished tasks (``ConcurrencyLimits.of``; the smallest when
    they declare different ones)."""
    pending: int
    """Its pending tasks (due or not)."""
    waiting: int
    """Its due pending tasks held back by its limit (``pending_reason: concurrency_limit``)."""


@dataclass(frozen=True, slots=True)
class ConcurrencySummary:
    """Concurrency keys in aggregate (``/metrics``: bounded labels however many keys)."""

    keys_active: int
    """Keys with at least one active task."""
    keys_at_limit: int
    """Keys with their limit of tasks active."""
    waiting_by_task_type: Mapping[str, int]
    """Due pending tasks held back by their key's limit, by task type (types with none are
    absent)."""


@dataclass(frozen=True, slots=True)
class ConcurrencyLimits:
    """The limit of a key when the task names none: ``[concurrency]`` by task type, else 1."""

    by_task_type: Mapping[str, int] = field(default_factory=dict)

    def of(self, task_type: str, declared: int | None) -> int:
        if declared is not None:
            return declared
        return self.by_task_type.get(task_type, 1)


class FailureKind(StrEnum):
    """How an attempt ended without success, as a retry policy's ``retry_on`` names it."""

    FAILED = "failed"  # the handler failed (outcome ``failed``)
    TIMED_OUT = "timed_out"  # it ran past ``timeout_seconds`` (outcome ``timed_out``)
    AGENT_LOST = "agent_lost"  # its agent vanished while holding it (outcome ``lost``)


ALL_FAILURE_KINDS: tuple[FailureKind, ...] = tuple(FailureKind)
"""The default ``retry_on``: every kind is retried."""

MAX_RETRY_JITTER = 1.0


class BroadcastPolicy(StrEnum):
    """When a broadcast parent succeeds (docs/guarantees.md, Broadcast)."""

    ALL = "all"  # every child succeeded
    ANY = "any"  # at least one child succeeded


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What follows an attempt that ended without success (docs/guarantees.md#retries).

    The wait before retry ``n`` (after the ``n``-th failed or timed-out attempt) is
    ``min(backoff_seconds * backoff_factor**(n-1), max_backoff_seconds)``, then reduced by
    jitter: times ``1 - jitter * u``, ``u`` drawn uniformly from [0, 1) for each retry. So
    ``jitter`` 0 keeps the exact delay, 1 is "full jitter" (anywhere from 0 to the delay),
    0.2 spreads retries over the last 20 % before it; never beyond the cap.

    ``retry_on`` names the kinds of failure that are retried; an attempt that ends with
    another kind ends the task at once (``failed`` or ``timed_out``; ``failed`` for a lost
    agent). A lost attempt that is retried does not spend ``max_retries`` (the poison-task
    limit ``max_agent_crashes_per_task`` bounds those) and is due again at once.
    """

    max_retries: int = 0
    backoff_seconds: float = 60.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 3600.0
    jitter: float = 0.0
    retry_on: tuple[FailureKind, ...] = ALL_FAILURE_KINDS

    def delay_after(self, attempt: int, draw: float = 0.0) -> timedelta:
        """The wait before retrying after failure number ``attempt`` (1-based), for the
        jitter draw ``draw`` in [0, 1) (0: no reduction)."""
        exponent = max(attempt - 1, 0)
        try:
            seconds = self.backoff_seconds * math.pow(self.backoff_factor, exponent)
        except OverflowError:
            seconds = self.max_backoff_seconds
        capped = min(seconds, self.max_backoff_seconds)
        unit = min(max(draw, 0.0), 1.0)
        return timedelta(seconds=max(capped * (1.0 - self.jitter * unit), 0.0))

    def allows_retry_after(self, attempt: int) -> bool:
        """Whether a failed attempt number ``attempt`` may be followed by another one."""
        return attempt <= self.max_retries

    def retries(self, kind: FailureKind) -> bool:
        """Whether an attempt that ended with ``kind`` may be retried at all."""
        return kind in self.retry_on


def retry_on_of(kinds: Sequence[str]) -> tuple[FailureKind, ...]:
    """``retry_on`` in a stored or given order, deduplicated, in ``FailureKind`` order.
    ``ValueError`` names an unknown kind."""
    wanted = set()
    for kind in kinds:
        try:
            wanted.add(FailureKind(kind))
        except ValueError:
            known = ", ".join(k.value for k in FailureKind)
            raise ValueError(f"{kind!r} is not a failure kind ({known})") from None
    return tuple(kind for kind in FailureKind if kind in wanted)


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a client asks for; the Store turns it into a ``Task``."""

    name: str
    task_type: str
    payload: JSONObject = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    required_capabilities: tuple[str, ...] = ()
    scheduled_at: datetime | None = None  # None: as soon as possible
    timeout_seconds: float | None = None  # None: no execution limit
    retry: RetryPolicy = RetryPolicy()
    idempotency_key: str | None = None
    cron_job_id: UUID | None = None
    cron_tick_at: datetime | None = None
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    """None: the ``[concurrency]`` limit of its task type, else 1 (``ConcurrencyLimits``)."""
    concurrency_strategy: ConcurrencyStrategy | None = None
    """What to do when the key is at its limit at create (None: ``queue``)."""
    replay_of: UUID | None = None
    """The finished task this one retries or replays (``TaskQueue.retry``)."""
    rate_limits: tuple[RateLimitUse, ...] = ()
    """Named rate limits it spends from when dispatched (each must exist)."""
    webhook_url: str | None = None
    """Where its final status is POSTed (docs/webhooks.md); checked http(s) URL."""

    @property
    def placeable_at_create(self) -> bool:
        """Whether the claim in its create's own transaction may dispatch it. Not with an
        idempotency key (it may exist already), a concurrency key or rate limits (their
        counts are a dispatch round's to check): those are only stored."""
        return (
            self.idempotency_key is None and self.concurrency_key is None and not self.rate_limits
        )


@dataclass(frozen=True, slots=True)
class NewBroadcast:
    """A broadcast to create (docs/guarantees.md, Broadcast): ``task`` run once on every
    agent that matches it now, a parent ending with its children per ``policy``."""

    task: NewTask
    policy: BroadcastPolicy = BroadcastPolicy.ALL
    start_deadline_seconds: float | None = None
    """A child its agent has not started this long after the broadcast's start time (its
    ``scheduled_at``, or its creation) ends ``failed``; None: it waits for its agent."""


@dataclass(frozen=True, slots=True)
class Task:
    id: UUID
    name: str
    task_type: str
    priority: Priority
    payload: JSONObject
    required_capabilities: tuple[str, ...]
    status: TaskStatus
    scheduled_at: datetime
    timeout_seconds: float | None
    retry: RetryPolicy
    idempotency_key: str | None
    result: JSONValue
    error: str | None
    attempts: int  # number of the current (or last) attempt; 0 before the first dispatch
    agent_id: UUID | None  # agent holding (or that last held) the current attempt
    cron_job_id: UUID | None
    cron_tick_at: datetime | None
    progress: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    replay_of: UUID | None = None  # the finished task this one replays (``replay_task``)
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    rate_limits: tuple[RateLimitUse, ...] = ()
    pinned_agent_id: UUID | None = None
    """A broadcast child: only this agent may run it (None: any matching agent)."""
    broadcast_of: UUID | None = None
    """A broadcast child: its parent task."""
    broadcast_policy: BroadcastPolicy | None = None
    """A broadcast parent (never dispatched; ends when its children have): when it succeeds."""
    webhook_url: str | None = None
    """Where its final status is POSTed (docs/webhooks.md)."""
    start_deadline_at: datetime | None = None
    """A broadcast's (parent and children): a child still pending then ends ``failed``."""

    def is_due_pending(self, now: datetime) -> bool:
        """Pending and due: why it waits may depend on the agents (a task due later is
        ``scheduled`` whatever they are)."""
        return self.status is TaskStatus.PENDING and self.scheduled_at <= now


@dataclass(frozen=True, slots=True)
class Attempt:
    """One dispatch of a task to an agent. ``number`` fences it: only the current one counts."""

    task_id: UUID
    number: int
    agent_id: UUID | None
    dispatched_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: AttemptOutcome | None
    error: str | None


class ClaimedTask(NamedTuple):
    """What an agent needs to run a claimed task: the fields of its ``TaskDispatch`` entry.

    A named tuple, not a ``Task``: claims are the hot path, and building the whole task (22
    fields, two JSON documents, six timestamps) for every claimed row cost more than the SQL.
    ``GET /api/tasks/{id}`` reads the whole task."""

    id: UUID
    name: str
    task_type: str
    payload: JSONValue
    priority: Priority
    timeout_seconds: float | None
    scheduled_at: datetime
    parents: JSONValue = None
    """A workflow step's parents' results, ``{step name: result}`` (None: not a step, or a
    step without parents)."""
    max_retries: int = 0
    cron_job_id: UUID | None = None
    cron_tick_at: datetime | None = None
    """The logical time of the cron run that created it (the tick, not when it ran)."""
    workflow_id: UUID | None = None
    step: str | None = None
    """The workflow and step name of a workflow step (None: not a step)."""
    broadcast_of: UUID | None = None
    """A broadcast child's parent task (None: not a broadcast child)."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task claimed for one agent, with the attempt number that fences it."""

    task: ClaimedTask
    attempt: int
    agent_id: UUID


@dataclass(frozen=True, slots=True)
class AttemptRef:
    """Names one attempt as reported by an agent."""

    task_id: UUID
    attempt: int
    agent_id: UUID


@dataclass(frozen=True, slots=True)
class AttemptStart:
    ref: AttemptRef
    started_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What an agent reported at the end of an attempt."""

    ref: AttemptRef
    outcome: AttemptOutcome
    result: JSONValue = None
    error: str | None = None
    finished_at: datetime | None = None
    started_at: datetime | None = None
    """When the attempt started, if the agent folded its start into the result: recorded
    like an ``AttemptStart`` (the first start wins) in the same write."""


@dataclass(frozen=True, slots=True)
class FinishOutcome:
    """What the Store did with one ``AttemptResult``.

    ``accepted`` is False when the attempt was superseded (another attempt is current, the
    task is finished, or the agent does not hold it): the agent must stop that work.
    ``task_type`` and ``status`` (after the change) are None when the task no longer exists.
    ``ended_step``: the attempt ended a workflow step, whose workflow was settled in the same
    transaction: steps that depended on it may be pending now.
    """

    ref: AttemptRef
    accepted: bool
    task_type: str | None
    status: TaskStatus | None
    ended_step: bool = False

    @property
    def made_pending(self) -> bool:
        """Whether writing it may have left tasks pending: a retry, or a step that ended."""
        return self.accepted and (self.status is TaskStatus.PENDING or self.ended_step)


@dataclass(frozen=True, slots=True)
class LogLine:
    task_id: UUID
    attempt: int
    stream: str  # "stdout", "stderr" or "log"
    line: str
    at: datetime
    seq: int = 0  # assigned by the Store; increasing per task


LOG_LINE_OVERHEAD_BYTES = 64
"""What one stored log line costs the budget on top of its text: the row's other columns and
its index entry, roughly (so empty lines are not free)."""


@dataclass(frozen=True, slots=True)
class LogBudget:
    """How much log one attempt may store (``[scheduler] max_log_bytes_per_attempt`` and
    ``max_log_lines_per_attempt``). Each line costs its UTF-8 bytes plus
    ``line_overhead_bytes``; the line that would go past either limit is replaced by one
    marker line and the attempt's later lines are dropped. The Store keeps the usage with the
    attempt, so the budget holds across nodes and restarts."""

    max_bytes: int
    max_lines: int
    line_overhead_bytes: int = LOG_LINE_OVERHEAD_BYTES

    def cost(self, line: str) -> int:
        return len(line.encode("utf-8", "replace")) + self.line_overhead_bytes

    def marker(self, reason: str) -> str:
        return f"[hetuflow] log truncated: {reason}; the rest of this attempt's lines are dropped"


@dataclass(slots=True)
class LogUsage:
    """What an attempt's stored log lines have cost so far (kept with the attempt row)."""

    bytes: int = 0
    lines: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class SlotOffer:
    """Free slots of one connected agent, offered to the dispatcher."""

    agent_id: UUID
    free_slots: int
    running: int


@dataclass(frozen=True, slots=True)
class ClaimGroup:
    """Agents with the same task types and capabilities, claimed for together."""

    task_types: frozenset[str]
    capabilities: frozenset[str]
    offers: tuple[SlotOffer, ...]

    @property
    def free_slots(self) -> int:
        return sum(offer.free_slots for offer in self.offers)


def offered_task_types(groups: Sequence[ClaimGroup]) -> list[str]:
    """Every task type some group with a free slot runs, sorted."""
    return sorted({t for group in groups if group.free_slots > 0 for t in group.task_types})


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """The offer of a dispatch round (``Store.claim_tasks``' arguments), for a claim made in
    the transaction of a create (``Store.create_and_claim_tasks``)."""

    groups: Sequence[ClaimGroup]
    until: datetime | None = None
    global_limit: int | None = None
    key_limits: ConcurrencyLimits | None = None


@dataclass(frozen=True, slots=True)
class DispatchOutlook:
    """What a dispatch round reads before it claims (``Store.dispatch_outlook``, one read):
    whether there is anything to claim, and if not, when to look again."""

    due: bool
    """A pending task of an offered type is due by the round's ``until``."""
    next_scheduled_at: datetime | None
    """The earliest ``scheduled_at`` after ``until`` among pending tasks (of any type)."""
    next_rate_limit_free_at: datetime | None
    """The earliest instant after ``now`` when a spend leaves the window of a rate limit
    that pending tasks name."""


P = TypeVar("P")
"""A claimed pick (``assign_least_loaded``): a stored row or a task of the batch."""


def assign_least_loaded(
    picks: Sequence[P], offers: Sequence[SlotOffer], pinned: Callable[[P], UUID | None]
) -> list[tuple[P, UUID]]:
    """An agent for each of the claimed ``picks``, in claim order: a pinned pick (a broadcast
    child, ``pinned`` gives its agent) goes to its agent if that agent has a free slot left,
    else it is left out (it stays pending); any other pick to the least loaded agent.

    Load is ``running`` plus what this call already assigned; ties keep the offers' order.
    Never gives an agent more than its free slots; returns fewer pairs if slots run out.
    """
    load = [offer.running for offer in offers]
    left = [offer.free_slots for offer in offers]
    index_of = {offer.agent_id: index for index, offer in enumerate(offers)}
    assigned: list[tuple[P, UUID]] = []
    for pick in picks:
        agent_id = pinned(pick)
        if agent_id is not None:
            best = index_of.get(agent_id, -1)
            if best < 0 or left[best] <= 0:
                continue
        else:
            best = -1
            for index, free in enumerate(left):
                if free > 0 and (best < 0 or load[index] < load[best]):
                    best = index
            if best < 0:
                break
        assigned.append((pick, offers[best].agent_id))
        load[best] += 1
        left[best] -= 1
    return assigned


# --- agents -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAgent:
    name: str
    capabilities: tuple[str, ...] = ()
    supported_task_types: tuple[str, ...] = ()
    max_concurrent_tasks: int = 1
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AgentRegistration:
    """What a connecting agent declares (the ``AgentCapabilities`` message).

    ``agent_id`` or ``name`` name a known agent to connect as; with neither, a new agent is
    registered under a generated name.
    """

    capabilities: tuple[str, ...]
    supported_task_types: tuple[str, ...]
    max_concurrent_tasks: int
    agent_id: UUID | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    id: UUID
    name: str
    capabilities: tuple[str, ...]
    supported_task_types: tuple[str, ...]
    max_concurrent_tasks: int
    enabled: bool
    drained: bool  # by an operator, until resumed (also across reconnects)
    status: AgentStatus
    node_id: str | None  # the server node holding its connection
    session: int  # bumped on every connection; fences a stale disconnect
    running: int  # tasks it holds (dispatched, running or cancelling)
    last_heartbeat_at: datetime | None
    connected_at: datetime | None
    created_at: datetime

    def can_run(self, task_type: str, required_capabilities: Sequence[str]) -> bool:
        return task_type in self.supported_task_types and set(required_capabilities) <= set(
            self.capabilities
        )


# --- cron jobs --------------------------------------------------------------------------------


class MisfirePolicy(StrEnum):
    """Ticks missed while no server ran or the job was disabled."""

    SKIP = "skip"  # drop them all; next fire is the next future tick
    RUN_ONCE = "run_once"  # run one task for all of them, now
    CATCH_UP = "catch_up"  # run one task per missed tick, at most ``catch_up_limit``


class OverlapPolicy(StrEnum):
    """What a tick does while the job's previous task is still pending or running."""

    ALLOW = "allow"
    SKIP = "skip"
    QUEUE = "queue"  # keep at most one waiting behind the running one
    CANCEL_PREVIOUS = "cancel_previous"


class TickOutcome(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class NewCronJob:
    name: str
    cron_expression: str
    task_type: str
    payload: JSONObject = field(default_factory=dict)
    timezone: str = "UTC"
    priority: Priority = Priority.NORMAL
    required_capabilities: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()
    enabled: bool = True
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    catch_up_limit: int = 1
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    start_deadline_seconds: float | None = None
    webhook_url: str | None = None
    """Given to every task it creates (docs/webhooks.md)."""
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    concurrency_strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE
    """Given to every task it creates: what is done when the key is at its limit then."""
    workflow: JSONObject | None = None
    """A workflow document (as ``POST /api/workflows`` takes it): each tick starts one such
    workflow instead of a task (``task_type`` is then empty)."""
    rate_limits: tuple[RateLimitUse, ...] = ()
    """Named rate limits every task it creates spends from (each must exist)."""


@dataclass(frozen=True, slots=True)
class CronJob:
    id: UUID
    name: str
    cron_expression: str
    timezone: str
    task_type: str
    payload: JSONObject
    priority: Priority
    required_capabilities: tuple[str, ...]
    timeout_seconds: float | None
    retry: RetryPolicy
    enabled: bool
    misfire_policy: MisfirePolicy
    catch_up_limit: int
    overlap_policy: OverlapPolicy
    start_deadline_seconds: float | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_task_id: UUID | None
    created_at: datetime
    updated_at: datetime
    webhook_url: str | None = None
    """Given to every task it creates (docs/webhooks.md)."""
    concurrency_key: str | None = None
    max_concurrent_per_key: int | None = None
    """Given to every task it creates (docs/guarantees.md#concurrency-keys)."""
    concurrency_strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE
    """Given to every task it creates: what is done when the key is at its limit then."""
    workflow: JSONObject | None = None
    """The workflow document each tick starts, instead of a task (docs/cron.md)."""
    rate_limits: tuple[RateLimitUse, ...] = ()
    """Given to every task it creates; deleting a limit takes it out of the job."""


BatchItem = tuple[Task, bool, tuple[Task, ...]]
"""What ``Store.create_batch`` made of one item: the task (a broadcast's parent), whether it
was created (False: its idempotency key matched), and a broadcast's children."""


class Unset(Enum):
    """The type of ``UNSET``: a change that leaves a field as it is (``x is UNSET`` narrows)."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""A field a change leaves as it is; ``None`` is a real value where the field is nullable."""


@dataclass(frozen=True, slots=True)
class CronJobChanges:
    """The fields ``Store.update_cron_job`` sets; those left ``UNSET`` stay as they are.

    ``None`` is a value like any other where the ``CronJob`` field is nullable: it removes a
    limit, a key, a next fire time."""

    name: str | Unset = UNSET
    cron_expression: str | Unset = UNSET
    timezone: str | Unset = UNSET
    task_type: str | Unset = UNSET
    payload: JSONObject | Unset = UNSET
    priority: Priority | Unset = UNSET
    required_capabilities: tuple[str, ...] | Unset = UNSET
    timeout_seconds: float | Unset | None = UNSET
    retry: RetryPolicy | Unset = UNSET
    enabled: bool | Unset = UNSET
    misfire_policy: MisfirePolicy | Unset = UNSET
    catch_up_limit: int | Unset = UNSET
    overlap_policy: OverlapPolicy | Unset = UNSET
    start_deadline_seconds: float | Unset | None = UNSET
    webhook_url: str | Unset | None = UNSET
    concurrency_key: str | Unset | None = UNSET
    max_concurrent_per_key: int | Unset | None = UNSET
    concurrency_strategy: ConcurrencyStrategy | Unset = UNSET
    next_fire_at: datetime | Unset | None = UNSET
    last_fire_at: datetime | Unset | None = UNSET
    last_task_id: UUID | Unset | None = UNSET
    workflow: JSONObject | Unset | None = UNSET
    rate_limits: tuple[RateLimitUse, ...] | Unset = UNSET

    @property
    def empty(self) -> bool:
        """Whether every field is ``UNSET`` (the change changes nothing)."""
        return all(getattr(self, each.name) is UNSET for each in fields(self))


@dataclass(frozen=True, slots=True)
class CronTick:
    cron_job_id: UUID
    tick_at: datetime
    outcome: TickOutcome
    task_id: UUID | None
    reason: str | None
    recorded_at: datetime
    workflow_id: UUID | None = None
    """The workflow the tick started (a workflow cron job)."""


@dataclass(frozen=True, slots=True)
class CronFire:
    """One tick to settle with ``Store.fire_cron_ticks``: record ``outcome`` for the job's
    tick ``tick_at``, create ``task`` (when it fires) and move the job to ``next_fire_at``."""

    cron_job_id: UUID
    tick_at: datetime
    next_fire_at: datetime | None
    outcome: TickOutcome
    task: NewTask | None = None
    reason: str | None = None
    workflow: NewWorkflow | None = None
    """A workflow cron job's fired tick: the workflow to create (instead of ``task``)."""


def spec_of(task: Task) -> NewTask:
    """A new task with ``task``'s spec (name, type, payload, priority, capabilities, timeout,
    retry policy, concurrency key and limit, webhook URL), due now; not its idempotency key
    nor its cron link."""
    return NewTask(
        name=task.name,
        task_type=task.task_type,
        payload=task.payload,
        priority=task.priority,
        required_capabilities=task.required_capabilities,
        timeout_seconds=task.timeout_seconds,
        retry=task.retry,
        concurrency_key=task.concurrency_key,
        max_concurrent_per_key=task.max_concurrent_per_key,
        rate_limits=task.rate_limits,
        webhook_url=task.webhook_url,
    )


# --- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFilter:
    statuses: tuple[TaskStatus, ...] = ()
    task_type: str | None = None
    agent_id: UUID | None = None
    cron_job_id: UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    text: str | None = None
    """A substring (any case) of the name, task type, payload, result or error (their JSON
    text); indexed from 3 characters on."""
    id_range: tuple[UUID, UUID] | None = None
    """Ids from the first to the second, both included: the ids that start with a prefix
    (``id_prefix_range``)."""
    concurrency_key: str | None = None
    """Only tasks with this concurrency key (exactly)."""
    rate_limit: str | None = None
    """Only tasks that name this rate limit."""
    final: bool = False
    """Only dead letters (``DEAD_LETTER_STATUSES``): tasks that ended ``failed``, ``timed_out``
    or ``quarantined``, so will not run again by themselves, and that no task retries or
    replays yet (none has ``replay_of`` naming them). ``statuses``, if given, narrow it."""

    def matched_statuses(self) -> tuple[TaskStatus, ...] | None:
        """The statuses a task must have: None for any; empty for none (``final`` with
        ``statuses`` that are no dead-letter status)."""
        if not self.final:
            return self.statuses or None
        return tuple(
            s for s in (self.statuses or DEAD_LETTER_STATUSES) if s in DEAD_LETTER_STATUSES
        )


_HEX = frozenset("0123456789abcdef")


def id_prefix_range(prefix: str) -> tuple[UUID, UUID]:
    """The first and the last UUID that start with ``prefix`` (hex digits, dashes ignored,
    any case): ``"0a1b2c"`` -> ``0a1b2c00-0000-…``, ``0a1b2cff-ffff-…``.

    Raises ``ValueError`` unless it is 1 to 32 hex digits.
    """
    digits = prefix.replace("-", "").lower()
    if not 0 < len(digits) <= 32 or not _HEX.issuperset(digits):
        raise ValueError(f"{prefix!r} is not the start of an id (hex digits)")
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


T = TypeVar("T")


@dataclass(frozen=True, slots=True, order=True)
class TaskCursor:
    """A position in the task list (ordered by ``created_at`` then ``id``, both descending):
    a page that starts after it lists the tasks older than the last one of the page before,
    whatever was inserted in between. ``encode`` makes the opaque string the API hands out."""

    created_at_micros: int
    """``created_at`` in whole microseconds since the Unix epoch (as both stores keep it)."""
    task_id: UUID

    @classmethod
    def of(cls, task: Task) -> TaskCursor:
        delta = task.created_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return cls(micros, task.id)

    @property
    def created_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.created_at_micros)

    def encode(self) -> str:
        raw = f"{CURSOR_VERSION}:{self.created_at_micros}:{self.task_id.hex}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> TaskCursor:
        """The cursor ``encode`` made; ``ValueError`` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            version, micros, task_id = raw.split(":")
            if version != CURSOR_VERSION or not micros.lstrip("-").isdigit():
                raise ValueError(text)
            cursor = cls(int(micros), UUID(hex=task_id))
            cursor.created_at  # noqa: B018 - in range
        except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
            raise ValueError("not a cursor this server handed out") from None
        return cursor


CURSOR_VERSION = "t1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int | None
    """Every match, over all pages; None when the caller did not ask for it (a count)."""
    limit: int
    offset: int
    next: TaskCursor | None = None
    """Where the next page starts (``after``); None on the last page."""


@dataclass(frozen=True, slots=True)
class HeldTask:
    """An active task as reconciliation sees it: who holds which attempt (``list_held``)."""

    id: UUID
    agent_id: UUID
    attempts: int
    status: TaskStatus
    task_type: str


@dataclass(frozen=True, slots=True)
class Stats:
    tasks_by_status: dict[TaskStatus, int]
    agents_online: int
    agents_total: int
    cron_jobs_enabled: int


# --- task type statistics (console grouping and alerts) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of a duration, in seconds (None: nothing measured)."""

    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True, slots=True)
class TaskTypeStats:
    """One task type over a recent window of created tasks (``Store.task_type_stats``)."""

    task_type: str
    by_status: dict[TaskStatus, int]
    queue_wait: Percentiles
    """From when a task became due to its first start (tasks that started)."""
    run_time: Percentiles
    """From its first start to its finish (finished tasks that started), retries included."""


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """Tasks that finished in one time bucket (``Store.task_timeline``)."""

    index: int
    """The bucket's position from the window's start (0 is the oldest)."""
    by_status: dict[TaskStatus, int]
    """Terminal statuses; a status with no task is absent."""
    queue_wait: Percentiles
    """From when a task became due to its first start (finished tasks that started)."""
    run_time: Percentiles
    """From its first start to its finish, retries included."""


@dataclass(frozen=True, slots=True)
class PendingGroup:
    """Due pending tasks sharing a task type and required capabilities
    (``Store.count_pending_groups``)."""

    task_type: str
    required_capabilities: tuple[str, ...]
    count: int
