"""Contract: keyset (cursor) pages of the task list, and the narrow read reconciliation uses."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    HeldTask,
    NewTask,
    TaskCursor,
    TaskFilter,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group


async def _walk(
    store: Store, query: TaskFilter, limit: int, between: int, hours: int
) -> list[UUID]:
    """Follow ``next`` from the first page, creating ``between`` new tasks (newer than any,
    from ``T0 + hours``) after each page."""
    seen: list[UUID] = []
    after: TaskCursor | None = None
    later = T0 + timedelta(hours=hours)
    while True:
        page = await store.list_tasks(query, limit=limit, after=after, with_total=False)
        assert page.total is None
        assert len(page.items) <= limit
        seen.extend(task.id for task in page.items)
        for n in range(between):
            later += timedelta(microseconds=1 if n % 2 else 0)  # ties on created_at too
            await store.create_tasks([NewTask(f"new-{len(seen)}-{n}", "alpha")], now=later)
        if page.next is None:
            return seen
        assert page.next == TaskCursor.of(page.items[-1])
        after = TaskCursor.decode(page.next.encode())  # through the opaque string


async def test_cursor_pages_walk_every_task_once_while_tasks_are_inserted(store: Store) -> None:
    for batch in range(5):  # five tasks per batch share one created_at: the id breaks ties
        await store.create_tasks(
            [NewTask(f"b{batch}-{n}", "alpha" if n % 2 else "beta") for n in range(5)],
            now=T0 + timedelta(seconds=batch),
        )
    everything = await store.list_tasks(TaskFilter(), limit=1000)
    assert everything.next is None
    expected = [task.id for task in everything.items]
    assert len(expected) == 25
    assert await _walk(store, TaskFilter(), limit=4, between=2, hours=1) == expected

    alphas = await store.list_tasks(TaskFilter(task_type="alpha"), limit=1000)
    expected_alpha = [task.id for task in alphas.items]  # new tasks (alpha) included
    assert len(expected_alpha) == 10 + 2 * 7
    assert (
        await _walk(store, TaskFilter(task_type="alpha"), limit=3, between=1, hours=2)
        == expected_alpha
    )
    # A page size that divides the list: the last full page still says there is no next.
    fresh = await store.list_tasks(TaskFilter(task_type="beta"), limit=15)
    assert (len(fresh.items), fresh.next, fresh.total) == (15, None, 15)


async def test_a_cursor_page_can_also_count_and_skip(store: Store) -> None:
    await store.create_tasks([NewTask(f"n{n}", "t") for n in range(6)], now=T0)
    first = await store.list_tasks(TaskFilter(), limit=2)
    assert first.total == 6
    assert first.next is not None
    second = await store.list_tasks(TaskFilter(), limit=2, after=first.next, offset=1)
    everything = (await store.list_tasks(TaskFilter(), limit=10)).items
    assert [task.id for task in second.items] == [task.id for task in everything[3:5]]
    assert second.total == 6


async def test_list_held_reads_only_the_active_tasks_of_the_agents(
    store: Store, connect: ConnectAgent
) -> None:
    one = await connect("a1")
    two = await connect("a2")
    idle = await connect("a3")
    await store.create_tasks([NewTask(f"n{n}", "t") for n in range(5)], now=T0)
    now = T0 + timedelta(seconds=1)
    dispatches = await store.claim_tasks([group([one], free=2), group([two], free=2)], now=now)
    assert len(dispatches) == 4
    by_agent: dict[UUID, list[UUID]] = {}
    for dispatch in dispatches:
        by_agent.setdefault(dispatch.agent_id, []).append(dispatch.task.id)
    done, running = by_agent[one.id]
    [outcome] = await store.finish_attempts(
        [AttemptResult(AttemptRef(done, 1, one.id), AttemptOutcome.SUCCEEDED, finished_at=now)],
        now=now,
    )
    assert outcome.accepted
    cancelling = by_agent[two.id][0]
    await store.cancel_task(cancelling, now=now)

    held = await store.list_held([one.id])
    assert held == [HeldTask(running, one.id, 1, TaskStatus.DISPATCHED, "t")]
    both = sorted(await store.list_held([one.id, two.id, idle.id]), key=lambda h: str(h.id))
    expected = {
        running: TaskStatus.DISPATCHED,
        cancelling: TaskStatus.CANCELLING,
        by_agent[two.id][1]: TaskStatus.DISPATCHED,
    }
    assert {h.id: h.status for h in both} == expected
    assert {h.agent_id for h in both} == {one.id, two.id}
    assert await store.list_held([idle.id]) == []
    assert await store.list_held([]) == []
