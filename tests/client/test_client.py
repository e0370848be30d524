"""The SDK against a real server: typed results, errors with status/code/field, wait, logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from hetuflow import AsyncClient, Client
from hetuflow.client import ClientError, ServerUnreachable, Task, WaitTimeout
from hetuflow.models import (
    AgentRegistration,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimGroup,
    FailureKind,
    LogLine,
    PendingReason,
    Priority,
    SlotOffer,
    TaskStatus,
)
from hetuflow.server.context import ServerContext

from .conftest import free_port


def test_submit_get_list_cancel(client: Client) -> None:
    task = client.submit(
        "data-processing",
        {"data": "test"},
        name="test-task",
        priority="high",
        required_capabilities=["chrome"],
        timeout_seconds=30,
        max_retries=2,
    )
    assert isinstance(task, Task)
    assert (task.priority, task.status) == (Priority.HIGH, TaskStatus.PENDING)
    assert task.pending_reason is PendingReason.NO_AGENT_FOR_TASK_TYPE
    assert client.get_task(task.id) == task
    page = client.list_tasks(status="pending", task_type="data-processing")
    assert [item.id for item in page.items] == [task.id]
    assert page.total == 1
    cancelled = client.cancel_task(str(task.id))
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.is_finished
    assert client.list_tasks(status=[TaskStatus.PENDING]).total == 0


def test_submit_many_and_idempotency(client: Client) -> None:
    tasks = client.submit_many(
        [
            {"task_type": "a", "payload": {"n": 1}},
            {
                "task_type": "b",
                "idempotency_key": "k",
                "scheduled_at": datetime(2099, 1, 1, tzinfo=UTC),
            },
        ]
    )
    assert [task.task_type for task in tasks] == ["a", "b"]
    assert tasks[1].pending_reason is PendingReason.SCHEDULED
    again = client.submit("zzz", idempotency_key="k")
    assert again.id == tasks[1].id


def test_errors_carry_status_code_and_field(client: Client) -> None:
    with pytest.raises(ClientError) as invalid:
        client.submit("t", priority="urgent")
    assert (invalid.value.status, invalid.value.code, invalid.value.field) == (
        422,
        "invalid_input",
        "priority",
    )
    with pytest.raises(ClientError) as missing:
        client.get_task("00000000-0000-4000-8000-000000000000")
    assert (missing.value.status, missing.value.code) == (404, "task_not_found")
    task = client.submit("t")
    client.cancel_task(task.id)
    with pytest.raises(ClientError) as finished:
        client.cancel_task(task.id)
    assert finished.value.status == 409


def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ServerUnreachable) as error:
        client.stats()
    assert f"server not reachable at {url}" in str(error.value)
    assert error.value.status is None


def test_wait_times_out_on_a_pending_task(client: Client) -> None:
    task = client.submit("nobody-runs-this")
    with pytest.raises(WaitTimeout):
        client.wait(task.id, timeout_seconds=0.3, poll_interval_seconds=0.05)


def test_agents_stats_and_generic_request(client: Client) -> None:
    agent = client.create_agent("agent-1", ["chrome", "headless"], supported_task_types=["x"])
    assert agent.capabilities == ["chrome", "headless"]
    assert [item.name for item in client.list_agents()] == ["agent-1"]
    assert client.list_agents(online=True) == []
    assert client.get_agent(agent.id) == agent
    stats = client.stats()
    assert (stats.agents_total, stats.tasks_total) == (1, 0)
    client.delete_agent(agent.id)
    assert client.list_agents() == []
    assert client.request("GET", "/healthz") == {"status": "ok", "detail": None}
    with pytest.raises(ClientError) as error:
        client.request("POST", "/api/agents", json={"name": ""})
    assert error.value.field == "name"


def test_cron_job_methods(client: Client) -> None:
    job = client.create_cron_job("daily-backup", "0 2 * * *", "backup", {"type": "full"})
    assert (job.name, job.enabled, job.next_fire_at is not None) == ("daily-backup", True, True)
    assert [item.id for item in client.list_cron_jobs()] == [job.id]
    assert client.disable_cron_job(job.id).enabled is False
    assert client.enable_cron_job(job.id).enabled is True
    assert (
        client.update_cron_job(job.id, cron_expression="0 3 * * *").cron_expression == "0 3 * * *"
    )
    assert client.get_cron_job(job.id).cron_expression == "0 3 * * *"
    fires = client.cron_job_next_fires(job.id, count=3)
    assert len(fires["fire_times"]) == 3
    assert len(client.preview_cron("*/5 * * * *", count=2)["fire_times"]) == 2
    task = client.trigger_cron_job(job.id)
    assert client.get_task(task["id"]).cron_job_id == job.id
    assert isinstance(client.cron_job_ticks(job.id)["items"], list)
    client.delete_cron_job(job.id)
    assert client.list_cron_jobs() == []


async def _run_one(app: FastAPI, task_type: str, outcome: AttemptOutcome) -> None:
    context: ServerContext = app.state.context
    now = context.clock.now()
    agent = await context.store.connect_agent(
        AgentRegistration(
            capabilities=(), supported_task_types=(task_type,), max_concurrent_tasks=1, name="w"
        ),
        node_id="node-elsewhere",
        now=now,
    )
    group = ClaimGroup(
        frozenset({task_type}),
        frozenset(),
        (SlotOffer(agent_id=agent.id, free_slots=1, running=0),),
    )
    [dispatch] = await context.store.claim_tasks([group], now=now)
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)
    await context.store.append_logs([LogLine(ref.task_id, 1, "stdout", "hello", now)])
    await context.store.finish_attempts(
        [AttemptResult(ref=ref, outcome=outcome, result={"ok": 1}, error="bad")],
        now=now + timedelta(seconds=1),
    )


async def test_async_client_lifecycle(async_client: AsyncClient, app: FastAPI) -> None:
    task = await async_client.submit("t", {"x": 1})
    await _run_one(app, "t", AttemptOutcome.FAILED)
    done = await async_client.wait(task.id, timeout_seconds=5, poll_interval_seconds=0.05)
    assert (done.status, done.error) == (TaskStatus.FAILED, "bad")
    assert [line.line for line in await async_client.logs(task.id)] == ["hello"]
    assert [line.line async for line in async_client.follow_logs(task.id)] == ["hello"]
    attempts = await async_client.attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, AttemptOutcome.FAILED)]
    again = await async_client.retry_task(task.id)
    assert again.id != task.id
    assert again.status is TaskStatus.PENDING
    page = await async_client.list_tasks(status=["failed"])
    assert [item.id for item in page.items] == [task.id]
    many = await async_client.submit_many([{"task_type": "m"}] * 3)
    assert len(many) == 3
    with pytest.raises(ClientError) as error:
        await async_client.cancel_task(task.id)
    assert error.value.code == "task_already_finished"


async def test_retry_options_and_the_dead_letter_view(
    async_client: AsyncClient, app: FastAPI
) -> None:
    task = await async_client.submit(
        "t",
        max_retries=4,
        retry_backoff_max_seconds=20,
        retry_jitter=0.25,
        retry_on=["agent_lost", "timed_out"],
    )
    assert (task.retry_backoff_max_seconds, task.retry_jitter, task.retry_on) == (
        20,
        0.25,
        [FailureKind.TIMED_OUT, FailureKind.AGENT_LOST],
    )
    await _run_one(app, "t", AttemptOutcome.FAILED)  # failed is not retried
    done = await async_client.get_task(task.id)
    assert (done.status, done.error) == (
        TaskStatus.FAILED,
        "bad (not retried: retry_on does not include failed)",
    )
    assert [t.id for t in (await async_client.list_tasks(final=True)).items] == [task.id]
    again = await async_client.retry_task(task.id)
    assert again.replay_of == task.id
    assert again.retry_on == task.retry_on
    assert (await async_client.list_tasks(final=True)).items == []
    assert [t.id async for t in async_client.iter_tasks(status="failed", final=False)] == [task.id]


async def test_bulk_retry_of_the_dead_letters_and_replay(
    async_client: AsyncClient, app: FastAPI
) -> None:
    dead = [await async_client.submit(kind, retry_on=["timed_out"]) for kind in ("d1", "d2")]
    for kind in ("d1", "d2"):
        await _run_one(app, kind, AttemptOutcome.FAILED)
    letters = (await async_client.list_tasks(final=True)).items
    assert sorted(t.id for t in letters) == sorted(t.id for t in dead)

    retried = await async_client.bulk_retry(final=True)
    assert (retried.succeeded, retried.failed, retried.matched, retried.truncated) == (
        2,
        0,
        2,
        False,
    )
    assert sorted(item.id for item in retried.items) == sorted(t.id for t in dead)
    fresh = [item.task for item in retried.items]
    assert all(t is not None and t.status is TaskStatus.PENDING for t in fresh)
    assert {t.replay_of for t in fresh if t is not None} == {t.id for t in dead}
    assert (await async_client.list_tasks(final=True)).items == []
    again = await async_client.bulk_retry(final=True)  # nothing left: safe to repeat
    assert (again.matched, again.items) == (0, [])

    # by ids: one cancelled, one already finished (its error is the single route's)
    pending = [item.task.id for item in retried.items if item.task is not None]
    cancelled = await async_client.bulk_cancel([pending[0], dead[0].id])
    assert [(item.id, item.ok) for item in cancelled.items] == [
        (pending[0], True),
        (dead[0].id, False),
    ]
    error = cancelled.items[1].error
    assert error is not None
    assert (error.code, error.status) == ("task_already_finished", 409)
    with pytest.raises(ValueError, match="either ids or filters"):
        await async_client.bulk_cancel([pending[1]], task_type="d2")

    replayed = await async_client.replay_task(pending[0])  # a cancelled task, run again
    assert (replayed.replay_of, replayed.status) == (pending[0], TaskStatus.PENDING)


def test_bulk_cancel_by_filter_and_replay_sync(client: Client) -> None:
    made = [client.submit("bulk", concurrency_key="tenant:1") for _ in range(3)]
    client.submit("other")
    result = client.bulk_cancel(task_type="bulk", concurrency_key="tenant:1")
    assert (result.succeeded, result.matched) == (3, 3)
    assert sorted(item.id for item in result.items) == sorted(t.id for t in made)
    assert {client.get_task(t.id).status for t in made} == {TaskStatus.CANCELLED}
    assert client.list_tasks(task_type="other").items[0].status is TaskStatus.PENDING
    keyed = [t.id for t in client.iter_tasks(concurrency_key="tenant:1", page_size=2)]
    assert sorted(keyed) == sorted(t.id for t in made)
    replayed = client.replay_task(made[0].id)
    assert (replayed.replay_of, replayed.concurrency_key) == (made[0].id, "tenant:1")
    retried = client.bulk_retry([made[1].id])
    assert retried.succeeded == 1
    assert retried.items[0].task is not None
    assert retried.items[0].task.replay_of == made[1].id


async def test_rate_limits_and_tasks_naming_them(async_client: AsyncClient) -> None:
    made = await async_client.create_rate_limit("crm-api", 2, 60)
    assert (made.name, made.limit, made.per_seconds, made.used) == ("crm-api", 2, 60, 0)
    task = await async_client.submit("nobody", rate_limits=[{"name": "crm-api", "units": 2}])
    assert [(use.name, use.units) for use in task.rate_limits] == [("crm-api", 2)]
    with pytest.raises(ClientError) as error:
        await async_client.submit("nobody", rate_limits=[{"name": "crm-api", "units": 3}])
    assert (error.value.status, error.value.field) == (422, "rate_limits")
    assert [limit.name for limit in await async_client.list_rate_limits()] == ["crm-api"]
    assert (await async_client.get_rate_limit("crm-api")).used == 0
    await async_client.delete_rate_limit("crm-api")
    with pytest.raises(ClientError) as gone:
        await async_client.get_rate_limit("crm-api")
    assert gone.value.code == "rate_limit_not_found"


async def test_keys_and_limits_in_use_and_the_tasks_waiting_on_them(
    async_client: AsyncClient, client: Client
) -> None:
    await async_client.create_rate_limit("crm-api", 2, 60)
    limited = await async_client.submit("nobody", rate_limits=[{"name": "crm-api"}])
    [limit] = await async_client.list_rate_limits()
    assert (limit.used, limit.waiting) == (0, 0)  # units left: it holds nothing back
    keyed = await async_client.submit_many(
        [{"task_type": "nobody", "concurrency_key": "customer:42"} for _ in "ab"]
    )
    await async_client.submit_many([{"task_type": "nobody", "concurrency_key": "tenant:1"}])
    keys = await async_client.list_concurrency_keys(prefix="customer:")
    assert [(k.key, k.active, k.limit, k.pending, k.waiting, k.at_limit) for k in keys] == [
        ("customer:42", 0, 1, 2, 0, False)
    ]
    assert [k.key for k in client.list_concurrency_keys()] == ["customer:42", "tenant:1"]
    assert [k.key for k in client.list_concurrency_keys(key="tenant:1", limit=1)] == ["tenant:1"]
    page = await async_client.list_tasks(concurrency_key="customer:42", status="pending")
    assert sorted(t.id for t in page.items) == sorted(t.id for t in keyed)
    assert [t.id for t in client.list_tasks(rate_limit="crm-api").items] == [limited.id]


def test_follow_logs_sync(client: Client, server_url: str) -> None:
    task = client.submit("t")
    client.cancel_task(task.id)
    assert list(client.follow_logs(task.id)) == []  # finished: the stream ends at once


def test_response_models_match_the_server_schemas(client: Client) -> None:
    """The client's typed views name only fields the server sends (catches drift)."""
    from hetuflow import client as sdk

    document = client.request("GET", "/openapi.json")
    schemas = document["components"]["schemas"]
    pairs: list[tuple[type[BaseModel], str]] = [
        (sdk.Task, "TaskOut"),
        (sdk.TaskPage, "TaskPage"),
        (sdk.Attempt, "AttemptOut"),
        (sdk.LogLine, "LogLineOut"),
        (sdk.Agent, "AgentOut"),
        (sdk.Stats, "StatsOut"),
        (sdk.CronJob, "CronJobOut"),
        (sdk.Trigger, "TriggerOut"),
        (sdk.EventDelivery, "EventOut"),
        (sdk.Hook, "HookCreated"),
        (sdk.RateLimit, "RateLimitOut"),
        (sdk.RateLimitUse, "RateLimitUseOut"),
        (sdk.ConcurrencyKey, "ConcurrencyKeyOut"),
        (sdk.TaskWebhook, "TaskWebhookOut"),
        (sdk.WebhookDelivery, "WebhookDeliveryOut"),
        (sdk.BulkResult, "BulkOut"),
        (sdk.BulkItem, "BulkItem"),
        (sdk.BulkError, "BulkError"),
    ]
    for model, schema in pairs:
        missing = set(model.model_fields) - set(schemas[schema]["properties"])
        assert not missing, f"{model.__name__} has fields the server does not send: {missing}"


def test_client_reads_server_and_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    monkeypatch.setenv("HETUFLOW_SERVER", "http://example.invalid:9999/")
    monkeypatch.setenv("HETUFLOW_TOKEN", "s3cret")
    with Client(transport=httpx.MockTransport(handler)) as client:
        client.request("GET", "/healthz")
    assert str(seen[0].url) == "http://example.invalid:9999/healthz"
    assert seen[0].headers["authorization"] == "Bearer s3cret"
