"""(j) Concurrency keys: keyed throughput against unkeyed batch throughput, same run, same setup.

Two runs, one after the other, each on a fresh database with its own server and
``ck_agents`` agents of ``ck_slots`` slots (the same config), warmed up alike (200 unkeyed,
then 200 keyed tasks), so each starts from the same empty tables:

1. **unkeyed**: ``ck_tasks`` no-op tasks over ``POST /api/tasks/batch`` (as the throughput
   scenario's batch run: ``ck_batch_size`` per request, ``ck_batch_in_flight`` in flight);
2. **keyed**: as many no-op tasks, task ``i`` with ``concurrency_key`` ``key-<i mod ck_keys>``
   and ``max_concurrent_per_key: 1``, submitted the same way.

Each rate is tasks / (last completion seen - first submit), completions counted through
``GET /api/stats`` (``benchmarks.throughput.measure``'s way); ``ratio`` = keyed / unkeyed (the
target: >= 0.5).

On the keyed run's cluster, ``ck_hold_tasks`` more keyed tasks over the same keys follow, each
a ``bench-hold`` of ``ck_hold_seconds``: a no-op runs for microseconds, so two of its attempts
dispatched at once would rarely overlap in their runs; a task that holds its key for 20 ms
would (``hold_run`` below).

Then the attempt history of the keyed tasks is read from the database and swept per key
(at one instant an end comes before a start; an attempt without ``finished_at`` is open to the
end), three ways:

- ``run``: from ``started_at`` to ``finished_at`` of every keyed attempt, both the agent's
  clock at the handler's start and end (``max_per_key``: the target is 1; ``overlaps``);
- ``hold_run``: the same, for the ``bench-hold`` tasks only: the check that could see a key
  over its limit;
- ``dispatched``: from ``dispatched_at`` (the server's reading of the clock when its dispatch
  round began) to ``finished_at``. A round reads the clock before it takes the claim's lock
  and passes over the pending tasks, and counts a key's active tasks only then, so a finish
  that committed in between frees the key for an attempt stamped before that finish. These
  overlaps (and ``largest_overlap_ms``) measure how stale the stamps are, not the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx

from benchmarks.harness import CpuMeter, Database, ScenarioFailed, machine_load, stats
from benchmarks.suite import Cluster, Context
from benchmarks.throughput import NOOP, _self_cpu, _steady_rate, _wait_done

Task = dict[str, Any]


def keyed_tasks(total: int, keys: int) -> list[Task]:
    return [
        {**NOOP, "concurrency_key": f"key-{index % keys}", "max_concurrent_per_key": 1}
        for index in range(total)
    ]


async def submit_batches(
    http: httpx.AsyncClient, tasks: Sequence[Task], size: int, in_flight: int
) -> None:
    """``tasks`` in order, ``size`` per ``POST /api/tasks/batch``, ``in_flight`` at once."""
    limit = asyncio.Semaphore(in_flight)

    async def post(chunk: Sequence[Task]) -> None:
        try:
            response = await http.post("/api/tasks/batch", json={"tasks": list(chunk)})
            if response.status_code != 201:
                raise ScenarioFailed(f"batch create: {response.status_code} {response.text[:200]}")
        finally:
            limit.release()

    async with asyncio.TaskGroup() as group:
        for start in range(0, len(tasks), size):
            await limit.acquire()
            group.create_task(post(tasks[start : start + size]))


async def measure_batches(cluster: Cluster, tasks: Sequence[Task]) -> dict[str, Any]:
    """Submit ``tasks`` in batches and time their completion (``throughput.measure``'s way,
    with any task bodies)."""
    sizes = cluster.context.sizes
    http = cluster.http
    total = len(tasks)
    base = (await stats(http))["tasks_by_status"]["succeeded"]
    meter = CpuMeter(
        {"server": cluster.server.process, **{a.name: a for a in cluster.agents if a.alive()}}
    )
    load = machine_load()
    meter.start()
    cpu_self = _self_cpu()
    started = time.monotonic()
    waiter = asyncio.create_task(_wait_done(http, base + total, timeout_seconds=1200))
    try:
        await submit_batches(http, tasks, sizes.ck_batch_size, sizes.ck_batch_in_flight)
        submitted = time.monotonic()
        samples = await waiter
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, ScenarioFailed):
            await waiter
    elapsed = samples[-1][0] - started
    cpu = meter.stop()
    steady = _steady_rate(samples, base, total)
    shared = {k: cpu.pop(k) for k in ("postgres", "machine") if k in cpu}
    return {
        "tasks": total,
        "tasks_per_second": round(total / elapsed, 1),
        "steady_tasks_per_second": round(steady, 1) if steady else None,
        "submit_tasks_per_second": round(total / (submitted - started), 1),
        "seconds": round(elapsed, 3),
        "cpu_percent": {
            **cpu,
            "generator": round(100 * (_self_cpu() - cpu_self) / elapsed),
            **{k: v for k, v in shared.items() if k == "postgres"},
        },
        "machine_busy_percent": shared.get("machine"),
        "load_average_1m_before": round(load, 2),
    }


# --- the attempt history ----------------------------------------------------------------------

_HISTORY_SQLITE = """
SELECT t.concurrency_key, a.dispatched_at, a.started_at, a.finished_at, t.task_type
FROM attempts AS a JOIN tasks AS t ON t.id = a.task_id
WHERE t.concurrency_key IS NOT NULL"""

_HISTORY_POSTGRES = """
SELECT t.concurrency_key,
       (extract(epoch FROM a.dispatched_at) * 1000000)::bigint AS dispatched_at,
       (extract(epoch FROM a.started_at) * 1000000)::bigint AS started_at,
       (extract(epoch FROM a.finished_at) * 1000000)::bigint AS finished_at,
       t.task_type
FROM attempts AS a JOIN tasks AS t ON t.id = a.task_id
WHERE t.concurrency_key IS NOT NULL"""

Attempt = tuple[str, int, int | None, int | None, str]
"""(concurrency key, dispatched at, started at, finished at, task type); the instants in
microseconds since the epoch."""
HOLD = "bench-hold"

FOREVER = 2**62


async def keyed_attempts(db: Database) -> list[Attempt]:
    """Every attempt of a keyed task, from the scenario's database."""
    if db.kind == "sqlite":
        path = db.details["path"]

        def read() -> list[Attempt]:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
                return [(k, d, s, f, t) for k, d, s, f, t in c.execute(_HISTORY_SQLITE)]

        return await asyncio.to_thread(read)
    connection = await asyncpg.connect(db.url)
    try:
        rows = await connection.fetch(_HISTORY_POSTGRES)
    finally:
        await connection.close()
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def sweep(spans_by_key: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    """The most spans of one key open at once, and the spans opened while another of their
    key was open (at one instant an end comes before a start), with the largest overlap."""
    most = overlaps = 0
    deepest = 0
    for spans in spans_by_key.values():
        spans.sort()
        open_ends: list[int] = []
        for start, end in spans:
            open_ends = [e for e in open_ends if e > start]
            if open_ends:
                overlaps += 1
                deepest = max(deepest, min(max(open_ends), end) - start)
            open_ends.append(end)
            most = max(most, len(open_ends))
    return {"max_per_key": most, "overlaps": overlaps, "largest_overlap_ms": deepest / 1000}


def key_overlaps(attempts: Sequence[Attempt]) -> dict[str, Any]:
    """Each key's attempts as run, as run by the ``bench-hold`` tasks, and as dispatched (see
    the module's docstring)."""
    held: dict[str, list[tuple[int, int]]] = defaultdict(list)
    ran: dict[str, list[tuple[int, int]]] = defaultdict(list)
    hold: dict[str, list[tuple[int, int]]] = defaultdict(list)
    unfinished = 0
    for key, dispatched, started, finished, task_type in attempts:
        if finished is None:
            unfinished += 1
        end = FOREVER if finished is None else finished
        held[key].append((dispatched, end))
        span = (dispatched if started is None else started, end)
        ran[key].append(span)
        if task_type == HOLD:
            hold[key].append(span)
    return {
        "keys": len(held),
        "attempts": len(attempts),
        "hold_attempts": sum(len(spans) for spans in hold.values()),
        "unfinished_attempts": unfinished,
        "without_started_at": sum(1 for a in attempts if a[2] is None),
        "run": sweep(ran),
        "hold_run": sweep(hold),
        "dispatched": sweep(held),
    }


def hold_tasks(total: int, keys: int, seconds: float) -> list[Task]:
    return [
        {
            "task_type": HOLD,
            "name": "bench-hold",
            "payload": {"seconds": seconds},
            "concurrency_key": f"key-{index % keys}",
            "max_concurrent_per_key": 1,
        }
        for index in range(total)
    ]


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    result: dict[str, Any] = {
        "agents": sizes.ck_agents,
        "slots_per_agent": sizes.ck_slots,
        "keys": sizes.ck_keys,
        "limit_per_key": 1,
        "batch_size": sizes.ck_batch_size,
        "batch_requests_in_flight": sizes.ck_batch_in_flight,
    }
    history: dict[str, Any] = {}
    for run_name in ("unkeyed", "keyed"):
        async with context.cluster(
            f"concurrency-keys-{run_name}", agents=sizes.ck_agents, slots=sizes.ck_slots
        ) as cluster:
            await measure_batches(cluster, [NOOP] * 200)  # warm-up
            await measure_batches(cluster, keyed_tasks(200, min(sizes.ck_keys, 200)))
            tasks = (
                [NOOP] * sizes.ck_tasks
                if run_name == "unkeyed"
                else keyed_tasks(sizes.ck_tasks, sizes.ck_keys)
            )
            result[run_name] = await measure_batches(cluster, tasks)
            context.log(f"  {run_name}: {result[run_name]['tasks_per_second']} tasks/s")
            if run_name == "keyed":
                holds = hold_tasks(sizes.ck_hold_tasks, sizes.ck_keys, sizes.ck_hold_seconds)
                result["hold"] = await measure_batches(cluster, holds)
                history = key_overlaps(await keyed_attempts(cluster.db))
    unkeyed, keyed = result["unkeyed"], result["keyed"]
    result["ratio"] = round(keyed["tasks_per_second"] / unkeyed["tasks_per_second"], 3)
    result["history"] = history
    context.log(
        f"  ratio {result['ratio']}; runs: most per key {history['run']['max_per_key']},"
        f" overlaps {history['run']['overlaps']}; holding tasks: overlaps"
        f" {history['hold_run']['overlaps']}; dispatched-to-finished stamps: overlaps"
        f" {history['dispatched']['overlaps']}"
    )
    if history["attempts"] < sizes.ck_tasks + sizes.ck_hold_tasks:
        raise ScenarioFailed(f"only {history['attempts']} keyed attempts in the history")
    return result
