"""REST: triggers, events and signed hooks (docs/triggers.md)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.config import AuthConfig, Config, DatabaseConfig, ServerConfig
from hetuflow.server.app import create_app
from hetuflow.server.auth import issue_token
from hetuflow.tokens import Role
from hetuflow.triggers import signature

from .helpers import context_of, make_config

INVOICE = {"task_type": "invoice", "priority": "high", "payload": {"copies": 2}}


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


async def _task_count(client: httpx.AsyncClient) -> int:
    total: int = (await client.get("/api/tasks")).json()["total"]
    return total


def _signed(secret: str, body: bytes, **extra: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "X-Hetuflow-Timestamp": stamp,
        "X-Hetuflow-Signature": signature(secret, stamp, body),
        "Content-Type": "application/json",
        **extra,
    }


async def test_a_trigger_is_created_read_listed_and_deleted(client: httpx.AsyncClient) -> None:
    body = {"name": "invoice", "event": "order.created", "filter": {"status": "paid"}}
    created = await client.post("/api/triggers", json={**body, "task": INVOICE})
    assert created.status_code == 201, created.text
    trigger = created.json()
    assert (trigger["name"], trigger["event"], trigger["filter"]) == (
        "invoice",
        "order.created",
        {"status": "paid"},
    )
    assert trigger["task"] == INVOICE  # as given
    assert (await client.get(f"/api/triggers/{trigger['id']}")).json() == trigger
    assert (await client.get("/api/triggers")).json()["items"] == [trigger]
    assert (await client.get("/api/triggers?event=other")).json()["items"] == []
    again = await client.post("/api/triggers", json={**body, "task": INVOICE})
    _error(again, 409, "trigger_name_taken")
    _error(await client.get("/api/triggers/nope"), 404, "trigger_not_found")
    assert (await client.delete(f"/api/triggers/{trigger['id']}")).status_code == 204
    _error(await client.get(f"/api/triggers/{trigger['id']}"), 404, "trigger_not_found")
    _error(await client.delete(f"/api/triggers/{trigger['id']}"), 404, "trigger_not_found")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": "no spaces"}, "event"),
        ({"event": ""}, "event"),
        ({"filter": {"a..b": 1}}, "filter.a..b"),
        ({"filter": {"": 1}}, "filter."),
        ({"task": {"priority": "high"}}, "task.task_type"),
        ({"task": {"task_type": "t", "idempotency_key": "k"}}, "task"),
        ({"task": {"task_type": "t", "payload": {"event": 1}}}, "task"),
        (
            {
                "task": {
                    "task_type": "t",
                    "concurrency_key": "k",
                    "concurrency_strategy": "cancel_newest",
                }
            },
            "task",
        ),
        ({"task": {"task_type": "t", "bogus": 1}}, "task.bogus"),
        ({"task": {"task_type": "t", "dispatch": "all"}}, "task"),
        ({"task": {"task_type": "t", "broadcast": True}}, "task"),
        (
            {"task": {"task_type": "t", "webhook_url": "https://hooks.example.com/x"}},
            "task.webhook_url",
        ),
        (
            {
                "workflow": {
                    "name": "w",
                    "steps": [
                        {"name": "a", "task_type": "t", "webhook_url": "https://h.example.com/"}
                    ],
                },
                "task": None,
            },
            "workflow.steps.a.webhook_url",
        ),
        ({"name": ""}, "name"),
    ],
)
async def test_a_bad_trigger_is_refused_and_nothing_is_created(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {"name": "t", "event": "order.created", "task": INVOICE, **change}
    error = _error(await client.post("/api/triggers", json=body), 422, "invalid_input")
    assert error["field"] == field, error
    assert (await client.get("/api/triggers")).json()["items"] == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"task": {"task_type": "t", "rate_limits": [{"name": "nope"}]}},
            "task.rate_limits",
            "the trigger's task names rate limit 'nope', which does not exist",
        ),
        (
            {"task": {"task_type": "t", "rate_limits": [{"name": "crm-api", "units": 6}]}},
            "task.rate_limits",
            "the trigger's task asks 6 units of rate limit 'crm-api', which allows 5 per window",
        ),
        (
            {
                "task": None,
                "workflow": {
                    "name": "w",
                    "steps": [
                        {"name": "a", "task_type": "t", "rate_limits": [{"name": "crm-api"}]},
                        {"name": "b", "task_type": "t", "rate_limits": [{"name": "gone"}]},
                    ],
                },
            },
            "workflow.steps.b.rate_limits",
            "the trigger's workflow step b names rate limit 'gone', which does not exist",
        ),
    ],
)
async def test_a_trigger_naming_a_rate_limit_it_cannot_use_is_refused(
    client: httpx.AsyncClient, change: dict[str, Any], field: str, message: str
) -> None:
    """Refused when made, not at every event of its key later (each would be a 422)."""
    limit = {"name": "crm-api", "limit": 5, "per_seconds": 60}
    assert (await client.post("/api/rate-limits", json=limit)).status_code == 201
    body = {"name": "t", "event": "order.created", "task": INVOICE, **change}
    error = _error(await client.post("/api/triggers", json=body), 422, "rate_limit_unknown")
    assert error["field"] == field, error
    assert error["message"].startswith(message), error
    assert (await client.get("/api/triggers")).json()["items"] == []
    fine = {
        "name": "ok",
        "event": "order.created",
        "task": {"task_type": "t", "rate_limits": [{"name": "crm-api", "units": 5}]},
    }
    assert (await client.post("/api/triggers", json=fine)).status_code == 201


async def test_deleting_a_rate_limit_keeps_the_triggers_naming_it_working(
    client: httpx.AsyncClient,
) -> None:
    for name in ("crm-api", "mail"):
        limit = {"name": name, "limit": 5, "per_seconds": 60}
        assert (await client.post("/api/rate-limits", json=limit)).status_code == 201
    uses = [{"name": "crm-api", "units": 2}, {"name": "mail", "units": 1}]
    task = {"task_type": "t", "rate_limits": uses}
    made = await client.post("/api/triggers", json={"name": "t", "event": "k", "task": task})
    assert made.status_code == 201, made.text
    assert (await client.delete("/api/rate-limits/crm-api")).status_code == 204
    trigger = (await client.get(f"/api/triggers/{made.json()['id']}")).json()
    assert trigger["task"]["rate_limits"] == [{"name": "mail", "units": 1}]
    sent = await client.post("/api/events", json={"key": "k"})
    assert sent.status_code == 201, sent.text
    [created] = sent.json()["tasks"]
    assert created["rate_limits"] == [{"name": "mail", "units": 1}]


async def test_an_event_creates_one_task_per_matching_trigger_once(
    client: httpx.AsyncClient,
) -> None:
    for name, filter in (("invoice", {"status": "paid"}), ("audit", {}), ("refund", {"x": 1})):
        task = {**INVOICE, "task_type": name}
        created = await client.post(
            "/api/triggers",
            json={"name": name, "event": "order.created", "filter": filter, "task": task},
        )
        assert created.status_code == 201, created.text
    await client.post(
        "/api/triggers", json={"name": "other", "event": "order.shipped", "task": INVOICE}
    )
    data = {"order": 42, "status": "paid"}
    sent = await client.post(
        "/api/events", json={"key": "order.created", "data": data, "id": "o42"}
    )
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    assert (answer["id"], answer["key"], answer["created"], answer["matched"]) == (
        "o42",
        "order.created",
        True,
        2,
    )
    assert [t["task_type"] for t in answer["tasks"]] == ["audit", "invoice"]
    invoice = answer["tasks"][1]
    assert invoice["priority"] == "high"
    assert invoice["payload"] == {
        "copies": 2,
        "event": {"key": "order.created", "id": "o42", "data": data},
    }
    assert invoice["status"] == "pending"
    # The same id again: nothing new, the first delivery's tasks.
    replay = await client.post(
        "/api/events", json={"key": "order.created", "data": {}, "id": "o42"}
    )
    assert replay.status_code == 200, replay.text
    assert replay.json()["created"] is False
    assert [t["id"] for t in replay.json()["tasks"]] == [t["id"] for t in answer["tasks"]]
    assert replay.json()["received_at"] == answer["received_at"]
    assert await _task_count(client) == 2
    # The same id with another key is a clear conflict.
    reused = await client.post("/api/events", json={"key": "order.shipped", "id": "o42"})
    assert _error(reused, 409, "event_id_reused")["field"] == "id"
    assert await _task_count(client) == 2
    # Without an id every event is new.
    for _ in range(2):
        fresh = await client.post("/api/events", json={"key": "order.created"})
        assert fresh.status_code == 201
        assert [t["task_type"] for t in fresh.json()["tasks"]] == ["audit"]
    assert await _task_count(client) == 4


SHIP = {
    "name": "ship",
    "steps": [
        {"name": "pack", "task_type": "pack", "payload": {"box": "m"}},
        {"name": "send", "task_type": "send", "depends_on": ["pack"]},
    ],
}


async def test_a_workflow_trigger_starts_a_workflow_once(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/triggers", json={"name": "ship", "event": "order.paid", "workflow": SHIP}
    )
    assert created.status_code == 201, created.text
    assert (created.json()["task"], created.json()["workflow"]) == (None, SHIP)
    sent = await client.post(
        "/api/events", json={"key": "order.paid", "id": "p1", "data": {"n": 1}}
    )
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    assert (answer["matched"], answer["tasks"]) == (1, [])
    [workflow] = answer["workflows"]
    assert workflow["name"] == "ship"
    steps = {step["name"]: step for step in workflow["steps"]}
    assert steps["pack"]["status"] == "pending"
    assert steps["send"]["status"] == "waiting"
    assert steps["pack"]["task"]["payload"] == {
        "box": "m",
        "event": {"key": "order.paid", "id": "p1", "data": {"n": 1}},
    }
    assert steps["send"]["task"]["payload"]["event"]["id"] == "p1"
    replay = await client.post("/api/events", json={"key": "order.paid", "id": "p1"})
    assert replay.status_code == 200
    assert [w["id"] for w in replay.json()["workflows"]] == [workflow["id"]]
    assert (await client.get("/api/workflows")).json()["total"] == 1


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({}, 422, "invalid_input", "task"),
        ({"task": INVOICE, "workflow": SHIP}, 422, "invalid_input", "task"),
        (
            {
                "workflow": {
                    "name": "w",
                    "steps": [{"name": "a", "task_type": "t", "depends_on": ["a"]}],
                }
            },
            422,
            "workflow_invalid",
            "steps.a.depends_on",
        ),
        (
            {
                "workflow": {
                    "name": "w",
                    "steps": [{"name": "a", "task_type": "t", "payload": {"event": 1}}],
                }
            },
            422,
            "invalid_input",
            "workflow",
        ),
        (
            {"workflow": {"name": "w", "steps": [{"name": "a"}]}},
            422,
            "invalid_input",
            "workflow.steps[0].task_type",
        ),
    ],
)
async def test_a_trigger_has_a_task_or_a_valid_workflow(
    client: httpx.AsyncClient, change: dict[str, Any], status: int, code: str, field: str
) -> None:
    body = {"name": "t", "event": "order.created", **change}
    error = _error(await client.post("/api/triggers", json=body), status, code)
    assert error["field"] == field, error
    assert (await client.get("/api/triggers")).json()["items"] == []


async def test_an_event_filtered_out_is_recorded_without_tasks(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/triggers",
        json={"name": "vip", "event": "signup", "filter": {"tier": "gold"}, "task": INVOICE},
    )
    sent = await client.post("/api/events", json={"key": "signup", "data": {"tier": "basic"}})
    assert sent.status_code == 201
    assert (sent.json()["matched"], sent.json()["tasks"]) == (0, [])
    assert await _task_count(client) == 0


async def test_an_event_with_no_trigger_is_refused_and_not_recorded(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.post("/api/events", json={"key": "order.creatd", "id": "e1"})
    assert _error(refused, 422, "no_trigger")["field"] == "key"
    await client.post("/api/triggers", json={"name": "t", "event": "order.creatd", "task": INVOICE})
    # Not recorded: once a trigger exists the same id is delivered for the first time.
    sent = await client.post("/api/events", json={"key": "order.creatd", "id": "e1"})
    assert sent.status_code == 201
    assert len(sent.json()["tasks"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {}}, "key"),
        ({"key": "a b"}, "key"),
        ({"key": "k", "data": [1]}, "data"),
        ({"key": "k", "id": ""}, "id"),
        ({"key": "k", "id": "x" * 201}, "id"),
        ({"key": "k", "extra": 1}, "extra"),
    ],
)
async def test_a_bad_event_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await client.post("/api/triggers", json={"name": "t", "event": "k", "task": INVOICE})
    error = _error(await client.post("/api/events", json=body), 422, "invalid_input")
    assert error["field"] == field, error
    assert await _task_count(client) == 0


async def _hook(client: httpx.AsyncClient, **body: str) -> dict[str, Any]:
    await client.post(
        "/api/triggers", json={"name": "pay", "event": "payment.done", "task": INVOICE}
    )
    created = await client.post(
        "/api/hooks", json={"name": "stripe", "event": "payment.done", **body}
    )
    assert created.status_code == 201, created.text
    hook: dict[str, Any] = created.json()
    return hook


async def test_a_signed_hook_call_becomes_an_event_once(client: httpx.AsyncClient) -> None:
    hook = await _hook(client)
    assert hook["secret"].startswith("whsec_")
    assert hook["path"] == "/api/hooks/stripe"
    listed = (await client.get("/api/hooks")).json()["items"]
    assert [h["name"] for h in listed] == ["stripe"]
    assert "secret" not in listed[0]
    body = b'{"amount": 10}'
    called = await client.post(
        "/api/hooks/stripe", content=body, headers=_signed(hook["secret"], body)
    )
    assert called.status_code == 201, called.text
    [task] = called.json()["tasks"]
    assert task["payload"]["event"]["data"] == {"amount": 10}
    assert task["payload"]["event"]["id"].startswith("hook:stripe:")
    # The same body again is the same event (its id is the body's hash) ...
    again = await client.post(
        "/api/hooks/stripe", content=body, headers=_signed(hook["secret"], body)
    )
    assert again.status_code == 200
    assert again.json()["tasks"][0]["id"] == task["id"]
    # ... unless the caller names the event.
    named = _signed(hook["secret"], body, **{"X-Hetuflow-Event-Id": "evt_2"})
    other = await client.post("/api/hooks/stripe", content=body, headers=named)
    assert other.status_code == 201
    assert other.json()["id"] == "evt_2"
    assert await _task_count(client) == 2


async def test_a_hook_with_a_given_secret(client: httpx.AsyncClient) -> None:
    hook = await _hook(client, secret="0123456789abcdef")
    assert hook["secret"] == "0123456789abcdef"
    body = b"{}"
    called = await client.post(
        "/api/hooks/stripe", content=body, headers=_signed("0123456789abcdef", body)
    )
    assert called.status_code == 201
    short = await client.post("/api/hooks", json={"name": "h2", "event": "e", "secret": "short"})
    assert _error(short, 422, "invalid_input")["field"] == "secret"


async def test_a_bad_signature_is_401_and_creates_nothing(client: httpx.AsyncClient) -> None:
    hook = await _hook(client)
    body = b'{"amount": 10}'
    stale = str(int(time.time()) - 600)
    for headers in (
        {},
        _signed("not-the-secret-at-all", body),
        _signed(hook["secret"], b'{"amount": 11}'),
        {
            "X-Hetuflow-Timestamp": stale,
            "X-Hetuflow-Signature": signature(hook["secret"], stale, body),
        },
        {**_signed(hook["secret"], body), "X-Hetuflow-Timestamp": "now"},
    ):
        refused = await client.post("/api/hooks/stripe", content=body, headers=headers)
        _error(refused, 401, "signature_invalid")
    assert await _task_count(client) == 0


async def test_unknown_hooks_and_bad_bodies(client: httpx.AsyncClient) -> None:
    hook = await _hook(client)
    body = b"{}"
    _error(
        await client.post("/api/hooks/nope", content=body, headers=_signed(hook["secret"], body)),
        404,
        "hook_not_found",
    )
    for bad in (b"[1]", b"not json", b'{"a": "\\u0000"}'):
        refused = await client.post(
            "/api/hooks/stripe", content=bad, headers=_signed(hook["secret"], bad)
        )
        assert _error(refused, 422, "invalid_input")["field"] == "body"
    again = await client.post("/api/hooks", json={"name": "stripe", "event": "x"})
    _error(again, 409, "hook_name_taken")
    _error(
        await client.post("/api/hooks", json={"name": "a/b", "event": "x"}), 422, "invalid_input"
    )
    for path in ("/api/hooks/a%00b", "/api/hooks/" + "x" * 129):
        _error(await client.post(path, content=body), 404, "hook_not_found")
        _error(await client.delete(path), 404, "hook_not_found")
    _error(await client.get("/api/triggers?event=a%00"), 422, "invalid_input")
    assert (await client.delete("/api/hooks/stripe")).status_code == 204
    _error(await client.delete("/api/hooks/stripe"), 404, "hook_not_found")
    gone = await client.post(
        "/api/hooks/stripe", content=body, headers=_signed(hook["secret"], body)
    )
    _error(gone, 404, "hook_not_found")
    assert await _task_count(client) == 0


# --- with auth on -------------------------------------------------------------------------------


@pytest.fixture
async def secured(database: DatabaseConfig) -> AsyncIterator[FastAPI]:
    config = Config(database=database, server=ServerConfig(), auth=AuthConfig(enabled=True))
    application = create_app(config)
    async with application.router.lifespan_context(application):
        yield application


async def test_with_auth_a_hook_needs_its_signature_not_a_token(secured: FastAPI) -> None:
    context = context_of(secured)
    now = context.clock.now()
    operator, _ = await issue_token(context.store, name="op", role=Role.OPERATOR, now=now)
    viewer, _ = await issue_token(context.store, name="v", role=Role.VIEWER, now=now)
    transport = httpx.ASGITransport(app=secured)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        as_operator = {"Authorization": f"Bearer {operator}"}
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        spec = {"name": "h", "event": "e"}
        _error(await client.post("/api/hooks", json=spec), 401, "unauthorized")
        _error(await client.post("/api/hooks", json=spec, headers=as_viewer), 403, "forbidden")
        trigger = {"name": "t", "event": "e", "task": INVOICE}
        refused = await client.post("/api/triggers", json=trigger, headers=as_viewer)
        _error(refused, 403, "forbidden")
        _error(await client.post("/api/events", json={"key": "e"}), 401, "unauthorized")
        assert (
            await client.post("/api/triggers", json=trigger, headers=as_operator)
        ).status_code == 201
        hook = (await client.post("/api/hooks", json=spec, headers=as_operator)).json()
        body = b'{"n": 1}'
        _error(await client.post("/api/hooks/h", content=body), 401, "signature_invalid")
        called = await client.post(
            "/api/hooks/h", content=body, headers=_signed(hook["secret"], body)
        )
        assert called.status_code == 201, called.text
        tasks = await client.get("/api/tasks", headers=as_viewer)
        assert tasks.json()["total"] == 1


# --- payload limit ------------------------------------------------------------------------------


@pytest.fixture
async def small(database: DatabaseConfig) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_config(database, max_payload_bytes=1024))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http


async def test_a_payload_with_its_event_over_the_limit_creates_nothing(
    small: httpx.AsyncClient,
) -> None:
    task = {"task_type": "t", "payload": {"blob": "x" * 600}}
    created = await small.post("/api/triggers", json={"name": "t", "event": "e", "task": task})
    assert created.status_code == 201, created.text
    big = {"key": "e", "id": "e1", "data": {"more": "y" * 600}}
    _error(await small.post("/api/events", json=big), 413, "payload_too_large")
    assert await _task_count(small) == 0
    # Not recorded: the same id with smaller data is its first delivery.
    fits = await small.post("/api/events", json={"key": "e", "id": "e1", "data": {"n": 1}})
    assert fits.status_code == 201, fits.text
    assert await _task_count(small) == 1
