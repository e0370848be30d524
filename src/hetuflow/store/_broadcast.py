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
from uuid import UUID

from hetuflow.models import BroadcastPolicy, JSONObject, SlotOffer, TaskStatus

DELETED_AGENT_ERROR = "its agent was deleted"
"""The error of a pending child whose agent is deleted: it is cancelled."""
PARENT_CANCELLED_ERROR = "its broadcast was cancelled"
"""The error of a child not yet dispatched when its parent was cancelled."""


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
