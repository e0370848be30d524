"""A sync handler that ignores its cancel keeps its slot until its thread really returns.

Before, its slot was freed after ``kill_grace_seconds`` while the thread ran on: a retry could
start beside it on the same agent, and once the thread pool (``max_concurrent_tasks + 4``) was
full of such threads, a new sync task reported ``TaskStarted`` and then waited forever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hetuflow.agent import NO_FREE_SLOT, Agent, TaskContext
from hetuflow.protocol import AgentCapabilities, TaskCancel, TaskResult, TaskStarted

from .conftest import running
from .fake_server import FakeServer, task


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets the stuck handlers return; set at the end so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def stubborn_agent(url: str, release: threading.Event, slots: int) -> Agent:
    """An agent whose ``stuck`` handler ignores cancels until ``release`` is set."""
    agent = Agent(
        server=url,
        name="stubborn",
        max_concurrent_tasks=slots,
        kill_grace_seconds=0.1,
        reconnect_min_seconds=0.05,
    )

    @agent.handler("stuck")
    def stuck(payload: dict[str, Any], ctx: TaskContext) -> str:
        release.wait(30)  # ignores ctx.cancelled
        return "late"

    @agent.handler("quick")
    def quick(payload: dict[str, Any]) -> str:
        return "done"

    return agent


async def test_the_slot_of_a_stuck_sync_handler_stays_taken(
    server: FakeServer, release: threading.Event
) -> None:
    agent = stubborn_agent(server.url, release, slots=1)
    async with running(agent):
        assert (await server.next(AgentCapabilities)).capabilities.max_concurrent_tasks == 1
        first = task("stuck")
        await server.dispatch(first)
        await server.next(TaskStarted)
        await server.send(TaskCancel(task_id=first.task_id, attempt=1, reason="cancelled"))
        # the agent tells the server it has no slot left, before it reports the outcome
        update = await server.next(AgentCapabilities)
        assert update.capabilities.max_concurrent_tasks == 0
        cancelled = await server.next(TaskResult)
        assert (cancelled.task_id, cancelled.outcome) == (first.task_id, "cancelled")
        assert agent.abandoned_threads == 1

        retry = task("quick", task_id=first.task_id, attempt=2)
        await server.dispatch(retry)  # beside the old thread: refused, never started
        refused = await server.next(TaskResult)
        assert (refused.attempt, refused.outcome, refused.error) == (2, "failed", NO_FREE_SLOT)
        assert [started.attempt for started in server.all_of(TaskStarted)] == [1]

        release.set()  # the thread returns: its slot comes back
        update = await server.next(AgentCapabilities)
        assert update.capabilities.max_concurrent_tasks == 1
        assert agent.abandoned_threads == 0
        again = task("quick", task_id=first.task_id, attempt=3)
        await server.dispatch(again)
        done = await server.next(TaskResult)
        assert (done.attempt, done.outcome, done.result) == (3, "succeeded", "done")


async def test_all_slots_stuck_takes_no_task_and_none_hangs_after_starting(
    server: FakeServer, release: threading.Event
) -> None:
    """More tasks than the pool's spare threads after every slot got stuck: none starts."""
    agent = stubborn_agent(server.url, release, slots=2)
    async with running(agent):
        await server.next(AgentCapabilities)
        stuck = [task("stuck"), task("stuck")]
        await server.dispatch(*stuck)
        for _ in stuck:
            await server.next(TaskStarted)
        for job in stuck:
            await server.send(TaskCancel(task_id=job.task_id, attempt=1, reason="cancelled"))
        assert {entry.outcome for entry in await server.results(2)} == {"cancelled"}
        assert agent.abandoned_threads == 2  # degraded: both slots held
        assert server.all_of(AgentCapabilities)[-1].capabilities.max_concurrent_tasks == 0

        later = [task("stuck") for _ in range(6)]  # the pool has 2 + 4 threads
        await server.dispatch(*later)
        refused = await server.results(6)
        assert {(entry.outcome, entry.error) for entry in refused} == {("failed", NO_FREE_SLOT)}
        started = {message.task_id for message in server.all_of(TaskStarted)}
        assert started == {job.task_id for job in stuck}


async def test_a_cancel_right_behind_the_dispatch_is_reported_and_frees_the_slot(
    server: FakeServer, release: threading.Event
) -> None:
    """A runner cancelled before its first step never ran its own cleanup: the slot leaked
    and no result was sent."""
    agent = stubborn_agent(server.url, release, slots=1)
    async with running(agent):
        await server.next(AgentCapabilities)
        job = task("quick")
        await server.dispatch(job)
        await server.send(TaskCancel(task_id=job.task_id, attempt=1, reason="cancelled"))
        cancelled = await server.next(TaskResult)
        assert (cancelled.task_id, cancelled.outcome) in {
            (job.task_id, "cancelled"),
            (job.task_id, "succeeded"),  # it ran before the cancel came: also fine
        }
        assert agent.running_count == 0
        after = task("quick")
        await server.dispatch(after)
        assert (await server.next(TaskResult)).outcome == "succeeded"
