"""Submit coalescing: concurrent ``submit`` calls ride one batch request, each caller still
gets its own task or its own error, and serial callers never wait for a batch."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from hetuflow.client import AsyncClient, Client, ClientError, Task
from hetuflow.client.coalesce import AsyncSubmitCoalescer, SubmitCoalescer

Body = dict[str, Any]


class Spy:
    """Counts the requests a client's coalescer sends: single creates and batches."""

    def __init__(self) -> None:
        self.singles = 0
        self.batches: list[int] = []


def spied(client: Client, *, max_in_flight: int = 2) -> tuple[Spy, SubmitCoalescer]:
    spy = Spy()

    def one(body: Body) -> Task:
        spy.singles += 1
        return client._create(body)

    def many(bodies: Sequence[Body]) -> list[Task]:
        spy.batches.append(len(bodies))
        return client._create_many(bodies)

    coalescer = SubmitCoalescer(one, many, max_in_flight=max_in_flight)
    client._coalescer = coalescer
    return spy, coalescer


def wait_until(check: Callable[[], bool], timeout_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def gated(client: Client, coalescer: SubmitCoalescer, queued: int) -> Callable[[Body], Task]:
    """A single create that waits until ``queued`` calls queue behind it: they are then sure
    to leave together as one batch when it comes back."""
    first = threading.Event()

    def one(body: Body) -> Task:
        if not first.is_set():
            first.set()
            wait_until(lambda: len(coalescer._queue) >= queued)
        return client._create(body)

    return one


def run_threads(calls: Sequence[Callable[[], Task]]) -> list[Task | BaseException]:
    results: list[Task | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def test_serial_submits_never_batch(client: Client) -> None:
    spy, _ = spied(client)
    tasks = [client.submit("serial", name=f"s{i}") for i in range(20)]
    assert [task.name for task in tasks] == [f"s{i}" for i in range(20)]
    assert (spy.singles, spy.batches) == (20, [])


def test_threads_sharing_a_client_ride_batches_and_each_get_their_own_task(
    client: Client,
) -> None:
    spy, _ = spied(client)
    per_thread, threads = 25, 12
    results: list[list[Task]] = [[] for _ in range(threads)]

    def produce(index: int) -> Task:
        for i in range(per_thread):
            results[index].append(client.submit("fan", {"n": i}, name=f"t{index}-{i}"))
        return results[index][-1]

    outcomes = run_threads([functools.partial(produce, index) for index in range(threads)])
    assert all(isinstance(outcome, Task) for outcome in outcomes)
    for index, tasks in enumerate(results):
        assert [(task.name, task.payload) for task in tasks] == [
            (f"t{index}-{i}", {"n": i}) for i in range(per_thread)
        ]
    ids = {task.id for tasks in results for task in tasks}
    assert len(ids) == per_thread * threads
    assert spy.batches, "concurrent submits rode no batch"
    assert spy.singles + len(spy.batches) < per_thread * threads
    for task_id in list(ids)[:5]:
        assert client.get_task(task_id).status == "pending"


def test_a_bad_task_in_a_batch_fails_only_its_own_caller(client: Client) -> None:
    spy, coalescer = spied(client, max_in_flight=1)
    coalescer._send_one = gated(client, coalescer, queued=4)
    calls: list[Callable[[], Task]] = [
        lambda: client.submit("first"),
        *(
            later(coalescer, functools.partial(client.submit, "good", name=f"g{i}"))
            for i in range(3)
        ),
        later(coalescer, lambda: client.submit("bad", priority="bogus")),
    ]
    first, *good, bad = run_threads(calls)
    assert isinstance(first, Task)
    # The batch of 4 was refused (a 422 naming tasks[i]): the bad task went again alone …
    assert spy.batches == [4, 3]  # … and the others together
    assert isinstance(bad, ClientError)
    assert (bad.status, bad.field) == (422, "priority")  # its own error, as if alone
    assert sorted(task.name for task in good if isinstance(task, Task)) == ["g0", "g1", "g2"]


def test_idempotency_keys_hold_within_a_batch(client: Client) -> None:
    spy, coalescer = spied(client, max_in_flight=1)
    coalescer._send_one = gated(client, coalescer, queued=3)
    calls: list[Callable[[], Task]] = [
        lambda: client.submit("first"),
        later(coalescer, lambda: client.submit("keyed", idempotency_key="k-1")),
        later(coalescer, lambda: client.submit("keyed", idempotency_key="k-1")),
        later(coalescer, lambda: client.submit("other")),
    ]
    _, keyed_a, keyed_b, other = run_threads(calls)
    assert isinstance(keyed_a, Task)
    assert isinstance(keyed_b, Task)
    assert isinstance(other, Task)
    assert spy.batches == [3]
    assert keyed_a.id == keyed_b.id != other.id
    again = client.submit("keyed", idempotency_key="k-1")
    assert again.id == keyed_a.id


def test_a_refused_batch_is_resent_alone_so_each_caller_gets_its_own_answer() -> None:
    singles: list[Body] = []
    batches: list[int] = []
    coalescer: SubmitCoalescer

    def one(body: Body) -> Task:
        singles.append(body)
        if body["n"] == 0:
            wait_until(lambda: len(coalescer._queue) == 3)
        raise ClientError(f"refused {body['n']}", status=503, code="store_unavailable")

    def many(bodies: Sequence[Body]) -> list[Task]:
        batches.append(len(bodies))
        raise ClientError("refused", status=503, code="store_unavailable")

    coalescer = SubmitCoalescer(one, many, max_in_flight=1)
    calls = [lambda n=n: coalescer.submit({"n": n}) for n in range(4)]
    outcomes = run_threads([calls[0], *(later(coalescer, call) for call in calls[1:])])
    assert batches == [3]
    assert sorted(body["n"] for body in singles) == [0, 1, 2, 3]
    assert [str(outcome) for outcome in outcomes] == [
        f"503 store_unavailable: refused {n}" for n in range(4)
    ]


def test_a_batch_lost_on_the_wire_is_not_sent_again() -> None:
    """Whether it was committed is unknown: each caller gets the error, nothing is resent
    (which could create the tasks twice)."""
    singles: list[Body] = []
    batches: list[int] = []
    coalescer: SubmitCoalescer

    def one(body: Body) -> Task:
        singles.append(body)
        wait_until(lambda: len(coalescer._queue) == 3)
        raise ClientError("connection reset", code="transport_error")

    def many(bodies: Sequence[Body]) -> list[Task]:
        batches.append(len(bodies))
        raise ClientError("connection reset", code="transport_error")

    coalescer = SubmitCoalescer(one, many, max_in_flight=1)
    calls = [lambda n=n: coalescer.submit({"n": n}) for n in range(4)]
    outcomes = run_threads([calls[0], *(later(coalescer, call) for call in calls[1:])])
    assert (len(singles), batches) == (1, [3])
    assert all(isinstance(outcome, ClientError) for outcome in outcomes)


def later(coalescer: SubmitCoalescer, call: Callable[[], Task]) -> Callable[[], Task]:
    """``call`` once the first request is on the wire (so it queues)."""

    def run() -> Task:
        wait_until(lambda: coalescer._in_flight == 1)
        return call()

    return run


# --- AsyncClient ---------------------------------------------------------------------------


def async_spied(client: AsyncClient, *, max_in_flight: int = 2) -> Spy:
    spy = Spy()

    async def one(body: Body) -> Task:
        spy.singles += 1
        return await client._create(body)

    async def many(bodies: Sequence[Body]) -> list[Task]:
        spy.batches.append(len(bodies))
        return await client._create_many(bodies)

    client._coalescer = AsyncSubmitCoalescer(one, many, max_in_flight=max_in_flight)
    return spy


async def test_async_serial_submits_never_batch(async_client: AsyncClient) -> None:
    spy = async_spied(async_client)
    for i in range(10):
        assert (await async_client.submit("serial", name=f"s{i}")).name == f"s{i}"
    assert (spy.singles, spy.batches) == (10, [])


async def test_async_tasks_ride_batches_and_each_get_their_own_task_or_error(
    async_client: AsyncClient,
) -> None:
    spy = async_spied(async_client)
    good = [async_client.submit("fan", {"n": i}, name=f"a{i}") for i in range(60)]
    bad = async_client.submit("bad", payload={"x": 1}, priority="bogus")
    outcomes = await asyncio.gather(*good[:30], bad, *good[30:], return_exceptions=True)
    error = outcomes.pop(30)
    assert isinstance(error, ClientError)
    assert (error.status, error.field) == (422, "priority")
    tasks = [outcome for outcome in outcomes if isinstance(outcome, Task)]
    assert [(task.name, task.payload) for task in tasks] == [(f"a{i}", {"n": i}) for i in range(60)]
    assert len({task.id for task in tasks}) == 60
    assert spy.batches, "concurrent submits rode no batch"
    assert spy.singles + len(spy.batches) < 61


async def test_a_cancelled_caller_does_not_cancel_the_others(async_client: AsyncClient) -> None:
    spy = async_spied(async_client, max_in_flight=1)
    first = asyncio.ensure_future(async_client.submit("first"))
    await asyncio.sleep(0)  # it is on the wire: the next ones queue
    queued = [asyncio.ensure_future(async_client.submit("q", name=f"q{i}")) for i in range(4)]
    await asyncio.sleep(0)
    queued[1].cancel()
    done = await asyncio.gather(first, *queued, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    names = [task.name for task in done if isinstance(task, Task)]
    assert names == ["first", "q0", "q2", "q3"]
    assert spy.batches == [3]


@pytest.mark.parametrize("coalesce", [True, False])
def test_coalescing_can_be_turned_off(server_url: str, coalesce: bool) -> None:
    with Client(server_url, coalesce=coalesce) as client:
        assert (client._coalescer is not None) is coalesce
        assert client.submit("plain").task_type == "plain"
