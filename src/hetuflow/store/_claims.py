"""Claim order shared by both stores, including tasks of a batch being created.

``Store.create_and_claim_tasks`` runs a dispatch round in the transaction that creates a
batch: a new task that an offered slot can take is inserted already dispatched (one insert,
no pending row to update later, no second transaction before the push). The order is the one
``claim_tasks`` gives: for each group, highest priority first, then oldest; every new task is
younger than every stored one, so a stored task of the same priority goes first, and new
tasks of one priority follow by id, as the claim query's ``ORDER BY`` would put them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.models import ClaimedTask, ClaimGroup, NewTask

R = TypeVar("R")


def offered_task_types(groups: Sequence[ClaimGroup]) -> list[str]:
    """Every task type some group with a free slot runs, sorted."""
    return sorted({t for group in groups if group.free_slots > 0 for t in group.task_types})


@dataclass(frozen=True, slots=True)
class Fresh:
    """A task of the batch being created that a slot may take at once."""

    index: int
    """Its position in the batch."""
    task: ClaimedTask
    capabilities: frozenset[str]
    rank: int


@dataclass(frozen=True, slots=True)
class Pick(Generic[R]):
    """One claimed task, in claim order: a stored candidate row, or a fresh task."""

    rank: int
    row: R | None
    fresh: Fresh | None


class FreshTasks:
    """The tasks of a batch a claim in the same transaction may dispatch directly.

    Tasks with an idempotency key are left out (they may turn out to exist already); they are
    inserted pending and the next dispatch round claims them."""

    def __init__(
        self,
        tasks: Sequence[NewTask],
        ids: Sequence[UUID],
        now: datetime,
        id_texts: Sequence[str] | None = None,
    ) -> None:
        texts = [str(task_id) for task_id in ids] if id_texts is None else id_texts
        fresh = [
            Fresh(
                index,
                ClaimedTask(
                    task_id,
                    new.name,
                    new.task_type,
                    new.payload,
                    new.priority,
                    new.timeout_seconds,
                    now if new.scheduled_at is None else utc(new.scheduled_at),
                ),
                frozenset(new.required_capabilities),
                new.priority.rank,
            )
            for index, (new, task_id) in enumerate(zip(tasks, ids, strict=True))
            if new.idempotency_key is None
        ]
        fresh.sort(key=lambda item: (-item.rank, texts[item.index]))
        self._waiting = fresh
        self.placed: dict[int, tuple[UUID, int]] = {}
        """Batch index -> (agent id, attempt number) of each fresh task dispatched."""

    def pick(
        self, group: ClaimGroup, horizon: datetime, stored: Sequence[tuple[int, R]], want: int
    ) -> list[Pick[R]]:
        """Up to ``want`` tasks for ``group`` in claim order, from ``stored`` (candidate rows
        with their priority rank, already in claim order) and the fresh tasks it can run."""
        placed = self.placed
        fits = [
            item
            for item in self._waiting
            if item.index not in placed
            and item.task.task_type in group.task_types
            and item.capabilities <= group.capabilities
            and item.task.scheduled_at <= horizon
        ]
        picks: list[Pick[R]] = [Pick(rank, row, None) for rank, row in stored]
        picks.extend(Pick(item.rank, None, item) for item in fits[:want])
        picks.sort(key=lambda pick: -pick.rank)  # stable: stored before fresh per rank
        return picks[:want]

    def place(self, item: Fresh, agent_id: UUID) -> None:
        self.placed[item.index] = (agent_id, 1)


def claim_order(
    fresh: FreshTasks | None,
    group: ClaimGroup,
    horizon: datetime,
    stored: Sequence[tuple[int, R]],
    want: int,
) -> list[Pick[R]]:
    """The picks of one group: the stored candidates (rank, row), already in claim order,
    merged with the fresh tasks it can run when a batch is being created."""
    if fresh is None:
        return [Pick(rank, row, None) for rank, row in stored]
    return fresh.pick(group, horizon, stored, want)
