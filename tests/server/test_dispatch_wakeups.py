"""The dispatcher's timer is set from the instant its claim read, not a later one: a round
takes time, and a rate limit window that frees, or a scheduled task that enters the
lookahead window, between the claim's reading and the next one must still wake it (else
nothing does: no other event comes, and the task waits for ever). A clock that moves on
each reading stands for the time a round takes, deterministically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from hetuflow.clock import FrozenClock
from hetuflow.config import DatabaseConfig

from .harness import Agent, Server, agent, fast_config, serve

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=10)
MICROSECOND = timedelta(microseconds=1)


class MovingClock(FrozenClock):
    """A frozen clock that, once ``step`` is set, moves by it after each reading."""

    step = timedelta(0)

    def now(self) -> datetime:
        value = super().now()
        if self.step:
            self.advance(self.step)
        return value


@asynccontextmanager
async def running(
    database: DatabaseConfig, clock: MovingClock
) -> AsyncIterator[tuple[Server, Agent]]:
    # Heartbeats far apart: the clock's jumps never make the agent look silent.
    config = fast_config(database, heartbeat_interval_seconds=60)
    async with serve(config, clock=clock) as server, agent(server, "limited", slots=5) as client:
        yield server, client


async def one_round_a_microsecond_before(server: Server, clock: MovingClock, at: datetime) -> float:
    """A round whose claim reads one microsecond before ``at`` and whose later readings come
    after it: the deadline it returns."""
    clock.set(at - MICROSECOND)
    clock.step = MICROSECOND
    try:
        deadline = await server.engine.dispatcher.dispatch()
    finally:
        clock.step = timedelta(0)
    assert deadline is not None, "the round lost its wake-up: nothing would dispatch the task"
    assert deadline <= clock.monotonic() + 0.001  # due at once: the instant is (about) now
    return deadline


async def test_a_window_freeing_during_a_round_still_wakes_the_dispatcher(
    database: DatabaseConfig,
) -> None:
    clock = MovingClock(T0)
    async with running(database, clock) as (server, client):
        await server.context.store.create_rate_limit(
            "api", 1, WINDOW.total_seconds(), now=clock.now()
        )
        limited = {"task_type": "limited", "rate_limits": [{"name": "api", "units": 1}]}
        await server.create_task(**limited)
        await server.create_task(**limited)
        [first] = await client.dispatched(1)
        assert await client.quiet(0.2) == []  # the second waits for the window (spent at T0)
        await one_round_a_microsecond_before(server, clock, T0 + WINDOW)
        await server.engine.dispatcher.dispatch()  # the round the deadline asks for
        [second] = await client.dispatched(1)
        assert second["task_id"] != first["task_id"]


async def test_a_task_entering_the_lookahead_during_a_round_still_wakes_the_dispatcher(
    database: DatabaseConfig,
) -> None:
    clock = MovingClock(T0)
    async with running(database, clock) as (server, client):
        at = T0 + WINDOW
        await server.create_task(task_type="limited", scheduled_at=at.isoformat())
        assert await client.quiet(0.2) == []
        lookahead = timedelta(seconds=server.config.scheduler.dispatch_lookahead_seconds)
        await one_round_a_microsecond_before(server, clock, at - lookahead)
        await server.engine.dispatcher.dispatch()
        [task] = await client.dispatched(1)
        assert task["start_at"] is not None
