"""SQL injection attempts in every list filter, on SQLite and PostgreSQL: text filters match
literally (``%``, ``_``, quotes included), typed filters refuse what is not their type, and
every table is intact afterwards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hetuflow.tokens import Role

from .conftest import bearer

ATTACKS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "x'; DROP TABLE tasks; --",
    '"; DROP TABLE tasks; --',
    "') UNION SELECT id, name FROM api_tokens --",
    "%",
    "_",
    "\\",
    "%' OR secret_hash LIKE '%",
    "1; SELECT pg_sleep(5)",
]


@pytest.fixture
def headers(tokens: dict[Role, str]) -> dict[str, str]:
    return bearer(tokens[Role.OPERATOR])


async def _seed(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for name in ["plain", "100%", "a_b", "it's", *ATTACKS[:3]]:
        response = await client.post(
            "/api/tasks", json={"name": name, "task_type": name}, headers=headers
        )
        assert response.status_code == 201, response.text


async def test_text_filters_match_literally(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await _seed(client, headers)
    for attack in ATTACKS:
        for param in ("q", "task_type"):
            response = await client.get("/api/tasks", params={param: attack}, headers=headers)
            assert response.status_code == 200, (param, attack, response.text)
            names = [task["name"] for task in response.json()["items"]]
            if param == "task_type":
                assert names == ([attack] if attack in ATTACKS[:3] else []), (param, attack)
            else:
                assert all(attack in name for name in names), (param, attack, names)
    assert [t["name"] for t in (await _list(client, headers, q="%"))] == ["100%"]
    assert [t["name"] for t in (await _list(client, headers, q="_"))] == ["a_b"]
    assert [t["name"] for t in (await _list(client, headers, q="'"))] == [
        "x'; DROP TABLE tasks; --",
        "' OR 1=1 --",
        "' OR '1'='1",
        "it's",
    ]
    await _intact(client, headers)


async def _list(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    response = await client.get("/api/tasks", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/tasks", "status"),
        ("/api/tasks", "agent_id"),
        ("/api/tasks", "cron_job_id"),
        ("/api/tasks", "created_after"),
        ("/api/tasks", "created_before"),
        ("/api/tasks", "limit"),
        ("/api/tasks", "offset"),
        ("/api/agents", "status"),
        ("/api/agents", "online"),
    ],
)
async def test_typed_filters_refuse_injections(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, param: str
) -> None:
    for attack in ATTACKS:
        response = await client.get(path, params={param: attack}, headers=headers)
        assert response.status_code == 422, (path, param, attack, response.text)
        assert response.json()["error"]["field"] == param
    await _intact(client, headers)


async def test_path_and_log_parameters_refuse_injections(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await _seed(client, headers)
    task_id = (await _list(client, headers, q="plain"))[0]["id"]
    for attack in ATTACKS:
        for path in (f"/api/tasks/{attack}", f"/api/agents/{attack}", f"/api/cron-jobs/{attack}"):
            response = await client.get(path, headers=headers)
            assert response.status_code in (404, 422), (path, response.text)
        for param in ("after_seq", "attempt", "limit"):
            response = await client.get(
                f"/api/tasks/{task_id}/logs", params={param: attack}, headers=headers
            )
            assert response.status_code == 422, (param, attack, response.text)
    await _intact(client, headers)


async def _intact(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Every table still answers."""
    for path in ("/api/tasks", "/api/agents", "/api/cron-jobs", "/api/stats"):
        assert (await client.get(path, headers=headers)).status_code == 200, path
