"""REST for the first hour: ``capabilities`` as an alias of ``required_capabilities`` on
create, and ``GET /api/tasks?id_prefix=`` behind the CLI's short ids (both stores)."""

from __future__ import annotations

import httpx


async def test_capabilities_is_an_alias_of_required_capabilities(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(
        "/api/tasks", json={"task_type": "t", "capabilities": ["chrome", "headless", "chrome"]}
    )
    assert made.status_code == 201, made.text
    assert made.json()["required_capabilities"] == ["chrome", "headless"]
    batch = await client.post(
        "/api/tasks/batch", json={"tasks": [{"task_type": "t", "capabilities": ["gpu"]}]}
    )
    assert batch.json()["items"][0]["required_capabilities"] == ["gpu"]


async def test_capabilities_and_required_capabilities_together_are_refused(
    client: httpx.AsyncClient,
) -> None:
    both = await client.post(
        "/api/tasks",
        json={"task_type": "t", "capabilities": ["a"], "required_capabilities": ["b"]},
    )
    assert both.status_code == 422
    assert "not both" in both.text
    empty_both = await client.post(
        "/api/tasks", json={"task_type": "t", "capabilities": [], "required_capabilities": []}
    )
    assert empty_both.status_code == 422


async def test_the_alias_is_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schema = spec["components"]["schemas"]["TaskCreate"]["properties"]
    assert "Alias of `required_capabilities`" in schema["capabilities"]["description"]
    parameters = spec["paths"]["/api/tasks"]["get"]["parameters"]
    assert "id_prefix" in [parameter["name"] for parameter in parameters]


async def test_list_by_id_prefix(client: httpx.AsyncClient) -> None:
    ids = [
        (await client.post("/api/tasks", json={"task_type": "t"})).json()["id"] for _ in range(3)
    ]
    for task_id in ids:
        for prefix in (task_id[:8], task_id[:6].upper(), task_id[:13], task_id.replace("-", "")):
            page = (await client.get("/api/tasks", params={"id_prefix": prefix})).json()
            assert [item["id"] for item in page["items"]] == [task_id], prefix
            assert page["total"] == 1
    everything = (await client.get("/api/tasks", params={"id_prefix": "-"})).status_code
    assert everything == 422
    for bad in ("xyz", "0" * 33, ""):
        response = await client.get("/api/tasks", params={"id_prefix": bad})
        assert response.status_code == 422, bad
    none = (await client.get("/api/tasks", params={"id_prefix": "f" * 32})).json()
    assert none["total"] == 0  # no random id is all f
