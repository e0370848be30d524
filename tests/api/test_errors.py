"""Every kind of bad input gets the one error shape and the right status; none gets a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

JSON = {"Content-Type": "application/json"}
TASK = "00000000-0000-4000-8000-000000000000"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    "body",
    ['{"name": "x", "task_type": "t"', "{'task_type': 't'}", "nul\x00l", "{,}", '{"a":1}}'],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: str) -> None:
    response = await client.post("/api/tasks", headers=JSON, content=body)
    assert_error(response, 400, "malformed_json")


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    body = '{"task_type": "t", "payload": {"a": ' + "[" * 30_000 + "]" * 30_000 + "}}"
    response = await client.post("/api/tasks", headers=JSON, content=body)
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{}", "task_type"),
        ('{"task_type": ""}', "task_type"),
        ('{"task_type": 5}', "task_type"),
        ('{"task_type": "' + "x" * 300 + '"}', "task_type"),
        ('{"task_type": "t", "priority": "urgent"}', "priority"),
        ('{"task_type": "t", "payload": [1, 2]}', "payload"),
        ('{"task_type": "t", "payload": "text"}', "payload"),
        ('{"task_type": "t", "payload": {"x": NaN}}', "payload"),
        ('{"task_type": "t", "payload": {"x": Infinity}}', "payload"),
        ('{"task_type": "t", "payload": {"x": 1e999}}', "payload"),
        ('{"task_type": "t", "payload": {"x": 123456789012345678901234567890}}', "payload"),
        ('{"task_type": "t", "payload": {"x": "\\u0000"}}', "payload"),
        ('{"task_type": "t\\u0000"}', "task_type"),
        ('{"task_type": "t", "name": ""}', "name"),
        ('{"task_type": "t", "typo": 1}', "typo"),
        ('{"task_type": "t", "required_capabilities": "chrome"}', "required_capabilities"),
        ('{"task_type": "t", "required_capabilities": [""]}', "required_capabilities[0]"),
        ('{"task_type": "t", "scheduled_at": "tomorrow"}', "scheduled_at"),
        ('{"task_type": "t", "scheduled_at": "2030-01-01T00:00:00"}', "scheduled_at"),
        ('{"task_type": "t", "scheduled_at": "9999-12-31T23:59:59-23:00"}', "scheduled_at"),
        ('{"task_type": "t", "delay_seconds": -1}', "delay_seconds"),
        ('{"task_type": "t", "delay_seconds": 1e300}', "delay_seconds"),
        (
            '{"task_type": "t", "delay_seconds": 1, "scheduled_at": "2030-01-01T00:00:00Z"}',
            None,
        ),
        ('{"task_type": "t", "timeout_seconds": 0}', "timeout_seconds"),
        ('{"task_type": "t", "timeout_seconds": 1e308}', "timeout_seconds"),
        ('{"task_type": "t", "max_retries": -1}', "max_retries"),
        ('{"task_type": "t", "max_retries": 1.5}', "max_retries"),
        ('{"task_type": "t", "max_retries": 99999999999999999999}', "max_retries"),
        ('{"task_type": "t", "retry_backoff_seconds": -3}', "retry_backoff_seconds"),
        ('{"task_type": "t", "idempotency_key": ""}', "idempotency_key"),
        ("[]", None),
        ('"task"', None),
        ("null", None),
        ("", None),
    ],
)
async def test_invalid_task_is_422_naming_the_field(
    client: httpx.AsyncClient, body: str, field: str | None
) -> None:
    response = await client.post("/api/tasks", headers=JSON, content=body)
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == field
    if field is not None:
        assert field.split("[")[0] in error["message"]
    assert (await client.get("/api/tasks")).json()["total"] == 0


@pytest.mark.parametrize(
    "body", ['{"task_type": "t", "payload": {"\\ud800": 1}}', '{"task_type": "\\udfff"}']
)
async def test_lone_surrogates_are_422(client: httpx.AsyncClient, body: str) -> None:
    response = await client.post("/api/tasks", headers=JSON, content=body)
    assert_error(response, 422, "invalid_input")


async def test_form_body_without_json_content_type_is_422_with_a_hint(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/tasks", content=b'{"task_type": "t"}')
    error = assert_error(response, 422)
    assert "Content-Type: application/json" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"name": ""}', "name"),
        ('{"capabilities": ["chrome"]}', "name"),
        ('{"name": "a", "status": "on"}', "status"),
        ('{"name": "a", "capabilities": "chrome"}', "capabilities"),
        ('{"name": "a", "max_concurrent_tasks": 0}', "max_concurrent_tasks"),
        ('{"name": "a\\u0000"}', "name"),
        ('{"name": "a", "colour": "red"}', "colour"),
    ],
)
async def test_invalid_agent_is_422(client: httpx.AsyncClient, body: str, field: str) -> None:
    response = await client.post("/api/agents", headers=JSON, content=body)
    assert assert_error(response, 422, "invalid_input")["field"] == field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=pending&status=nope", "status"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999999999999999", "offset"),
        ("agent_id=xyz", "agent_id"),
        ("cron_job_id=1", "cron_job_id"),
        ("created_after=yesterday", "created_after"),
        ("created_after=2030-01-01T00:00:00", "created_after"),
        ("q=%00", "q"),
        ("task_type=", "task_type"),
    ],
)
async def test_invalid_list_query_is_422(client: httpx.AsyncClient, query: str, field: str) -> None:
    response = await client.get(f"/api/tasks?{query}")
    assert assert_error(response, 422, "invalid_input")["field"] == field


@pytest.mark.parametrize(
    "query", ["after_seq=-1", "after_seq=x", "attempt=0", "limit=0", "after_seq=1e99"]
)
async def test_invalid_log_query_is_422(client: httpx.AsyncClient, query: str) -> None:
    task = (await client.post("/api/tasks", json={"task_type": "t"})).json()
    response = await client.get(f"/api/tasks/{task['id']}/logs?{query}")
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/api/tasks/not-a-uuid", "task_not_found"),
        ("DELETE", "/api/tasks/123", "task_not_found"),
        ("GET", "/api/tasks/{task_id}", "task_not_found"),
        ("POST", "/api/tasks/%00/retry", "task_not_found"),
        ("GET", "/api/tasks/" + "9" * 5000 + "/logs", "task_not_found"),
        ("GET", "/api/agents/nope", "agent_not_found"),
        ("DELETE", "/api/agents/" + TASK, "agent_not_found"),
        ("GET", "/api/tasks/" + TASK, "task_not_found"),
        ("DELETE", "/api/tasks/" + TASK, "task_not_found"),
        ("GET", "/api/nothing-here", "not_found"),
    ],
)
async def test_unknown_ids_and_routes_are_404(
    client: httpx.AsyncClient, method: str, path: str, code: str
) -> None:
    assert_error(await client.request(method, path), 404, code)


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    assert_error(await client.put("/api/tasks"), 405, "method_not_allowed")


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = '{"task_type": "t", "payload": {"x": "' + "y" * 70_000 + '"}}'
    response = await client.post("/api/tasks", headers=JSON, content=big)
    assert_error(response, 413, "payload_too_large")
    fits = '{"task_type": "t", "payload": {"x": "' + "y" * 60_000 + '"}}'
    assert (await client.post("/api/tasks", headers=JSON, content=fits)).status_code == 201


async def test_streamed_body_over_the_limit_is_413_without_content_length(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"task_type": "t", "payload": {"x": "'
        for _ in range(10):
            yield b"z" * 10_000
        yield b'"}}'

    response = await client.post("/api/tasks", headers=JSON, content=chunks())
    assert_error(response, 413, "payload_too_large")
    assert (await client.get("/api/tasks")).json()["total"] == 0


async def test_lying_content_length_is_still_counted(app: FastAPI) -> None:
    sent: list[MutableMapping[str, Any]] = []
    body = b'{"task_type": "t", "payload": {"x": "' + b"q" * 100_000 + b'"}}'
    messages = [
        {"type": "http.request", "body": body[i : i + 8192], "more_body": True}
        for i in range(0, len(body), 8192)
    ]
    messages[-1]["more_body"] = False

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/tasks",
        "raw_path": b"/api/tasks",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_unexpected_exception_is_a_500_in_the_error_shape(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/test-broken", broken)
    response = await client.get("/api/test-broken")
    error = assert_error(response, 500, "internal_error")
    assert "a bug" not in error["message"]  # details go to the log, not to the client
