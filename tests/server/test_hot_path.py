"""The task hot path: what a create answers without reading the store, and how fast a created
task reaches an idle agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from hetuflow.clock import SystemClock
from hetuflow.config import DatabaseConfig, SchedulerConfig
from hetuflow.errors import CronJobNotFound
from hetuflow.models import NewTask, TaskStatus
from hetuflow.server.tasks import TaskQueue
from hetuflow.store.base import Store
from hetuflow.store.notify_local import LocalNotifier

from .harness import Server, agent, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_create_dispatches_at_once_when_an_agent_here_has_a_free_slot(
    server: Server,
) -> None:
    async with agent(server, "scrape", capabilities=["chrome"], slots=1) as chrome:
        created = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["chrome"]}
        )
        assert created.status_code == 201
        # Inserted dispatched in the create's own transaction: never pending.
        assert created.json()["status"] == "dispatched"
        assert created.json()["attempts"] == 1
        assert created.json()["pending_reason"] is None
        stored = await server.http.get(f"/api/tasks/{created.json()['id']}")
        assert stored.json()["agent_id"] == created.json()["agent_id"] is not None
        [task] = await chrome.dispatched(1)
        assert task["task_id"] == created.json()["id"]
        # Its one slot is taken: the next create asks the store, which knows why it waits.
        busy = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["chrome"]}
        )
        assert busy.json()["pending_reason"] == "agents_busy"
        # No agent here has the capability: the store's answer too.
        other = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["gpu"]}
        )
        assert other.json()["pending_reason"] == "no_agent_with_capabilities"
        later = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "delay_seconds": 3600}
        )
        assert later.json()["pending_reason"] == "scheduled"


async def test_batch_create_answers_each_task(server: Server) -> None:
    async with agent(server, "a", slots=5) as worker:
        response = await server.http.post(
            "/api/tasks/batch",
            json={"tasks": [{"task_type": "a"}, {"task_type": "b"}, {"task_type": "a"}]},
        )
        assert response.status_code == 201
        items = response.json()["items"]
        assert [item["status"] for item in items] == ["dispatched", "pending", "dispatched"]
        assert [item["pending_reason"] for item in items] == [None, "no_agent_for_task_type", None]
        ids = {UUID(item["id"]) for item in response.json()["items"] if item["task_type"] == "a"}
        assert {UUID(task["task_id"]) for task in await worker.dispatched(2)} == ids


async def test_concurrent_creates_commit_together_and_each_answers_for_itself(
    store: Store,
) -> None:
    queue = TaskQueue(store, LocalNotifier(), SystemClock(), SchedulerConfig())
    same_key = [NewTask(name="k", task_type="t", idempotency_key="once") for _ in range(5)]
    plain = [NewTask(name=f"n{i}", task_type="t") for i in range(20)]
    missing_job = NewTask(name="bad", task_type="t", cron_job_id=uuid4())
    outcomes = await asyncio.gather(
        *(queue.create(task) for task in [*same_key, *plain, missing_job]),
        return_exceptions=True,
    )
    keyed, singles, bad = outcomes[:5], outcomes[5:25], outcomes[25]
    # Exactly one create made the keyed task; the others got it back as existing.
    assert all(isinstance(outcome, tuple) for outcome in [*keyed, *singles])
    keyed_results = [outcome for outcome in keyed if isinstance(outcome, tuple)]
    assert len({task.id for task, _ in keyed_results}) == 1
    assert sorted(created for _, created in keyed_results) == [False] * 4 + [True]
    # The task naming a missing cron job fails alone; the rest of its group is committed.
    assert isinstance(bad, CronJobNotFound)
    for outcome in singles:
        assert isinstance(outcome, tuple)
        task, created = outcome
        assert created
        stored = await store.get_task(task.id)
        assert stored is not None
        assert stored.name == task.name
    assert (await store.stats()).tasks_by_status[TaskStatus.PENDING] == 21


async def test_a_create_on_sqlite_explains_itself_without_reading_the_agents(
    server: Server, database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.context.store
    reads: list[object] = []
    list_agents = store.list_agents

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if "statuses" in kwargs:  # the reaper's periodic list of every agent is not ours
            reads.append(args)
        return await list_agents(*args, **kwargs)

    async with agent(server, "scrape", capabilities=["chrome"], slots=1) as chrome:
        first = await server.http.post("/api/tasks", json={"task_type": "scrape"})
        assert first.json()["status"] == "dispatched"
        await chrome.dispatched(1)
        monkeypatch.setattr(store, "list_agents", counted)
        answers = [
            (await server.http.post("/api/tasks", json=body)).json()["pending_reason"]
            for body in (
                {"task_type": "scrape"},
                {"task_type": "scrape", "required_capabilities": ["gpu"]},
                {"task_type": "render"},
            )
        ]
        # The same reasons the store gives (GET reads it), with or without the store read.
        assert answers == ["agents_busy", "no_agent_with_capabilities", "no_agent_for_task_type"]
        # One server process (SQLite): its registry knows the busy agent; when no agent here
        # fits, the store does (an agent row of another process). Several nodes (PostgreSQL):
        # agents of other nodes may have room, only the database knows.
        assert len(reads) == (2 if database.kind == "sqlite" else 3)


async def test_a_get_on_sqlite_explains_a_pending_task_from_the_registry(
    server: Server, database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.context.store
    reads: list[object] = []
    list_agents = store.list_agents

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if "statuses" in kwargs:  # the reaper's periodic list of every agent is not ours
            reads.append(args)
        return await list_agents(*args, **kwargs)

    async with agent(server, "scrape", slots=1) as scraper:
        first = await server.http.post("/api/tasks", json={"task_type": "scrape"})
        assert first.json()["status"] == "dispatched"
        await scraper.dispatched(1)
        waiting = (await server.http.post("/api/tasks", json={"task_type": "scrape"})).json()
        monkeypatch.setattr(store, "list_agents", counted)
        single_reads: list[str] = []
        for name in ("get_task", "get_task_and_agents"):
            monkeypatch.setattr(store, name, _counting(getattr(store, name), name, single_reads))
        read = (await server.http.get(f"/api/tasks/{waiting['id']}")).json()
        # the task and (when it is due and pending) the online agents: one store call
        assert single_reads == ["get_task_and_agents"]
        listed = (await server.http.get("/api/tasks", params={"status": "pending"})).json()
        assert read["pending_reason"] == "agents_busy"
        assert [item["pending_reason"] for item in listed["items"]] == ["agents_busy"]
        # SQLite: one server process, its registry holds every agent. PostgreSQL: agents of
        # other nodes may have room; the list asks the database.
        assert len(reads) == (0 if database.kind == "sqlite" else 1)
        # Drained by an operator, the agent takes no work: not "busy" but gone, for the
        # registry as for the store.
        drained = await server.http.post(f"/api/agents/{scraper.agent_id}/drain")
        assert drained.status_code == 200, drained.text
        read = (await server.http.get(f"/api/tasks/{waiting['id']}")).json()
        assert read["pending_reason"] == "no_agent_for_task_type"
        more = (await server.http.post("/api/tasks", json={"task_type": "scrape"})).json()
        assert more["pending_reason"] == "no_agent_for_task_type"


async def test_a_postgres_store_call_sends_only_its_own_statements(
    server: Server, database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's connection pool")
    from asyncpg.connection import Connection

    sent: list[str] = []
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        original = getattr(Connection, name)

        def counting(self: Any, query: str, *args: Any, _original: Any = original) -> Any:
            sent.append(query)
            return _original(self, query, *args)

        monkeypatch.setattr(Connection, name, counting)
    created = (await server.http.post("/api/tasks", json={"task_type": "none-here"})).json()
    task = await server.context.store.get_task(UUID(created["id"]))
    assert task is not None
    assert "SELECT * FROM tasks WHERE id = $1" in sent
    # A store call is its statements and nothing more: connections go back to the pool
    # without asyncpg's reset query (one more round trip each time).
    assert not any("RESET ALL" in query for query in sent)


async def test_a_postgres_create_without_idempotency_key_is_one_statement(
    server: Server, database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's round trips")
    from asyncpg.connection import Connection

    store = server.context.store
    sent: list[str] = []
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        original = getattr(Connection, name)

        def counting(self: Any, query: str, *args: Any, _original: Any = original) -> Any:
            if asyncio.current_task() is test:  # not the server's background loops
                sent.append(" ".join(query.split()))
            return _original(self, query, *args)

        monkeypatch.setattr(Connection, name, counting)
    test = asyncio.current_task()
    now = SystemClock().now()
    [(task, created)] = await store.create_tasks([NewTask(name="a", task_type="t")], now=now)
    assert created
    # A single INSERT is atomic: no BEGIN / COMMIT round trips around it.
    assert len(sent) == 1
    assert "INSERT INTO tasks" in sent[0]
    # With an idempotency key a second statement may read the existing task: a transaction,
    # and a replay still returns the first task.
    keyed = NewTask(name="b", task_type="t", idempotency_key="k-1")
    [(first, made)] = await store.create_tasks([keyed], now=now)
    [(again, made_again)] = await store.create_tasks([keyed], now=now)
    assert (made, made_again, again.id) == (True, False, first.id)
    assert (await store.get_task(task.id)) is not None


async def test_a_get_of_a_task_due_later_reads_no_agents(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.context.store
    reads: list[object] = []
    agents_read: list[bool] = []
    list_agents = store.list_agents
    get_task_and_agents = store.get_task_and_agents

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if "statuses" in kwargs:  # the reaper's periodic list of every agent is not ours
            reads.append(args)
        return await list_agents(*args, **kwargs)

    async def with_agents(*args: Any, **kwargs: Any) -> Any:
        task, agents = await get_task_and_agents(*args, **kwargs)
        agents_read.append(agents is not None)
        return task, agents

    later = await server.http.post("/api/tasks", json={"task_type": "t", "delay_seconds": 3600})
    now = await server.http.post("/api/tasks", json={"task_type": "t"})
    monkeypatch.setattr(store, "list_agents", counted)
    monkeypatch.setattr(store, "get_task_and_agents", with_agents)
    read = (await server.http.get(f"/api/tasks/{later.json()['id']}")).json()
    # ``scheduled`` whatever the agents: on every database, no read of them.
    assert read["pending_reason"] == "scheduled"
    assert agents_read == [False]
    # A due task's reason depends on the agents: the store reads them with the task (none
    # connected here), in the same call.
    read = (await server.http.get(f"/api/tasks/{now.json()['id']}")).json()
    assert read["pending_reason"] == "no_agent_for_task_type"
    assert agents_read == [False, True]
    assert reads == []


def _counting(read: Any, name: str, calls: list[str]) -> Any:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await read(*args, **kwargs)

    return counted
