"""Task list pages over the API: the `next` cursor walks every task once while tasks are
created in between; counts only when asked; a cursor not handed out is a 422."""

from __future__ import annotations

import httpx


async def _create(client: httpx.AsyncClient, name: str, task_type: str = "t") -> str:
    response = await client.post("/api/tasks", json={"name": name, "task_type": task_type})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


async def test_the_next_cursor_walks_every_task_once_while_tasks_are_created(
    client: httpx.AsyncClient,
) -> None:
    batch = [{"name": f"n{n}", "task_type": "t"} for n in range(12)]
    created = await client.post("/api/tasks/batch", json={"tasks": batch})  # one created_at
    assert created.status_code == 201, created.text
    for n in range(5):
        await _create(client, f"single-{n}")
    first = (await client.get("/api/tasks", params={"limit": 1000})).json()
    expected = [item["id"] for item in first["items"]]
    assert (len(expected), first["total"], first["next"]) == (17, 17, None)

    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 5}
    pages = 0
    while True:
        response = await client.get("/api/tasks", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        # Counted on the first page only (by default).
        assert (page["total"] is None) == ("cursor" in params)
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        await _create(client, f"meanwhile-{pages}")
        if page["next"] is None:
            break
        params = {"limit": 5, "cursor": page["next"]}
    assert seen == expected
    assert pages == 4


async def test_totals_are_counted_when_asked(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await _create(client, f"n{n}")
    plain = (await client.get("/api/tasks", params={"limit": 1})).json()
    assert plain["total"] == 3  # as before: a first page counts
    assert plain["next"] is not None
    uncounted = await client.get("/api/tasks", params={"limit": 1, "include_total": "false"})
    assert uncounted.json()["total"] is None
    following = await client.get(
        "/api/tasks", params={"limit": 1, "cursor": plain["next"], "include_total": "true"}
    )
    assert following.json()["total"] == 3
    assert len(following.json()["items"]) == 1


async def test_a_cursor_not_handed_out_is_refused(client: httpx.AsyncClient) -> None:
    for cursor in ("nope", "dDE6MTox", "x" * 201):
        response = await client.get("/api/tasks", params={"cursor": cursor})
        assert response.status_code == 422, cursor
        assert response.json()["error"]["field"] == "cursor"
