"""Claim order shared by both stores (store/_claims.py): the aging key, the task types a
round offers, and how fresh tasks of a batch merge with stored candidates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hetuflow.models import ClaimGroup, NewTask, Priority, SlotOffer, offered_task_types
from hetuflow.store._claims import (
    EPOCH,
    STRICT_STEP_MICROS,
    Aging,
    FreshTasks,
    Order,
    claim_order,
    epoch_micros,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SECOND = 1_000_000
NONE: list[tuple[Order, str]] = []
"""No stored candidate."""


def group(
    *task_types: str, free: int = 1, capabilities: frozenset[str] = frozenset()
) -> ClaimGroup:
    offer = SlotOffer(uuid.uuid4(), free_slots=free, running=0)
    return ClaimGroup(frozenset(task_types), capabilities, (offer,))


def test_epoch_micros() -> None:
    assert epoch_micros(EPOCH) == 0
    assert epoch_micros(EPOCH + timedelta(seconds=1, microseconds=5)) == SECOND + 5


def test_aging_of_seconds_and_off() -> None:
    assert Aging.of(60).step_micros == 60 * SECOND
    assert Aging.of(0.0000001).step_micros == 1  # never 0
    assert Aging.of(0).step_micros == STRICT_STEP_MICROS
    assert Aging.of(-1).step_micros == STRICT_STEP_MICROS


def test_a_key_counts_from_when_the_task_is_due_never_before_it_was_created() -> None:
    aging = Aging.of(60)
    assert aging.key(due_micros=100 * SECOND, created_micros=50 * SECOND, rank=0) == 100 * SECOND
    assert aging.key(due_micros=10 * SECOND, created_micros=50 * SECOND, rank=0) == 50 * SECOND
    assert aging.key(due_micros=100 * SECOND, created_micros=0, rank=2) == (100 - 120) * SECOND


def test_one_priority_level_is_worth_one_step_of_waiting() -> None:
    aging = Aging.of(60)
    low_waited_two_minutes = aging.key(0, 0, rank=0)
    high_created_now = aging.key(120 * SECOND, 120 * SECOND, rank=2)
    assert low_waited_two_minutes == high_created_now


def test_strict_priority_ranks_any_higher_priority_first() -> None:
    strict = Aging.of(0)
    oldest = epoch_micros(datetime(1, 1, 1, tzinfo=UTC))
    newest = epoch_micros(datetime(9999, 12, 31, tzinfo=UTC))
    assert strict.key(newest, newest, rank=1) < strict.key(oldest, oldest, rank=0)
    assert 3 * strict.step_micros + abs(oldest) < 2**63


def test_offered_task_types_skip_groups_without_a_free_slot() -> None:
    groups = [group("b", "a"), group("c", free=0), group("a", "d")]
    assert offered_task_types(groups) == ["a", "b", "d"]


def fresh_batch(tasks: list[NewTask], keys: list[int]) -> tuple[FreshTasks, list[uuid.UUID]]:
    ids = [uuid.UUID(int=i + 1) for i in range(len(tasks))]
    return FreshTasks(tasks, ids, T0, keys), ids


def test_without_a_batch_the_stored_candidates_are_the_picks() -> None:
    stored: list[tuple[Order, str]] = [((1, "a"), "row-a"), ((2, "b"), "row-b")]
    picks = claim_order(None, group("t"), T0, stored, want=5)
    assert [(p.order, p.row, p.fresh) for p in picks] == [
        ((1, "a"), "row-a", None),
        ((2, "b"), "row-b", None),
    ]


def test_fresh_tasks_merge_with_stored_ones_in_claim_order_up_to_want() -> None:
    tasks = [NewTask("x", "t"), NewTask("y", "t")]
    fresh, ids = fresh_batch(tasks, keys=[5, 1])
    stored: list[tuple[Order, str]] = [((3, "s"), "row-s")]
    picks = claim_order(fresh, group("t", free=2), T0, stored, want=2)
    assert [p.row or (p.fresh and p.fresh.task.name) for p in picks] == ["y", "row-s"]
    [first, _] = picks
    assert first.fresh is not None
    assert first.fresh.task.id == ids[1]
    assert first.fresh.task.scheduled_at == T0  # due now: the batch's instant


def test_fresh_tasks_the_group_cannot_run_are_left_out() -> None:
    later = T0 + timedelta(minutes=5)
    tasks = [
        NewTask("other-type", "u"),
        NewTask("needs-gpu", "t", required_capabilities=("gpu",)),
        NewTask("later", "t", scheduled_at=later),
        NewTask("keyed", "t", idempotency_key="k"),
        NewTask("fits", "t", priority=Priority.HIGH),
    ]
    fresh, _ = fresh_batch(tasks, keys=[1, 2, 3, 4, 5])
    picks = fresh.pick(group("t", free=10), T0, NONE, want=10)
    assert [p.fresh.task.name for p in picks if p.fresh] == ["fits"]
    ahead = fresh.pick(group("t", free=10), later, NONE, want=10)
    assert [p.fresh.task.name for p in ahead if p.fresh] == ["later", "fits"]


def test_a_placed_fresh_task_is_not_picked_again() -> None:
    fresh, _ = fresh_batch([NewTask("x", "t")], keys=[1])
    [pick] = fresh.pick(group("t"), T0, NONE, want=1)
    assert pick.fresh is not None
    agent = uuid.uuid4()
    fresh.place(pick.fresh, agent)
    assert fresh.placed == {0: (agent, 1)}
    assert fresh.pick(group("t"), T0, NONE, want=1) == []
