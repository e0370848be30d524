"""(f) Producer: one process submitting tasks one at a time through the Python SDK.

The most common way a product uses the server: a script or a web request handler calling
``client.submit(...)`` once per task, one after the other. Three runs, each on one agent with
8 slots running the ``async def`` no-op handler, the server as shipped (durable commits):

- ``sync``: ``hetuflow.Client.submit`` called serially N times (in a worker thread of this
  process, so the event loop stays free to poll the store afterwards);
- ``async``: ``hetuflow.AsyncClient.submit`` awaited serially N times;
- ``threads``: 8 threads sharing one ``Client``, N submits between them;
- ``sync_httpx`` and ``async_httpx``: the first two with ``transport=httpx.HTTPTransport()``
  (``httpx.AsyncHTTPTransport()``), which keeps every call on httpx, as any custom transport
  does: the SDK's own cost next to its lean submit path, in the same run.

Submit latency is timed around each call (``time.perf_counter``); end to end is N / (the first
poll that sees all N ``succeeded`` - the first submit). The store is polled only once the
producer is done (every 20 ms), so the poller takes nothing from the producer.

The ``edge`` micro-scenario (in ``benchmarks/edge.py``) measures single requests against a
bare Starlette app in the same run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.harness import CpuMeter, ScenarioFailed, machine_load, stats, summary_ms
from benchmarks.suite import Cluster, Context
from hetuflow.client import AsyncClient, Client

SLOTS = 8
THREADS = 8
TASK_TYPE = "bench-noop"
POLL_SECONDS = 0.02


def _serial_sync(client: Client, count: int, latencies: list[float]) -> None:
    for _ in range(count):
        before = time.perf_counter()
        client.submit(TASK_TYPE, name="bench-producer")
        latencies.append(time.perf_counter() - before)


async def _serial_async(client: AsyncClient, count: int, latencies: list[float]) -> None:
    for _ in range(count):
        before = time.perf_counter()
        await client.submit(TASK_TYPE, name="bench-producer")
        latencies.append(time.perf_counter() - before)


def _threads(client: Client, count: int, latencies: list[float]) -> None:
    shares = [count // THREADS + (1 if i < count % THREADS else 0) for i in range(THREADS)]
    found: list[list[float]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            _serial_sync(client, shares[index], found[index])
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    for part in found:
        latencies.extend(part)


async def _wait_succeeded(cluster: Cluster, target: int, timeout_seconds: float) -> float:
    """Poll the store until ``target`` tasks succeeded; the instant it saw them."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        by_status = (await stats(cluster.http))["tasks_by_status"]
        if by_status["succeeded"] >= target:
            return time.monotonic()
        if by_status["failed"] or by_status["timed_out"]:
            raise ScenarioFailed(f"tasks did not succeed: {by_status}")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{by_status['succeeded']} of {target} done after timeout")
        await asyncio.sleep(POLL_SECONDS)


async def measure(cluster: Cluster, mode: str, count: int) -> dict[str, Any]:
    """Submit ``count`` no-op tasks the ``mode`` way; latency and end-to-end rate."""
    base = (await stats(cluster.http))["tasks_by_status"]["succeeded"]
    latencies: list[float] = []
    url = cluster.server.http_url
    meter = CpuMeter({"server": cluster.server.process, "agent": cluster.agents[0]})
    load = machine_load()
    run: Callable[[], Any]
    if mode.startswith("async"):
        transport = httpx.AsyncHTTPTransport() if mode == "async_httpx" else None
        async_client = AsyncClient(url, transport=transport)
        meter.start()
        started = time.monotonic()
        try:
            await _serial_async(async_client, count, latencies)
        finally:
            await async_client.aclose()
    else:
        client = Client(url, transport=httpx.HTTPTransport() if mode == "sync_httpx" else None)
        work = _threads if mode == "threads" else _serial_sync
        run = lambda: work(client, count, latencies)  # noqa: E731
        meter.start()
        started = time.monotonic()
        try:
            await asyncio.to_thread(run)
        finally:
            client.close()
    submitted = time.monotonic()
    finished = await _wait_succeeded(cluster, base + count, timeout_seconds=600)
    cpu = meter.stop()
    return {
        "tasks": count,
        "submit": summary_ms(latencies),
        "submits_per_second": round(count / (submitted - started), 1),
        "tasks_per_second": round(count / (finished - started), 1),
        "seconds": round(finished - started, 3),
        "cpu_percent": cpu,
        "load_average_1m_before": round(load, 2),
    }


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    result: dict[str, Any] = {"agents": 1, "slots": SLOTS, "threads": THREADS}
    async with context.cluster("producer", agents=1, slots=SLOTS) as cluster:
        await measure(cluster, "sync", sizes.prod_warmup)  # connections, code paths
        for mode, count in (
            ("sync", sizes.prod_tasks),
            ("async", sizes.prod_tasks),
            ("threads", sizes.prod_thread_tasks),
            ("sync_httpx", sizes.prod_tasks),
            ("async_httpx", sizes.prod_tasks),
        ):
            result[mode] = await measure(cluster, mode, count)
            context.log(
                f"  {mode}: submit p50 {result[mode]['submit'].get('p50_ms')} ms, "
                f"{result[mode]['tasks_per_second']} tasks/s"
            )
    return result
