"""Deleting an agent (``DELETE /api/agents/{id}``) with real agents over real WebSockets.

A connected agent is refused (409 ``agent_online``): what it runs is not taken from it nor
dispatched again, and dispatch carries on. An offline one becomes a tombstone: hidden, and a
reconnect with its id is closed with 4010. On PostgreSQL the check is the store's record of
the connection, so it holds whichever node the agent is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentStatus, TaskStatus

from .harness import Agent, Server, agent, capabilities, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def _offline(http: httpx.AsyncClient, agent_id: str) -> bool:
    response = await http.get(f"/api/agents/{agent_id}")
    return bool(response.json()["status"] == "offline")


async def _reconnect_refused(server: Server, agent_id: str) -> tuple[int | None, str, str]:
    """Register with ``agent_id`` on a fresh connection: (close code, reason, error code)."""
    async with connect(server.ws_url, open_timeout=5, close_timeout=1) as ws:
        client = Agent(ws)
        await client.send(capabilities(["echo"], agent_id=agent_id))
        error = await client.expect("Error")
        code, reason = await client.closed()
        return code, reason, str(error["code"])


async def test_deleting_the_agent_running_a_task_neither_runs_it_twice_nor_breaks_dispatch(
    server: Server,
) -> None:
    async with agent(server, "echo", slots=2, name="first") as first:
        running = await server.create_task(task_type="echo")
        [held] = await first.dispatched(1)
        async with agent(server, "echo", slots=1, name="second") as second:
            deleted = await server.http.delete(f"/api/agents/{first.agent_id}")
            # Later tasks are accepted and dispatched as usual (the least loaded agent, the
            # second, gets each), though the first still offers a free slot.
            for _ in range(2):
                response = await server.http.post(
                    "/api/tasks", json={"name": "later", "task_type": "echo"}
                )
                assert response.status_code == 201, response.text
                later = UUID(response.json()["id"])
                [pushed] = await second.dispatched(1)
                assert UUID(pushed["task_id"]) == later
                await second.result(pushed)
                assert (await server.wait_status(later, TaskStatus.SUCCEEDED)).attempts == 1
            # The running attempt stays with the first agent: not dispatched a second time.
            assert await second.quiet(0.6) == []
            assert await first.quiet(0.1) == []
            assert (await server.task(running)).agent_id == UUID(first.agent_id)
            await first.result(held)
            done = await server.wait_status(running, TaskStatus.SUCCEEDED)
            assert done.attempts == 1
            # The delete was refused, saying what to do instead.
            assert deleted.status_code == 409, deleted.text
            error = deleted.json()["error"]
            assert error["code"] == "agent_online"
            assert "drain or disconnect it first" in error["message"]
            found = await server.http.get(f"/api/agents/{first.agent_id}")
            assert found.status_code == 200


async def test_a_deleted_agent_is_hidden_and_its_reconnect_refused(server: Server) -> None:
    async with agent(server, "echo", name="leaving") as leaving:
        agent_id = leaving.agent_id
    await eventually(lambda: _offline(server.http, agent_id))  # after the reconnect grace
    deleted = await server.http.delete(f"/api/agents/{agent_id}")
    assert deleted.status_code == 204, deleted.text
    assert (await server.http.get(f"/api/agents/{agent_id}")).status_code == 404
    listed = await server.http.get("/api/agents")
    assert agent_id not in [item["id"] for item in listed.json()["items"]]

    code, reason, error = await _reconnect_refused(server, agent_id)
    assert (code, reason, error) == (4010, "agent deleted", "agent_deleted")
    assert (await server.http.get(f"/api/agents/{agent_id}")).status_code == 404
    # The name is free: a new agent may take it (with a new id).
    async with agent(server, "echo", name="leaving") as newcomer:
        assert newcomer.agent_id != agent_id


async def test_an_agent_deleted_while_this_node_holds_it_is_closed_and_its_work_released(
    server: Server,
) -> None:
    """The store declared the agent offline (another node's reaper, say) while this node
    still holds its connection: the delete goes through, and the next heartbeat flush here
    stops what it runs (TaskCancel), closes it with 4010 and gives its task back."""
    store = server.context.store
    async with agent(server, "echo", slots=1, name="stale") as stale:
        task_id = await server.create_task(task_type="echo")
        [held] = await stale.dispatched(1)
        record = await store.get_agent(UUID(stale.agent_id))
        assert record is not None
        await store.set_agent_status(
            record.id, AgentStatus.OFFLINE, session=record.session, now=server.context.clock.now()
        )
        deleted = await server.http.delete(f"/api/agents/{stale.agent_id}")
        assert deleted.status_code == 204, deleted.text
        await stale.send({"type": "AgentHeartbeat"})
        cancel = await stale.expect("TaskCancel")
        assert (cancel["task_id"], cancel["attempt"]) == (held["task_id"], held["attempt"])
        assert await stale.closed() == (4010, "agent deleted")
    async with agent(server, "echo", slots=1, name="fresh") as fresh:
        [again] = await fresh.dispatched(1)
        assert UUID(again["task_id"]) == task_id
        assert again["attempt"] == held["attempt"] + 1


async def test_work_released_from_a_deleted_agent_reaches_an_idle_agent_at_once(
    database: DatabaseConfig,
) -> None:
    """The delete releases the work and wakes the dispatchers, also one that had found
    nothing due (it passes over slots freed by plain results): the other agent was connected
    before, and no other event comes (the reconnect grace, whose end would release the work
    too, is a minute here)."""
    config = fast_config(database, reconnect_grace_seconds=60)
    async with serve(config) as server, agent(server, "echo", slots=1, name="stale") as stale:
        store = server.context.store
        task_id = await server.create_task(task_type="echo")
        [held] = await stale.dispatched(1)
        async with agent(server, "echo", slots=1, name="idle") as idle:
            await server.engine.dispatcher.dispatch()  # nothing due: the dispatcher is idle
            record = await store.get_agent(UUID(stale.agent_id))
            assert record is not None
            now = server.context.clock.now()
            await store.set_agent_status(
                record.id, AgentStatus.OFFLINE, session=record.session, now=now
            )
            deleted = await server.http.delete(f"/api/agents/{stale.agent_id}")
            assert deleted.status_code == 204, deleted.text
            await stale.send({"type": "AgentHeartbeat"})
            assert await stale.closed() == (4010, "agent deleted")
            [again] = await idle.dispatched(1)
            assert UUID(again["task_id"]) == task_id
            assert again["attempt"] == held["attempt"] + 1


@pytest.mark.postgres
async def test_delete_across_nodes_goes_by_the_store_record(pg_database: DatabaseConfig) -> None:
    config = fast_config(pg_database)
    async with (
        serve(config, node_id="node-a") as first,
        serve(config, node_id="node-b") as other,
    ):
        async with agent(other, "echo", slots=1, name="remote") as remote:
            running = await first.create_task(task_type="echo")
            [held] = await remote.dispatched(1)
            async with agent(first, "echo", slots=1, name="local") as local:
                refused = await first.http.delete(f"/api/agents/{remote.agent_id}")
                assert await local.quiet(0.6) == []  # not dispatched a second time
                later = await first.create_task(task_type="echo")
                [pushed] = await local.dispatched(1)
                assert UUID(pushed["task_id"]) == later
                assert refused.status_code == 409, refused.text
                assert refused.json()["error"]["code"] == "agent_online"
            await remote.result(held)
            assert (await first.wait_status(running, TaskStatus.SUCCEEDED)).attempts == 1
            agent_id = remote.agent_id
        await eventually(lambda: _offline(first.http, agent_id))
        deleted = await first.http.delete(f"/api/agents/{agent_id}")
        assert deleted.status_code == 204, deleted.text
        code, reason, error = await _reconnect_refused(other, agent_id)
        assert (code, reason, error) == (4010, "agent deleted", "agent_deleted")
        assert (await other.http.get(f"/api/agents/{agent_id}")).status_code == 404


async def _drop_row(database: DatabaseConfig, agent_id: str) -> None:
    """Remove an agent's row behind the server's back (nothing in hetuflow does since
    tombstones: this stands for any reference a write finds missing)."""
    if database.type == "postgres":
        connection = await asyncpg.connect(database.dsn)
        try:
            await connection.execute("DELETE FROM agents WHERE id = $1", UUID(agent_id))
        finally:
            await connection.close()
        return

    def drop() -> None:
        with contextlib.closing(sqlite3.connect(database.sqlite_path)) as connection:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
            connection.commit()

    await asyncio.to_thread(drop)


async def test_a_task_is_accepted_when_an_agent_it_could_go_to_has_no_row(
    server: Server, database: DatabaseConfig
) -> None:
    """Placing new tasks on this node's agents is the server's business: a missing agent row
    neither fails the request (it used to be 404 ``cron_job_not_found``) nor keeps the
    connection (the heartbeat flush closes it with 4010)."""
    async with agent(server, "echo", slots=2, name="orphan") as orphan:
        await _drop_row(database, orphan.agent_id)
        response = await server.http.post("/api/tasks", json={"name": "n", "task_type": "echo"})
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "pending"
        await orphan.send({"type": "AgentHeartbeat"})
        assert await orphan.closed() == (4010, "agent deleted")
    async with agent(server, "echo", name="heir") as heir:
        [pushed] = await heir.dispatched(1)
        assert pushed["task_id"] == response.json()["id"]
