"""REST auth: every route of the OpenAPI document against every role, 401 vs 403, expiry,
revocation, the token API, and what stays open."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.config import AuthConfig, DatabaseConfig
from hetuflow.server.app import create_app
from hetuflow.server.auth import issue_token
from hetuflow.tokens import Role

from .conftest import ANY_ID, bearer, context_of, secured_config

READS = {"get", "head"}
STREAMS_FOREVER = {("get", "/api/events")}  # a valid token gets an endless stream: not read
HOOK_CALL = ("post", "/api/hooks/{name}")
"""Open without a token: the hook's signature is checked instead (tests/api/test_triggers.py)."""


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every route in the OpenAPI document."""
    for path, operations in app.openapi()["paths"].items():
        concrete = path
        for name in ("task_id", "agent_id", "cron_job_id", "token_id", "trigger_id"):
            concrete = concrete.replace("{" + name + "}", str(ANY_ID))
        for method in operations:
            yield method, concrete


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body: Any = None if method in READS or method == "delete" else {}
    return await client.request(method.upper(), path, json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "field"}
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return error


async def test_without_a_token_only_health_and_static_files_answer(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    seen = 0
    for method, path in routes(app):
        if path in ("/healthz", "/readyz"):
            assert (await call(client, method, path)).status_code == 200
            continue
        if (method, path) == HOOK_CALL:
            continue
        assert_error(await call(client, method, path), 401, "unauthorized")
        seen += 1
    assert seen >= 25
    assert_error(await client.get("/metrics"), 401, "unauthorized")
    for path in ("/", "/static/lib.js", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_viewer_reads_and_cannot_write_anything(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    headers = bearer(tokens[Role.VIEWER])
    writes = 0
    for method, path in routes(app):
        if path in ("/healthz", "/readyz") or (method, path) in STREAMS_FOREVER | {HOOK_CALL}:
            continue
        response = await call(client, method, path, headers)
        if method in READS and not path.startswith("/api/tokens"):
            assert response.status_code not in (401, 403), (method, path, response.text)
        else:
            error = assert_error(response, 403, "forbidden")
            assert "viewer" in error["message"]
            writes += 1
    assert writes >= 15
    assert (await client.get("/metrics", headers=headers)).status_code == 200
    assert (await client.get("/api/tasks")).status_code == 401
    # nothing was written by any of those calls
    listed = await client.get("/api/tasks", headers=headers)
    assert listed.json()["total"] == 0
    assert (await client.get("/api/cron-jobs", headers=headers)).json()["items"] == []


async def test_an_operator_writes_but_does_not_manage_tokens(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    headers = bearer(tokens[Role.OPERATOR])
    for method, path in routes(app):
        if (method, path) in STREAMS_FOREVER:
            continue
        response = await call(client, method, path, headers)
        if path.startswith("/api/tokens"):
            error = assert_error(response, 403, "forbidden")
            assert "admin" in error["message"]
        else:
            assert response.status_code not in (401, 403), (method, path, response.text)
    created = await client.post(
        "/api/tasks", json={"task_type": "shell", "payload": {"command": "true"}}, headers=headers
    )
    assert created.status_code == 201
    cancelled = await client.delete(f"/api/tasks/{created.json()['id']}", headers=headers)
    assert cancelled.json()["status"] == "cancelled"


async def test_an_admin_may_do_everything(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    headers = bearer(tokens[Role.ADMIN])
    for method, path in routes(app):
        if (method, path) in STREAMS_FOREVER:
            continue
        response = await call(client, method, path, headers)
        assert response.status_code not in (401, 403), (method, path, response.text)


async def test_an_agent_token_opens_no_route(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    headers = bearer(tokens[Role.AGENT])
    for method, path in routes(app):
        if path in ("/healthz", "/readyz") or (method, path) == HOOK_CALL:
            continue
        assert_error(await call(client, method, path, headers), 403, "forbidden")
    assert_error(await client.get("/metrics", headers=headers), 403, "forbidden")


@pytest.mark.parametrize(
    "authorization",
    [
        "hf_notarealtoken",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer hf_" + "A" * 5000,
        "Bearer ' OR '1'='1",
        "Bearer \u00e9t\u00e9".encode(),
    ],
)
async def test_malformed_and_unknown_tokens_are_401(
    client: httpx.AsyncClient, tokens: dict[Role, str], authorization: str | bytes
) -> None:
    value = authorization if isinstance(authorization, bytes) else authorization.encode()
    response = await client.get("/api/tasks", headers=[(b"Authorization", value)])
    assert_error(response, 401, "unauthorized")


async def test_expired_and_revoked_tokens_are_refused(
    app: FastAPI, client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    context = context_of(app)
    now = context.clock.now()
    expired, _ = await issue_token(
        context.store,
        name="old",
        role=Role.ADMIN,
        now=now - timedelta(days=2),
        expires_at=now - timedelta(seconds=1),
    )
    error = assert_error(
        await client.get("/api/stats", headers=bearer(expired)), 401, "unauthorized"
    )
    assert "expired" in error["message"]

    admin = bearer(tokens[Role.ADMIN])
    made = await client.post(
        "/api/tokens", json={"role": "viewer", "expires_in_seconds": 3600}, headers=admin
    )
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    assert (await client.get("/api/stats", headers=bearer(secret))).status_code == 200
    revoked = await client.delete(f"/api/tokens/{made.json()['id']}", headers=admin)
    assert revoked.json()["status"] == "revoked"
    error = assert_error(
        await client.get("/api/stats", headers=bearer(secret)), 401, "unauthorized"
    )
    assert "revoked" in error["message"]
    # an admin cannot revoke itself back into use, and revoking again is harmless
    again = await client.delete(f"/api/tokens/{made.json()['id']}", headers=admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_the_token_api_shows_a_secret_once(
    client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    admin = bearer(tokens[Role.ADMIN])
    made = await client.post("/api/tokens", json={"role": "operator", "name": "ci"}, headers=admin)
    assert made.status_code == 201
    body = made.json()
    assert body["token"].startswith(body["hint"])
    assert (body["name"], body["role"], body["status"], body["expires_at"]) == (
        "ci",
        "operator",
        "active",
        None,
    )
    listed = (await client.get("/api/tokens", headers=admin)).json()["items"]
    assert body["id"] in [item["id"] for item in listed]
    assert all("token" not in item for item in listed)
    assert body["token"] not in (await client.get("/api/tokens", headers=admin)).text
    created = await client.post(
        "/api/tasks", json={"task_type": "t"}, headers=bearer(body["token"])
    )
    assert created.status_code == 201


async def test_token_api_input_errors(client: httpx.AsyncClient, tokens: dict[Role, str]) -> None:
    admin = bearer(tokens[Role.ADMIN])
    no_agent = await client.post("/api/tokens", json={"role": "agent"}, headers=admin)
    assert assert_error(no_agent, 422, "invalid_input")["field"] == "agent_id"
    viewer_agent = await client.post(
        "/api/tokens", json={"role": "viewer", "agent_id": str(ANY_ID)}, headers=admin
    )
    assert assert_error(viewer_agent, 422, "invalid_input")["field"] == "agent_id"
    ghost = await client.post(
        "/api/tokens", json={"role": "agent", "agent_id": str(ANY_ID)}, headers=admin
    )
    assert_error(ghost, 404, "agent_not_found")
    bad_role = await client.post("/api/tokens", json={"role": "root"}, headers=admin)
    assert assert_error(bad_role, 422, "invalid_input")["field"] == "role"
    forever = await client.post(
        "/api/tokens", json={"role": "viewer", "expires_in_seconds": 1e12}, headers=admin
    )
    assert assert_error(forever, 422, "invalid_input")["field"] == "expires_in_seconds"
    assert_error(
        await client.delete(f"/api/tokens/{ANY_ID}", headers=admin), 404, "token_not_found"
    )
    assert_error(await client.delete("/api/tokens/nope", headers=admin), 404, "token_not_found")


async def test_metrics_can_be_left_open(database: DatabaseConfig) -> None:
    config = secured_config(database).model_copy(
        update={"auth": AuthConfig(enabled=True, metrics_open=True)}
    )
    application = create_app(config)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/metrics")).status_code == 200
            assert (await http.get("/api/stats")).status_code == 401


async def test_the_openapi_document_declares_the_bearer_scheme(app: FastAPI) -> None:
    document = app.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["token"]["description"],
    }
    assert document["paths"]["/api/tasks"]["get"]["security"] == [{"token": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


async def test_a_task_read_checks_tokens_alike_before_and_in_fastapi(
    client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    """``GET /api/tasks/{id}`` with a canonical id is answered before FastAPI
    (``hot_routes``); with the id's bare hex by the route behind ``authorize``."""
    created = await client.post(
        "/api/tasks", json={"task_type": "t"}, headers=bearer(tokens[Role.OPERATOR])
    )
    task_id = created.json()["id"]
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 401),
        ({"Authorization": "Bearer hf_notarealtoken"}, 401),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        (bearer(tokens[Role.AGENT]), 403),
        (bearer(tokens[Role.VIEWER]), 200),
    ]
    for headers, status in cases:
        short = await client.get(f"/api/tasks/{task_id}", headers=headers)
        routed = await client.get(f"/api/tasks/{task_id.replace('-', '')}", headers=headers)
        assert short.status_code == routed.status_code == status, headers
        assert short.json() == routed.json()
        assert short.headers.get("www-authenticate") == routed.headers.get("www-authenticate")


async def test_a_create_checks_tokens_alike_before_and_in_fastapi(
    client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    """``POST /api/tasks`` with ``application/json`` is answered before FastAPI
    (``hot_routes``); with another JSON type by the route behind ``authorize``. The token is
    checked where FastAPI checks it: after the body is read as JSON, before it is validated."""
    cases: list[tuple[dict[str, str], bytes, int]] = [
        ({}, b'{"task_type": "t"}', 401),
        ({}, b"{not json", 400),
        ({}, b'{"task_type": ""}', 401),
        (bearer(tokens[Role.VIEWER]), b'{"task_type": "t"}', 403),
        (bearer(tokens[Role.AGENT]), b'{"task_type": "t"}', 403),
        (bearer(tokens[Role.OPERATOR]), b'{"task_type": ""}', 422),
        (bearer(tokens[Role.OPERATOR]), b'{"task_type": "t", "idempotency_key": "k"}', 201),
    ]
    # the second create of an idempotency key answers 200 with the same task
    await _checked_alike(client, "/api/tasks", cases, created_again=200)


async def test_a_batch_checks_tokens_alike_before_and_in_fastapi(
    client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    """``POST /api/tasks/batch`` too (``hot_routes`` answers it since the eighth round): no
    role below operator creates anything through it, on either path."""
    one = b'{"tasks": [{"task_type": "t", "idempotency_key": "b"}]}'
    cases: list[tuple[dict[str, str], bytes, int]] = [
        ({}, one, 401),
        ({}, b"{not json", 400),
        ({}, b'{"tasks": []}', 401),
        (bearer(tokens[Role.VIEWER]), one, 403),
        (bearer(tokens[Role.AGENT]), one, 403),
        (bearer(tokens[Role.OPERATOR]), b'{"tasks": []}', 422),
        (bearer(tokens[Role.OPERATOR]), one, 201),
    ]
    # the second batch of an idempotency key answers 201 with the same task, not created
    answers = await _checked_alike(client, "/api/tasks/batch", cases, created_again=201)
    assert answers[-1].json()["created"] == [True]


async def _checked_alike(
    client: httpx.AsyncClient,
    path: str,
    cases: list[tuple[dict[str, str], bytes, int]],
    *,
    created_again: int,
) -> list[httpx.Response]:
    """Each case sent before FastAPI (``application/json``) and then to the route (another
    JSON type): the status the case names, and the same answer on both paths. The answers
    before FastAPI, in order."""
    shorts = []
    for headers, body, status in cases:
        short = await client.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        routed = await client.post(
            path, content=body, headers={**headers, "Content-Type": "application/vnd.test+json"}
        )
        assert short.status_code == status, (headers, body, short.text)
        assert routed.status_code == (created_again if status == 201 else status), (headers, body)
        # the same answer (a batch's items: ``created`` says False the second time)
        assert _same(short.json()) == _same(routed.json())
        assert short.headers.get("www-authenticate") == routed.headers.get("www-authenticate")
        shorts.append(short)
    return shorts


def _same(answer: Any) -> Any:
    """What both paths answer alike: a batch's items, or the whole answer."""
    return answer["items"] if isinstance(answer, dict) and "items" in answer else answer
