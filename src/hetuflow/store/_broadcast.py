"""What both stores share about broadcasts (docs/guarantees.md, Broadcast).

A broadcast is a parent task (``broadcast_policy`` set, status ``waiting``, never dispatched)
and one child per agent that matched it when it was created, each pinned to its agent
(``pinned_agent_id``): the claim gives a pinned task to that agent only
(``models.assign_least_loaded``). The
parent ends in the transaction that ends its last child (``settle_parent`` decides how);
each store's ``settle`` locks the parent row after the child rows, as every path that ends a
child (finish, release, cancel) locks them, so of two children ending at once the second to
lock the parent sees the first ended and settles it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from hetuflow.errors import NoAgentForBroadcast
from hetuflow.models import (
    BatchItem,
    BroadcastPolicy,
    JSONObject,
    NewBroadcast,
    NewTask,
    SlotOffer,
    Task,
    TaskStatus,
)

DELETED_AGENT_ERROR = "its agent was deleted"
"""The error of a pending child whose agent is deleted: it is cancelled."""
PARENT_CANCELLED_ERROR = "its broadcast was cancelled"
"""The error of a child not yet dispatched when its parent was cancelled."""


NOT_STARTED_ERROR = "not started by its start deadline"
"""The start of the error of a child still pending at its start deadline: it failed; the
rest names its agent and how that agent was (``... : agent web-1 was offline``)."""


def start_deadline(broadcast: NewBroadcast, now: datetime) -> datetime | None:
    """The instant a child still pending ends: ``start_deadline_seconds`` after the
    broadcast's start time (its ``scheduled_at``, or now if that is earlier or not given)."""
    if broadcast.start_deadline_seconds is None:
        return None
    start = now if broadcast.task.scheduled_at is None else max(now, broadcast.task.scheduled_at)
    return start + timedelta(seconds=broadcast.start_deadline_seconds)


def no_agent(task: NewTask) -> NoAgentForBroadcast:
    """The error of a broadcast that no agent matches (nothing is created)."""
    wanted = (
        f" with capabilities {sorted(task.required_capabilities)}"
        if task.required_capabilities
        else ""
    )
    return NoAgentForBroadcast(
        f"no online, enabled agent runs task type {task.task_type!r}{wanted}: nothing was created",
        field="dispatch",
    )


def in_batch(error: NoAgentForBroadcast, index: int) -> NoAgentForBroadcast:
    """``error`` of the broadcast at ``index`` of a batch, naming the item."""
    return NoAgentForBroadcast(
        f"tasks[{index}]: {error.message}", field=f"tasks[{index}].{error.field or 'dispatch'}"
    )


def split_batch(
    items: Sequence[NewTask | NewBroadcast],
) -> tuple[list[NewTask], list[tuple[int, NewBroadcast]]]:
    """A batch's plain tasks (in order) and its broadcasts with their indexes."""
    plain = [item for item in items if isinstance(item, NewTask)]
    broadcasts = [(i, item) for i, item in enumerate(items) if isinstance(item, NewBroadcast)]
    return plain, broadcasts


def join_batch(
    items: Sequence[NewTask | NewBroadcast],
    plain: Sequence[tuple[Task, bool]],
    broadcasts: dict[int, tuple[Task, list[Task]]],
) -> list[BatchItem]:
    """The results of ``split_batch``'s parts, back in the batch's order."""
    made = iter(plain)
    joined: list[BatchItem] = []
    for index, item in enumerate(items):
        if isinstance(item, NewBroadcast):
            parent, children = broadcasts[index]
            joined.append((parent, True, tuple(children)))
        else:
            task, created = next(made)
            joined.append((task, created, ()))
    return joined


@dataclass(frozen=True, slots=True)
class ChildEnd:
    """One child of a broadcast as its parent's settle reads it."""

    agent: str
    status: TaskStatus
    result: object
    error: str | None


@dataclass(frozen=True, slots=True)
class ParentEnd:
    """How a parent ends: its status, its result (``{agent name: result}``) and its error."""

    status: TaskStatus
    result: JSONObject
    error: str | None


def settle_parent(policy: BroadcastPolicy, children: Sequence[ChildEnd]) -> ParentEnd | None:
    """The end of a parent whose children are ``children``; None while one has not ended.

    ``all``: succeeded when every child did; ``any``: when one did. Otherwise failed, its
    error naming the agents whose child did not succeed and how each ended."""
    if not children or any(not child.status.is_terminal for child in children):
        return None
    result: JSONObject = {child.agent: child.result for child in children}
    bad = sorted(
        (child for child in children if child.status is not TaskStatus.SUCCEEDED),
        key=lambda child: child.agent,
    )
    succeeded = len(bad) < len(children) if policy is BroadcastPolicy.ANY else not bad
    if succeeded:
        return ParentEnd(TaskStatus.SUCCEEDED, result, None)
    named = ", ".join(f"{child.agent} ({child.status})" for child in bad)
    return ParentEnd(
        TaskStatus.FAILED, result, f"failed on {len(bad)} of {len(children)} agents: {named}"
    )


def offered_agents(offers: Sequence[SlotOffer]) -> list[UUID]:
    """The agents of a claim group with a free slot: the only ones its pinned tasks may go
    to (a claim reads no task pinned elsewhere)."""
    return sorted(offer.agent_id for offer in offers if offer.free_slots > 0)
