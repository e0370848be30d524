"""Claim order shared by both stores, including tasks of a batch being created.

Pending tasks are claimed in the order of their claim key (then id), a virtual deadline
stored with each task when it is inserted (``Aging.key``): the instant it became due, minus
its priority rank times the aging step. Each priority level is worth a fixed time of waiting:
with the default step of 60 s, a ``low`` task that has waited 2 minutes ranks with a ``high``
task just created, so steady high-priority work cannot starve it. A step of 0 (aging off)
becomes ``STRICT_STEP_MICROS``, longer than any two due times can be apart: strict priority.
The key is one indexed column (``tasks_claim``), so the claim stays one index scan.

``Store.create_and_claim_tasks`` runs a dispatch round in the transaction that creates a
batch: a new task that an offered slot can take is inserted already dispatched (one insert,
no pending row to update later, no second transaction before the push). The order is the one
``claim_tasks`` gives: for each group, by claim key, then id, stored and new tasks alike, as
the claim query's ``ORDER BY`` would put them had the new tasks been inserted first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.models import ClaimedTask, ClaimGroup, NewTask

R = TypeVar("R")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STRICT_STEP_MICROS = 10**18
"""The aging step when aging is off: about 31,700 years, more than any two due times
(years 1 to 9999) are apart, so the rank alone decides (and ``3 * step`` still fits in a
64-bit integer with any such time)."""

Order = tuple[int, str]
"""Where a pending task stands in the claim: (claim key, id as text), smallest first."""


def epoch_micros(when: datetime) -> int:
    """An aware datetime as whole microseconds since the Unix epoch."""
    return (utc(when) - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Aging:
    """How waiting raises a pending task's standing in the claim (``[scheduler]
    priority_aging_seconds``)."""

    step_micros: int
    """What one priority level is worth in waiting."""

    @classmethod
    def of(cls, priority_aging_seconds: float) -> Aging:
        """The aging for a step in seconds; 0 turns aging off (strict priority)."""
        if priority_aging_seconds <= 0:
            return cls(STRICT_STEP_MICROS)
        return cls(max(round(priority_aging_seconds * 1_000_000), 1))

    def key(self, due_micros: int, created_micros: int, rank: int) -> int:
        """The claim key of a task inserted at ``created_micros``, due at ``due_micros``: its
        wait counts from when it is due, never from before it was created."""
        return max(due_micros, created_micros) - rank * self.step_micros


@dataclass(frozen=True, slots=True)
class Fresh:
    """A task of the batch being created that a slot may take at once."""

    index: int
    """Its position in the batch."""
    task: ClaimedTask
    capabilities: frozenset[str]
    order: Order


@dataclass(frozen=True, slots=True)
class Pick(Generic[R]):
    """One claimed task, in claim order: a stored candidate row, or a fresh task."""

    order: Order
    row: R | None
    fresh: Fresh | None


class FreshTasks:
    """The tasks of a batch a claim in the same transaction may dispatch directly.

    Tasks with an idempotency key are left out (they may turn out to exist already), and so
    are tasks with a concurrency key or rate limits (their counts are the claim's to check);
    they are inserted pending and the next dispatch round claims them."""

    def __init__(
        self,
        tasks: Sequence[NewTask],
        ids: Sequence[UUID],
        now: datetime,
        keys: Sequence[int],
        id_texts: Sequence[str] | None = None,
    ) -> None:
        """``keys``: each task's claim key, as it is inserted."""
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
                    None,
                    new.retry.max_retries,
                    new.cron_job_id,
                    None if new.cron_tick_at is None else utc(new.cron_tick_at),
                ),
                frozenset(new.required_capabilities),
                (keys[index], texts[index]),
            )
            for index, (new, task_id) in enumerate(zip(tasks, ids, strict=True))
            if new.placeable_at_create
        ]
        fresh.sort(key=lambda item: item.order)
        self._waiting = fresh
        self.placed: dict[int, tuple[UUID, int]] = {}
        """Batch index -> (agent id, attempt number) of each fresh task dispatched."""

    def pick(
        self, group: ClaimGroup, horizon: datetime, stored: Sequence[tuple[Order, R]], want: int
    ) -> list[Pick[R]]:
        """Up to ``want`` tasks for ``group`` in claim order, from ``stored`` (candidate rows
        with their order, already in claim order) and the fresh tasks it can run."""
        placed = self.placed
        fits = [
            item
            for item in self._waiting
            if item.index not in placed
            and item.task.task_type in group.task_types
            and item.capabilities <= group.capabilities
            and item.task.scheduled_at <= horizon
        ]
        picks: list[Pick[R]] = [Pick(order, row, None) for order, row in stored]
        picks.extend(Pick(item.order, None, item) for item in fits[:want])
        picks.sort(key=lambda pick: pick.order)
        return picks[:want]

    def place(self, item: Fresh, agent_id: UUID) -> None:
        self.placed[item.index] = (agent_id, 1)


def claim_order(
    fresh: FreshTasks | None,
    group: ClaimGroup,
    horizon: datetime,
    stored: Sequence[tuple[Order, R]],
    want: int,
) -> list[Pick[R]]:
    """The picks of one group: the stored candidates (order, row), already in claim order,
    merged with the fresh tasks it can run when a batch is being created."""
    if fresh is None:
        return [Pick(order, row, None) for order, row in stored]
    return fresh.pick(group, horizon, stored, want)
