"""SDK: ``submit(dispatch="all")`` makes a broadcast (sent alone, even with coalescing on),
``children`` lists its children; no matching agent is a 409 ``ClientError``."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from hetuflow import AsyncClient
from hetuflow.client import ClientError
from hetuflow.models import AgentRegistration, BroadcastPolicy, TaskStatus
from hetuflow.server.context import ServerContext


async def test_submit_all_makes_a_broadcast(async_client: AsyncClient, app: FastAPI) -> None:
    with pytest.raises(ClientError) as nobody:
        await async_client.submit("probe", dispatch="all")
    assert (nobody.value.status, nobody.value.code) == (409, "no_agent_for_broadcast")
    context: ServerContext = app.state.context
    agents = [
        await context.store.connect_agent(
            AgentRegistration((), ("probe",), 1, name=name),
            node_id="node-elsewhere",
            now=context.clock.now(),
        )
        for name in ("a", "b")
    ]
    parent = await async_client.submit("probe", {"n": 1}, dispatch="all", broadcast_policy="any")
    assert (parent.status, parent.broadcast_policy) == (TaskStatus.WAITING, BroadcastPolicy.ANY)
    children = await async_client.children(parent.id)
    assert [child.pinned_agent_id for child in children] == [agent.id for agent in agents]
    assert {child.broadcast_of for child in children} == {parent.id}
    assert await async_client.children(children[0].id) == []


async def test_submit_many_takes_broadcasts_and_a_start_deadline(
    async_client: AsyncClient, app: FastAPI
) -> None:
    context: ServerContext = app.state.context
    agent = await context.store.connect_agent(
        AgentRegistration((), ("probe",), 1, name="a"),
        node_id="node-elsewhere",
        now=context.clock.now(),
    )
    with pytest.raises(ClientError) as nobody:
        await async_client.submit_many(
            [{"task_type": "probe"}, {"task_type": "other", "dispatch": "all"}]
        )
    assert (nobody.value.status, nobody.value.code) == (409, "no_agent_for_broadcast")
    assert nobody.value.field == "tasks[1].dispatch"
    assert (await async_client.list_tasks()).items == []
    plain, parent = await async_client.submit_many(
        [
            {"task_type": "probe"},
            {"task_type": "probe", "dispatch": "all", "start_deadline_seconds": 60},
        ]
    )
    assert (plain.status, parent.status) == (TaskStatus.PENDING, TaskStatus.WAITING)
    assert parent.start_deadline_at is not None
    [child] = await async_client.children(parent.id)
    assert (child.pinned_agent_id, child.start_deadline_at) == (agent.id, parent.start_deadline_at)
    alone = await async_client.submit("probe", dispatch="all", start_deadline_seconds=5)
    assert alone.start_deadline_at is not None


async def test_submit_and_cron_jobs_carry_keys_and_limits(async_client: AsyncClient) -> None:
    task = await async_client.submit(
        "nobody",
        concurrency_key="customer:42",
        max_concurrent_per_key=2,
        concurrency_strategy="cancel_newest",
    )
    assert (task.concurrency_key, task.max_concurrent_per_key) == ("customer:42", 2)
    await async_client.create_rate_limit("crm-api", 5, 60)
    job = await async_client.create_cron_job(
        "sync",
        "@daily",
        "nobody",
        rate_limits=[{"name": "crm-api", "units": 2}],
        concurrency_key="crm",
    )
    assert [(use.name, use.units) for use in job.rate_limits] == [("crm-api", 2)]
    assert (job.concurrency_key, job.concurrency_strategy) == ("crm", "queue")
    changed = await async_client.update_cron_job(
        job.id, rate_limits=[], concurrency_strategy="cancel_newest"
    )
    assert changed.rate_limits == []
    assert changed.concurrency_strategy == "cancel_newest"
    with pytest.raises(ClientError) as unknown:
        await async_client.update_cron_job(job.id, rate_limits=[{"name": "nope"}])
    assert (unknown.value.status, unknown.value.code) == (422, "rate_limit_unknown")
