"""A real server and a real ``Agent`` whose sync handler ignores its cancel: the agent
declares the slot that thread still holds as taken (a repeated ``AgentCapabilities``), and the
server gives it to no other task until the thread returns (see tests/agent/
test_abandoned_threads.py for the agent's side)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from hetuflow.agent import Agent, TaskContext
from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import eventually, fast_config, serve


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[None]:
    runner = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(10):
            await agent.wait_registered()
        yield
    finally:
        await agent.stop()
        async with asyncio.timeout(15):
            await asyncio.gather(runner, return_exceptions=True)


def stubborn_agent(url: str, release: threading.Event) -> Agent:
    agent = Agent(server=url, name="stubborn", max_concurrent_tasks=1, kill_grace_seconds=0.1)

    @agent.handler("stuck")
    def stuck(payload: dict[str, Any], ctx: TaskContext) -> str:
        release.wait(30)  # ignores ctx.cancelled
        return "late"

    @agent.handler("quick")
    def quick(payload: dict[str, Any]) -> str:
        return "done"

    return agent


async def test_a_real_server_gives_the_slot_of_a_stuck_handler_to_no_one(
    database: DatabaseConfig, release: threading.Event
) -> None:
    async with serve(fast_config(database)) as server:
        agent = stubborn_agent(server.ws_url, release)
        async with running(agent):
            stuck = await server.create_task(task_type="stuck")
            await server.wait_status(stuck, TaskStatus.RUNNING)
            response = await server.http.delete(f"/api/tasks/{stuck}")
            assert response.status_code == 200, response.text
            await server.wait_status(stuck, TaskStatus.CANCELLED)

            waiting = await server.create_task(task_type="quick")

            async def declared_no_slot() -> bool:
                response = await server.http.get("/api/agents")
                [listed] = response.json()["items"]
                return bool(listed["max_concurrent_tasks"] == 0)

            await eventually(declared_no_slot)
            assert (await server.task(waiting)).status == TaskStatus.PENDING
            release.set()
            done = await server.wait_status(waiting, TaskStatus.SUCCEEDED)
            assert done.result == "done"
