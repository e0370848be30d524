"""Slots freed by results that made no task pending wake the dispatcher only when it may have
something to claim for them (``SLOTS_FREED``, ``TaskDispatcher.wake``): a round after every
plain success cost a serial producer one outlook read per task, and found nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import DispatchOutlook, TaskStatus

from .harness import Server, agent, eventually, fast_config, serve


def count_outlooks(server: Server, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the dispatcher's outlook reads (the read every round starts with)."""
    store = server.context.store
    read = store.dispatch_outlook
    reads = 0

    async def counted(*args: Any, **kwargs: Any) -> DispatchOutlook:
        nonlocal reads
        reads += 1
        return await read(*args, **kwargs)

    monkeypatch.setattr(store, "dispatch_outlook", counted)
    return lambda: reads


async def test_a_plain_success_costs_no_round_when_nothing_is_due(
    database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(fast_config(database)) as server, agent(server, "t", slots=2) as client:
        outlooks = count_outlooks(server, monkeypatch)
        await server.engine.dispatcher.dispatch()  # a round that finds nothing due
        read = outlooks()
        assert read >= 1
        for _ in range(3):
            task_id = await server.create_task(task_type="t")  # placed at create: no round
            [frame] = await client.dispatched(1)
            await client.result(frame)
            await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        await server.engine.results.drain()
        assert outlooks() == read

        # A failure that is retried leaves the task pending: that wakes a round.
        task_id = await server.create_task(task_type="t", max_retries=1)
        [frame] = await client.dispatched(1)
        await client.result(frame, error="boom", outcome="failed")
        await server.wait_status(task_id, TaskStatus.PENDING)
        await eventually(lambda: _more(outlooks, read))


async def _more(outlooks: Callable[[], int], than: int) -> bool:
    return outlooks() > than


async def test_a_slot_of_a_type_the_idle_round_did_not_offer_wakes_a_round(
    database: DatabaseConfig,
) -> None:
    """The round that found nothing due read only the types of the agents with a free slot;
    a task of another type waited for its full agent, whose plain success must claim it."""
    async with (
        serve(fast_config(database)) as server,
        agent(server, "x", slots=1) as busy,
        agent(server, "y", slots=1),
    ):
        first = await server.create_task(task_type="x")
        [running] = await busy.dispatched(1)
        waiting = await server.create_task(task_type="x")  # x's only slot is taken
        await server.engine.dispatcher.dispatch()  # offers y alone: nothing due for it
        assert (await server.task(waiting)).status is TaskStatus.PENDING
        await busy.result(running)
        await server.wait_status(first, TaskStatus.SUCCEEDED)
        [frame] = await busy.dispatched(1)
        assert frame["task_id"] == str(waiting)


async def test_a_backlog_is_claimed_without_reading_the_outlook_each_time(
    database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a claim that filled every slot it offered, the next round claims at once: with
    tasks waiting for a busy agent, each freed slot costs a claim, not an outlook read and a
    claim. The claim that finds the queue empty ends the backlog (the outlook is read then)."""
    async with serve(fast_config(database)) as server, agent(server, "t", slots=1) as client:
        ids = [await server.create_task(task_type="t") for _ in range(BACKLOG)]
        [frame] = await client.dispatched(1)  # the first, placed at its create
        outlooks = count_outlooks(server, monkeypatch)
        done = []
        for _ in range(BACKLOG):
            await client.result(frame)
            done.append(frame["task_id"])
            if len(done) < BACKLOG:
                [frame] = await client.dispatched(1)
        assert sorted(done) == sorted(str(task_id) for task_id in ids)
        for task_id in ids:
            await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        await server.engine.results.drain()
        await eventually(lambda: _at_most(outlooks, 3))  # the first round, the last, slack 1
        assert outlooks() <= 3, outlooks()


BACKLOG = 8


async def _at_most(outlooks: Callable[[], int], count: int) -> bool:
    return outlooks() <= count
