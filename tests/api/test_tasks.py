"""Tasks over REST: options, idempotency, batches, filters, pending reasons, cancel, retry,
attempts and logs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.models import (
    AgentRegistration,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    LogLine,
)
from hetuflow.store.base import TASK_CANCEL, TASKS_READY

from .helpers import context_of, hold_task, now_of


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"task_type": "t", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_create_with_every_option(client: httpx.AsyncClient) -> None:
    at = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = await create(
        client,
        name="n",
        priority="critical",
        payload={"nested": {"list": [1, 2.5, True, None, "é"]}},
        required_capabilities=["chrome", "headless", "chrome"],
        scheduled_at="2099-01-02T11:04:05+08:00",
        timeout_seconds=12.5,
        max_retries=3,
        retry_backoff_seconds=2,
        idempotency_key="k-1",
    )
    assert task["required_capabilities"] == ["chrome", "headless"]
    assert datetime.fromisoformat(task["scheduled_at"]) == at
    assert task["pending_reason"] == "scheduled"
    assert (task["timeout_seconds"], task["max_retries"], task["retry_backoff_seconds"]) == (
        12.5,
        3,
        2,
    )
    assert task["payload"] == {"nested": {"list": [1, 2.5, True, None, "é"]}}


async def test_defaults_name_and_backoff_from_config(client: httpx.AsyncClient) -> None:
    task = await create(client)
    assert task["name"] == "t"
    assert task["priority"] == "normal"
    assert task["retry_backoff_seconds"] == 7  # [scheduler] retry_interval_seconds of the app


async def test_delay_seconds_schedules_later(client: httpx.AsyncClient, app: FastAPI) -> None:
    before = now_of(app)
    task = await create(client, delay_seconds=3600)
    scheduled = datetime.fromisoformat(task["scheduled_at"])
    assert before + timedelta(seconds=3590) < scheduled < before + timedelta(seconds=3700)
    assert task["pending_reason"] == "scheduled"


async def test_idempotency_key_returns_the_existing_task_with_200(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/api/tasks", json={"task_type": "t", "idempotency_key": "once"})
    second = await client.post("/api/tasks", json={"task_type": "other", "idempotency_key": "once"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["task_type"] == "t"
    assert (await client.get("/api/tasks")).json()["total"] == 1


async def test_creating_wakes_the_dispatchers(client: httpx.AsyncClient, app: FastAPI) -> None:
    woken: list[str] = []

    def record(payload: str) -> None:
        woken.append(payload)

    context_of(app).notifier.subscribe(TASKS_READY, record)
    await create(client)
    assert woken  # LocalNotifier delivers synchronously on publish


async def test_batch_is_one_transaction(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/tasks/batch",
        json={"tasks": [{"task_type": "a"}, {"task_type": "b", "idempotency_key": "x"}]},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [item["task_type"] for item in body["items"]] == ["a", "b"]
    assert body["created"] == [True, True]

    again = await client.post(
        "/api/tasks/batch",
        json={"tasks": [{"task_type": "c"}, {"task_type": "b", "idempotency_key": "x"}]},
    )
    assert again.json()["created"] == [True, False]

    bad = await client.post(
        "/api/tasks/batch", json={"tasks": [{"task_type": "d"}, {"task_type": ""}]}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "tasks[1].task_type"
    assert (await client.get("/api/tasks")).json()["total"] == 3  # nothing of the bad batch


async def test_batch_size_limit_is_configurable(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/tasks/batch", json={"tasks": [{"task_type": "t"}] * 51})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "tasks"
    assert "at most 50" in response.json()["error"]["message"]
    empty = await client.post("/api/tasks/batch", json={"tasks": []})
    assert empty.status_code == 422


async def test_list_filters_and_pagination(client: httpx.AsyncClient, app: FastAPI) -> None:
    ids = [(await create(client, task_type=kind, name=f"job-{kind}"))["id"] for kind in "aabc"]
    held = await hold_task(app, "c")
    cancelled = (await client.delete(f"/api/tasks/{ids[0]}")).json()
    assert cancelled["status"] == "cancelled"

    async def listed(**params: Any) -> list[str]:
        response = await client.get("/api/tasks", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await listed() == list(reversed(ids))
    assert await listed(task_type="a") == [ids[1], ids[0]]
    assert await listed(status="pending") == [ids[2], ids[1]]
    assert await listed(status=["pending", "cancelled"]) == [ids[2], ids[1], ids[0]]
    assert await listed(agent_id=str(held.agent_id)) == [ids[3]]
    assert await listed(q="job-b") == [ids[2]]
    page = (await client.get("/api/tasks", params={"limit": 2, "offset": 1})).json()
    assert ([item["id"] for item in page["items"]], page["total"]) == ([ids[2], ids[1]], 4)
    future = (now_of(app) + timedelta(hours=1)).isoformat()
    assert await listed(created_after=future) == []
    assert len(await listed(created_before=future)) == 4


async def test_pending_reasons(client: httpx.AsyncClient, app: FastAPI) -> None:
    context = context_of(app)
    task = await create(client, task_type="scrape", required_capabilities=["chrome"])
    assert task["pending_reason"] == "no_agent_for_task_type"

    await context.store.connect_agent(
        AgentRegistration(
            capabilities=("curl",),
            supported_task_types=("scrape",),
            max_concurrent_tasks=1,
            name="no-chrome",
        ),
        node_id="node-elsewhere",
        now=now_of(app),
    )
    fetched = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert fetched["pending_reason"] == "no_agent_with_capabilities"

    await create(client, task_type="scrape", name="first")
    # a chrome agent with one slot, busy with another task
    other = await create(client, task_type="busy-maker")
    dispatch = await hold_task(app, "busy-maker", name="chrome-1", capabilities=("chrome",))
    assert str(dispatch.task.id) == other["id"]
    await context.store.connect_agent(
        AgentRegistration(
            capabilities=("chrome",),
            supported_task_types=("scrape", "busy-maker"),
            max_concurrent_tasks=1,
            name="chrome-1",
        ),
        node_id="node-elsewhere",
        now=now_of(app),
    )
    fetched = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert fetched["pending_reason"] == "agents_busy"
    listed = (await client.get("/api/tasks", params={"task_type": "scrape"})).json()["items"]
    # "first" needs no capability: the idle no-chrome agent can take it
    reasons = {item["name"]: item["pending_reason"] for item in listed}
    assert reasons == {"scrape": "agents_busy", "first": "queued"}


async def test_pending_reason_queued_and_global_limit(database: Any) -> None:
    from hetuflow.config import Config, SchedulerConfig
    from hetuflow.server.app import create_app

    app = create_app(Config(database=database, scheduler=SchedulerConfig(max_concurrent_tasks=1)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            await create(client, task_type="x")
            await hold_task(app, "x", name="x-agent")  # now 1 active task: the global limit
            waiting = await create(client, task_type="x")
            assert waiting["pending_reason"] == "global_limit"
            limited = create_app(Config(database=database))
            async with limited.router.lifespan_context(limited):
                transport2 = httpx.ASGITransport(app=limited)
                async with httpx.AsyncClient(
                    transport=transport2, base_url="http://localhost"
                ) as other:
                    fetched = (await other.get(f"/api/tasks/{waiting['id']}")).json()
                    assert fetched["pending_reason"] == "queued"


async def test_cancel_running_task_asks_its_agent_to_stop(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    published: list[str] = []

    def record(payload: str) -> None:
        published.append(payload)

    context_of(app).notifier.subscribe(TASK_CANCEL, record)
    task = await create(client)
    dispatch = await hold_task(app, "t")
    response = await client.delete(f"/api/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelling"
    assert published == [f"{task['id']}:{dispatch.attempt}:{dispatch.agent_id}"]


async def test_cancel_finished_task_is_409(client: httpx.AsyncClient) -> None:
    task = await create(client)
    assert (await client.delete(f"/api/tasks/{task['id']}")).status_code == 200
    again = await client.delete(f"/api/tasks/{task['id']}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "task_already_finished"


async def finish(
    app: FastAPI,
    task_type: str,
    outcome: AttemptOutcome,
    *,
    capabilities: tuple[str, ...] = (),
    **extra: Any,
) -> str:
    dispatch = await hold_task(app, task_type, capabilities=capabilities)
    ref = AttemptRef(task_id=dispatch.task.id, attempt=dispatch.attempt, agent_id=dispatch.agent_id)
    context = context_of(app)
    await context.store.append_logs(
        [
            LogLine(
                task_id=ref.task_id,
                attempt=ref.attempt,
                stream="stdout",
                line=f"line {n}",
                at=now_of(app),
            )
            for n in range(3)
        ]
    )
    [done] = await context.store.finish_attempts(
        [AttemptResult(ref=ref, outcome=outcome, **extra)], now=now_of(app)
    )
    assert done.accepted
    return str(ref.task_id)


async def test_retry_failed_task_creates_a_copy(client: httpx.AsyncClient, app: FastAPI) -> None:
    task = await create(client, payload={"k": 1}, priority="high", required_capabilities=["gpu"])
    await finish(app, "t", AttemptOutcome.FAILED, capabilities=("gpu",), error="boom")
    failed = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert (failed["status"], failed["error"]) == ("failed", "boom")

    retried = await client.post(f"/api/tasks/{task['id']}/retry")
    assert retried.status_code == 201
    copy = retried.json()
    assert copy["id"] != task["id"]
    assert copy["status"] == "pending"
    for key in ("name", "task_type", "payload", "priority", "required_capabilities"):
        assert copy[key] == task[key]


async def test_retry_of_pending_or_succeeded_is_409(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    pending = await create(client, task_type="p")
    assert (await client.post(f"/api/tasks/{pending['id']}/retry")).status_code == 409
    done = await create(client)
    await finish(app, "t", AttemptOutcome.SUCCEEDED, result={"ok": True})
    response = await client.post(f"/api/tasks/{done['id']}/retry")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "task_not_retryable"


async def test_attempts_and_logs(client: httpx.AsyncClient, app: FastAPI) -> None:
    task = await create(client)
    await finish(app, "t", AttemptOutcome.SUCCEEDED, result={"rows": 3})
    got = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert (got["status"], got["result"]) == ("succeeded", {"rows": 3})

    attempts = (await client.get(f"/api/tasks/{task['id']}/attempts")).json()["items"]
    assert [(a["number"], a["outcome"]) for a in attempts] == [(1, "succeeded")]

    logs = (await client.get(f"/api/tasks/{task['id']}/logs")).json()
    assert [line["line"] for line in logs["items"]] == ["line 0", "line 1", "line 2"]
    after = logs["items"][0]["seq"]
    rest = (await client.get(f"/api/tasks/{task['id']}/logs", params={"after_seq": after})).json()
    assert [line["line"] for line in rest["items"]] == ["line 1", "line 2"]
    assert rest["next_after_seq"] == logs["next_after_seq"]
    one = (await client.get(f"/api/tasks/{task['id']}/logs", params={"limit": 1})).json()
    assert len(one["items"]) == 1
    none = (await client.get(f"/api/tasks/{task['id']}/logs", params={"attempt": 2})).json()
    assert none["items"] == []


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def test_log_stream_of_a_finished_task_sends_lines_then_end(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    task = await create(client)
    await finish(app, "t", AttemptOutcome.FAILED, error="no")
    response = await client.get(f"/api/tasks/{task['id']}/logs/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    assert [name for name, _ in got] == ["log", "log", "log", "end"]
    assert got[-1][1]["status"] == "failed"
    resumed = await client.get(
        f"/api/tasks/{task['id']}/logs/stream", headers={"Last-Event-ID": str(got[1][1]["seq"])}
    )
    assert [data.get("line") for _, data in events(resumed.text)] == ["line 2", None]


async def test_log_stream_follows_a_running_task_until_it_ends(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    task = await create(client)
    dispatch = await hold_task(app, "t")
    ref = AttemptRef(task_id=dispatch.task.id, attempt=dispatch.attempt, agent_id=dispatch.agent_id)
    store = context_of(app).store
    stream = asyncio.create_task(client.get(f"/api/tasks/{task['id']}/logs/stream"))
    for n in range(3):
        await store.append_logs(
            [
                LogLine(
                    task_id=ref.task_id,
                    attempt=1,
                    stream="stderr",
                    line=f"live {n}",
                    at=now_of(app),
                )
            ]
        )
        await asyncio.sleep(0.3)  # let the stream pick up each line while the task runs
        assert not stream.done()  # it is still running: the stream stays open
    await store.finish_attempts(
        [AttemptResult(ref=ref, outcome=AttemptOutcome.SUCCEEDED)], now=now_of(app)
    )
    response = await asyncio.wait_for(stream, timeout=10)
    got = events(response.text)
    assert [data.get("line") for _, data in got] == ["live 0", "live 1", "live 2", None]
    assert got[-1] == ("end", {"status": "succeeded", "next_after_seq": got[2][1]["seq"]})


@pytest.mark.parametrize("suffix", ["", "/attempts", "/logs", "/logs/stream", "/retry"])
async def test_unknown_task_is_404_everywhere(client: httpx.AsyncClient, suffix: str) -> None:
    method = "POST" if suffix == "/retry" else "GET"
    missing = "00000000-0000-4000-8000-000000000000"
    response = await client.request(method, f"/api/tasks/{missing}{suffix}")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "task_not_found",
        "message": f"no task with id {missing}",
        "field": "task_id",
    }
