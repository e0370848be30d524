"""A dispatch that arrives while a superseded attempt still winds down is run, not failed.

Found by the chaos suite (tests/chaos): an agent paused past the silence window reconnects
holding its attempts; the server has released them (their slots are free in its eyes), says
they are superseded and dispatches new work at once. Before, the agent answered that work
``agent has no free slot`` (the superseded runners had not ended yet), and a task that never
ran ended ``failed``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from hetuflow.agent import Agent, TaskContext
from hetuflow.protocol import AgentCapabilities, TaskCancel, TaskResult, TaskStarted

from .conftest import running
from .fake_server import FakeServer, task


def winding_agent(url: str) -> Agent:
    """One slot; ``slow`` takes 0.3 s to clean up after a cancel."""
    agent = Agent(server=url, name="winding", max_concurrent_tasks=1, kill_grace_seconds=1.0)
    stopped: list[float] = []

    @agent.handler("slow")
    async def slow(payload: dict[str, Any], ctx: TaskContext) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleanup
            stopped.append(asyncio.get_running_loop().time())
            raise
        return "late"

    @agent.handler("quick")
    async def quick(payload: dict[str, Any]) -> float:
        assert stopped, "started beside the superseded attempt"
        return asyncio.get_running_loop().time() - stopped[0]

    return agent


async def test_a_task_dispatched_beside_a_superseded_attempt_runs_once_it_has_ended(
    server: FakeServer,
) -> None:
    agent = winding_agent(server.url)
    async with running(agent):
        await server.next(AgentCapabilities)
        first = task("slow")
        await server.dispatch(first)
        await server.next(TaskStarted)
        await server.send(TaskCancel(task_id=first.task_id, attempt=1, reason="superseded"))
        fresh = task("quick")
        await server.dispatch(fresh)
        done = await server.next(TaskResult)
        assert (done.task_id, done.outcome) == (fresh.task_id, "succeeded"), done
        assert isinstance(done.result, float)
        assert done.result >= 0  # started after the superseded one had ended
        assert [result.task_id for result in server.all_of(TaskResult)] == [fresh.task_id]


async def test_a_task_dispatched_beside_a_superseded_sync_handler_waits_for_its_thread(
    server: FakeServer,
) -> None:
    """A sync handler cannot be interrupted: its thread outlives the kill grace (abandoned),
    and the new task starts when it returns, not beside it and not refused."""
    agent = Agent(server=server.url, name="sync", max_concurrent_tasks=1, kill_grace_seconds=0.1)
    returned = threading.Event()

    @agent.handler("sleepy")
    def sleepy(payload: dict[str, Any]) -> str:
        time.sleep(1.5)  # ignores the cancel, past kill grace + 1 s
        returned.set()
        return "late"

    @agent.handler("quick")
    def quick(payload: dict[str, Any]) -> bool:
        return returned.is_set()

    async with running(agent):
        await server.next(AgentCapabilities)
        first = task("sleepy")
        await server.dispatch(first)
        await server.next(TaskStarted)
        await server.send(TaskCancel(task_id=first.task_id, attempt=1, reason="superseded"))
        fresh = task("quick")
        await server.dispatch(fresh)
        done = await server.next(TaskResult, timeout_seconds=10)
        assert (done.task_id, done.outcome, done.result) == (fresh.task_id, "succeeded", True)


async def test_a_repeated_cancel_does_not_cut_the_clean_up_short(server: FakeServer) -> None:
    """Servers re-send the cancel of a task still ``cancelling`` (the reconcile pass): the
    second one must not interrupt the handler's clean-up (a shell command's SIGTERM grace)."""
    agent = Agent(server=server.url, name="tidy", max_concurrent_tasks=1, kill_grace_seconds=1.0)
    cleaned: list[bool] = []

    @agent.handler("tidy")
    async def tidy(payload: dict[str, Any]) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # interrupted by a second cancel before the fix
            cleaned.append(True)
            raise
        return "late"

    async with running(agent):
        await server.next(AgentCapabilities)
        job = task("tidy")
        await server.dispatch(job)
        await server.next(TaskStarted)
        for _ in range(2):
            await server.send(TaskCancel(task_id=job.task_id, attempt=1, reason="cancelled"))
            await asyncio.sleep(0.05)
        done = await server.next(TaskResult)
        assert (done.task_id, done.outcome) == (job.task_id, "cancelled")
        assert cleaned == [True]
