"""The SDK's task pages: ``next`` as ``cursor``, and ``iter_tasks`` walking every task once
while tasks are created in between (sync and async clients, real server)."""

from __future__ import annotations

from hetuflow import AsyncClient, Client


def test_cursor_pages_and_iter_tasks_see_each_task_once(client: Client) -> None:
    created = client.submit_many([{"task_type": "t", "name": f"n{n}"} for n in range(7)])
    for n in range(4):
        client.submit("t", name=f"single-{n}")
    expected = [task.id for task in client.list_tasks(limit=1000).items]
    assert len(expected) == 11
    assert set(expected) >= {task.id for task in created}

    first = client.list_tasks(limit=4)
    assert (first.total, len(first.items)) == (11, 4)
    assert first.next is not None
    second = client.list_tasks(limit=4, cursor=first.next)
    assert second.total is None
    assert [task.id for task in first.items + second.items] == expected[:8]

    seen = []
    for task in client.iter_tasks(page_size=3):
        seen.append(task.id)
        if len(seen) % 3 == 0:
            client.submit("t", name=f"meanwhile-{len(seen)}")  # newer: not part of the walk
    assert seen == expected


async def test_async_iter_tasks_follows_the_cursor(async_client: AsyncClient) -> None:
    for n in range(5):
        await async_client.submit("t", name=f"n{n}")
    expected = [task.id for task in (await async_client.list_tasks(limit=100)).items]
    seen = []
    async for task in async_client.iter_tasks(page_size=2):
        seen.append(task.id)
        await async_client.submit("t", name=f"meanwhile-{len(seen)}")
    assert seen == expected
