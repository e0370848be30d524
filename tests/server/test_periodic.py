"""The periodic per-node work at scale: one reconcile read for many agents, Pings only to
quiet connections."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from uuid import UUID

from hetuflow.config import DatabaseConfig
from hetuflow.models import AttemptOutcome, ClaimGroup, SlotOffer, TaskStatus

from .harness import Agent, agent, fast_config, serve


async def test_one_reconcile_pass_gives_back_stale_claims_of_many_agents(
    database: DatabaseConfig,
) -> None:
    # Heartbeat 5 s: the periodic pass (every 30 s) stays out of the way; the test runs it.
    config = fast_config(database, heartbeat_interval_seconds=5.0)
    async with serve(config) as server, contextlib.AsyncExitStack() as stack:
        clients: list[Agent] = []
        running: dict[str, str] = {}
        for index in range(6):
            client = await stack.enter_async_context(
                agent(server, "work", name=f"worker-{index}", slots=1)
            )
            await server.create_task(task_type="work")
            [task] = await client.dispatched(1)
            ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
            await client.send({"type": "TaskStarted", **ref})
            running[client.agent_id] = task["task_id"]
            clients.append(client)
        for task_id in running.values():
            await server.wait_status(UUID(task_id), TaskStatus.RUNNING)
        # Claimed for two agents behind their connections' back (as through a stale
        # connection on another node): the store says they hold work they never got.
        stale = []
        for client in (clients[1], clients[4]):
            stale_id = await server.create_task(task_type="work")
            offer = SlotOffer(UUID(client.agent_id), 1, 0)
            group = ClaimGroup(frozenset({"work"}), frozenset(), (offer,))
            [claimed] = await server.context.store.claim_tasks([group], now=datetime.now(UTC))
            assert claimed.task.id == stale_id
            stale.append(stale_id)
        connections = list(server.engine.agents)
        assert len(connections) == 6
        await server.engine.reconciler.reconcile_many(connections)
        for stale_id in stale:
            released = await server.task(stale_id)
            assert (released.status, released.attempts) == (TaskStatus.PENDING, 1)
            [attempt] = await server.context.store.list_attempts(stale_id)
            assert attempt.outcome is AttemptOutcome.LOST
        for agent_id, task_id in running.items():
            kept = await server.task(UUID(task_id))
            assert (kept.status, str(kept.agent_id), kept.attempts) == (
                TaskStatus.RUNNING,
                agent_id,
                1,
            )
        for client in clients:
            assert [f["type"] for f in await client.quiet(0.3)] == []


async def test_only_quiet_connections_are_pinged(database: DatabaseConfig) -> None:
    async with (
        serve(fast_config(database)) as server,  # heartbeat interval 0.5 s
        agent(server, "t", name="chatty") as chatty,
        agent(server, "t") as quiet,
    ):

        async def heartbeat() -> None:
            while True:
                await chatty.send({"type": "AgentHeartbeat", "agent_id": chatty.agent_id})
                await asyncio.sleep(0.1)

        beating = asyncio.create_task(heartbeat())
        try:
            frames: list[str] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.3):
                    while True:
                        frames.append((await chatty.recv(2.0))["type"])
            assert "Ping" not in frames
            ping = await quiet.recv(1.0)
            assert ping["type"] == "Ping"
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
