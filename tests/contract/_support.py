"""Shared values and builders of the contract suite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from hetuflow.models import Agent, ClaimGroup, FinishOutcome, SlotOffer, Task
from hetuflow.store.base import Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

ConnectAgent = Callable[..., Awaitable[Agent]]
OpenStore = Callable[[], Awaitable[Store]]


def group(
    agents: Sequence[Agent],
    *,
    free: int | None = None,
    task_types: Sequence[str] = ("t",),
    capabilities: Sequence[str] = (),
) -> ClaimGroup:
    """One claim group offering each agent ``free`` slots (default: its capacity)."""
    return ClaimGroup(
        task_types=frozenset(task_types),
        capabilities=frozenset(capabilities),
        offers=tuple(
            SlotOffer(
                agent.id,
                free_slots=agent.max_concurrent_tasks if free is None else free,
                running=agent.running,
            )
            for agent in agents
        ),
    )


async def stored(store: Store, outcome: FinishOutcome) -> Task:
    """The task a finish outcome is about, as the store now holds it."""
    task = await store.get_task(outcome.ref.task_id)
    assert task is not None
    assert outcome.status is task.status
    assert outcome.task_type == task.task_type
    return task
