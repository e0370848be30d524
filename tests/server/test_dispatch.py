"""Push dispatch over a real socket: task types, capabilities, slots, priority, limits, time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentStatus, TaskStatus
from hetuflow.store._pg_db import CLAIM_LOCK

from .harness import Server, agent, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_tasks_go_only_to_agents_with_their_type_and_capabilities(server: Server) -> None:
    async with (
        agent(server, "scrape", capabilities=["chrome"]) as chrome,
        agent(server, "crunch", capabilities=["gpu", "big"]) as gpu,
    ):
        scrape = await server.create_task(task_type="scrape", required_capabilities=["chrome"])
        crunch = await server.create_task(task_type="crunch", required_capabilities=["gpu"])
        nobody = await server.create_task(task_type="crunch", required_capabilities=["tpu"])
        [to_chrome] = await chrome.dispatched(1)
        [to_gpu] = await gpu.dispatched(1)
        assert UUID(to_chrome["task_id"]) == scrape
        assert UUID(to_gpu["task_id"]) == crunch
        assert to_gpu["attempt"] == 1
        assert to_gpu["start_at"] is None
        assert (await server.task(nobody)).status == TaskStatus.PENDING
        response = await server.http.get(f"/api/tasks/{nobody}")
        assert response.json()["pending_reason"] == "no_agent_with_capabilities"
        assert await chrome.quiet(0.2) == []
        assert await gpu.quiet(0.0) == []
        # An agent with the capabilities connects: the waiting task runs at once.
        async with agent(server, "crunch", capabilities=["tpu"]) as tpu:
            [late] = await tpu.dispatched(1)
            assert UUID(late["task_id"]) == nobody


async def test_an_agent_never_holds_more_than_its_slots(server: Server) -> None:
    async with agent(server, "echo", slots=2) as client:
        ids = [await server.create_task(task_type="echo") for _ in range(5)]
        first = await client.dispatched(2)
        assert await client.quiet(0.3) == []
        await client.result(first[0])
        [third] = await client.dispatched(1)
        assert {UUID(t["task_id"]) for t in [*first, third]} <= set(ids)
        assert await client.quiet(0.2) == []


async def test_higher_priority_first_then_oldest(server: Server) -> None:
    order = ["low", "normal", "critical", "high", "normal"]
    ids = [await server.create_task(task_type="echo", priority=p) for p in order]
    async with agent(server, "echo", slots=1) as client:
        seen: list[UUID] = []
        for _ in order:
            [task] = await client.dispatched(1)
            seen.append(UUID(task["task_id"]))
            await client.result(task)
    assert seen == [ids[2], ids[3], ids[1], ids[4], ids[0]]


async def test_least_loaded_agent_first(server: Server) -> None:
    async with agent(server, "echo", slots=4) as one, agent(server, "echo", slots=4) as two:
        for _ in range(4):
            await server.create_task(task_type="echo")
        got_one = await one.dispatched(2)
        got_two = await two.dispatched(2)
        assert len(got_one) == len(got_two) == 2


async def test_global_limit_is_respected(database: DatabaseConfig) -> None:
    async with (
        serve(fast_config(database, max_concurrent_tasks=2)) as server,
        agent(server, "echo", slots=3) as one,
        agent(server, "echo", slots=3) as two,
    ):
        for _ in range(5):
            await server.create_task(task_type="echo")
        got = {client: await client.quiet(0.4) for client in (one, two)}
        held = [(c, t) for c, frames in got.items() for f in frames for t in f["tasks"]]
        assert len(held) == 2
        owner, task = held[0]
        await owner.result(task)
        more = [f for client in (one, two) for f in await client.quiet(0.4)]
        assert sum(len(f["tasks"]) for f in more) == 1


async def test_a_global_limit_of_zero_is_no_limit_and_takes_no_claim_lock(
    database: DatabaseConfig,
) -> None:
    async with (
        serve(fast_config(database, max_concurrent_tasks=0)) as server,
        agent(server, "echo", slots=3) as one,
        agent(server, "echo", slots=3) as two,
        contextlib.AsyncExitStack() as stack,
    ):
        if database.kind == "postgres":
            # Another session holds the claim lock: a claim that took it would wait here.
            holder = await asyncpg.connect(database.dsn)
            stack.push_async_callback(holder.close)
            await stack.enter_async_context(holder.transaction())
            await holder.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        ids = [await server.create_task(task_type="echo") for _ in range(7)]
        held = 0
        async with asyncio.timeout(5):
            while held < 6:
                frames = [*await one.quiet(0.1), *await two.quiet(0.1)]
                held += sum(len(frame["tasks"]) for frame in frames)
        assert held == 6  # only the agents' slots (3 + 3) bound what is held
        response = await server.http.get(f"/api/tasks/{ids[-1]}")
        assert response.json()["pending_reason"] == "agents_busy"


async def test_a_future_task_is_handed_out_early_with_its_start_time(server: Server) -> None:
    async with agent(server, "echo") as client:
        due = datetime.now().astimezone() + timedelta(seconds=1.5)
        task_id = await server.create_task(task_type="echo", scheduled_at=due.isoformat())
        assert await client.quiet(0.6) == []  # not before scheduled_at - lookahead (0.5 s)
        [task] = await client.dispatched(1, timeout_seconds=2)
        received = datetime.now().astimezone()
        start_at = datetime.fromisoformat(task["start_at"])
        assert abs((start_at - due).total_seconds()) < 0.001
        assert received < start_at  # handed out ahead: the agent starts it on time
        assert UUID(task["task_id"]) == task_id


async def test_a_draining_agent_gets_nothing(server: Server) -> None:
    async with agent(server, "echo") as client:
        await client.send({"type": "AgentDraining"})

        async def draining() -> bool:
            stored = await server.context.store.get_agent(UUID(client.agent_id))
            return stored is not None and stored.status == AgentStatus.DRAINING

        await eventually(draining)
        task_id = await server.create_task(task_type="echo")
        assert await client.quiet(0.3) == []
        assert (await server.task(task_id)).status == TaskStatus.PENDING


async def test_a_create_that_finds_no_free_slot_does_not_wait_for_the_agents_lock(
    server: Server,
) -> None:
    """With every slot busy a create claims nothing, so it stores its task without the
    agents' lock (a claim round or another create may hold it meanwhile); the round its
    ``TASKS_READY`` wakes, or the next freed slot's, dispatches the task."""
    async with agent(server, "echo", slots=1) as client:
        await server.create_task(task_type="echo")
        [busy] = await client.dispatched(1)
        async with server.engine.agents.lock:  # a claim round in progress, say
            waiting = await asyncio.wait_for(server.create_task(task_type="echo"), 5)
            assert (await server.task(waiting)).status == TaskStatus.PENDING
        await client.result(busy)
        [then] = await client.dispatched(1)
        assert UUID(then["task_id"]) == waiting


async def test_a_create_no_slot_could_take_a_task_of_only_stores_and_its_round_dispatches(
    server: Server,
) -> None:
    """A batch whose tasks all carry a concurrency key (or rate limits, or an idempotency
    key) is only stored: the create runs no claim of its own; the round it wakes dispatches
    its tasks. A batch with a task a free slot can take places that one in the create."""
    async with agent(server, "echo", slots=4) as client:
        keyed = [{"name": f"k{i}", "task_type": "echo", "concurrency_key": f"c{i}"} for i in (1, 2)]
        rounds = server.engine.dispatcher.rounds
        response = await server.http.post("/api/tasks/batch", json={"tasks": keyed})
        assert response.status_code == 201, response.text
        items = response.json()["items"]
        assert [item["status"] for item in items] == ["pending", "pending"]
        got = await client.dispatched(2)
        assert {t["task_id"] for t in got} == {item["id"] for item in items}
        assert server.engine.dispatcher.rounds > rounds
        mixed = [{"name": "plain", "task_type": "echo"}, {**keyed[0], "name": "k3"}]
        response = await server.http.post("/api/tasks/batch", json={"tasks": mixed})
        plain, k3 = response.json()["items"]
        assert plain["status"] == "dispatched"  # placed in the create's own transaction
        assert k3["status"] == "pending"  # its key c1 is held by k1
        [placed] = await client.dispatched(1)
        assert placed["task_id"] == plain["id"]
        await client.result(next(t for t in got if t["task_id"] == items[0]["id"]))
        [then] = await client.dispatched(1)
        assert then["task_id"] == k3["id"]
