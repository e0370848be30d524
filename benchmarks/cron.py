"""(c) Cron lateness: handler start minus the tick it was fired for.

One job ``* * * * * *`` (every second, seconds field) runs for a while; then many jobs are
created with the same once-a-day expression naming one second a little ahead, so all their
ticks are due in that same second. The tick of each task comes from the store
(``GET /api/tasks?cron_job_id=…`` / ``task_type=…``: ``cron_tick_at``); the start from the
handler's ledger line. A start before its tick is counted as ``early`` (it must never happen).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from benchmarks.harness import ScenarioFailed, Start, summary_ms
from benchmarks.suite import Cluster, Context

CREATE_IN_FLIGHT = 16


def _job(name: str, expression: str, task_type: str = "bench-stamp") -> dict[str, Any]:
    return {"name": name, "cron_expression": expression, "task_type": task_type}


async def _create_job(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/api/cron-jobs", json=body)
    if response.status_code != 201:
        raise ScenarioFailed(f"create cron job: {response.status_code} {response.text[:200]}")
    job_id: str = response.json()["id"]
    return job_id


async def _tasks(http: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        params = {**filters, "limit": "1000", "offset": str(len(items))}
        response = await http.get("/api/tasks", params=params)
        response.raise_for_status()
        page = response.json()
        items.extend(page["items"])
        if len(items) >= page["total"] or not page["items"]:
            return items


def _lateness(tasks: list[dict[str, Any]], starts: dict[str, Start]) -> dict[str, Any]:
    values = []
    for task in tasks:
        start = starts.get(task["id"])
        tick = task.get("cron_tick_at")
        if start is None or tick is None:
            continue
        values.append(start.at - datetime.fromisoformat(tick).timestamp())
    return {
        "tasks": len(tasks),
        "started": len(values),
        "lateness": summary_ms(values),
        "early": sum(1 for value in values if value < 0),
    }


async def one_job(cluster: Cluster, seconds: float) -> dict[str, Any]:
    http = cluster.http
    job_id = await _create_job(http, _job("bench-every-second", "* * * * * *"))
    await asyncio.sleep(seconds)
    response = await http.post(f"/api/cron-jobs/{job_id}/disable")
    response.raise_for_status()
    await asyncio.sleep(1.5)  # the last ticks' tasks start
    tasks = [t for t in await _tasks(http, cron_job_id=job_id) if t.get("cron_tick_at")]
    return {"seconds": seconds, **_lateness(tasks, cluster.ledger.first_starts())}


async def burst(cluster: Cluster, jobs: int) -> dict[str, Any]:
    """``jobs`` jobs whose ticks are all due in the same second."""
    http = cluster.http
    # Creating jobs takes time on a loaded machine: aim a generous margin ahead.
    lead = 8.0 + jobs * 0.035
    tick = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    expression = f"{tick.second} {tick.minute} {tick.hour} * * *"
    limit = asyncio.Semaphore(CREATE_IN_FLIGHT)
    created_by = time.monotonic()

    async def create(index: int) -> None:
        async with limit:
            await _create_job(http, _job(f"bench-burst-{index}", expression, "bench-stamp"))

    async with asyncio.TaskGroup() as group:
        for index in range(jobs):
            group.create_task(create(index))
    created_at = datetime.now(UTC)
    if created_at > tick - timedelta(seconds=2.5):  # within the default lookahead + margin
        raise ScenarioFailed(
            f"creating {jobs} cron jobs took {time.monotonic() - created_by:.1f} s: "
            "too close to their tick to measure lateness"
        )
    await asyncio.sleep(max((tick - datetime.now(UTC)).total_seconds(), 0) + 2.0)
    deadline = time.monotonic() + 30
    while True:
        tasks = [t for t in await _tasks(http, q="bench-burst") if t.get("cron_tick_at")]
        starts = cluster.ledger.first_starts()
        started = sum(1 for task in tasks if task["id"] in starts)
        if started >= jobs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    result = _lateness(tasks, starts)
    result["jobs"] = jobs
    result["create_seconds"] = round(time.monotonic() - created_by, 1)
    return result


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    result: dict[str, Any] = {"agents": sizes.cron_agents, "slots_per_agent": sizes.cron_slots}
    async with context.cluster("cron", agents=sizes.cron_agents, slots=sizes.cron_slots) as cluster:
        result["one_job"] = await one_job(cluster, sizes.cron_one_seconds)
        context.log(f"  one job: {result['one_job']['lateness']}")
        result["burst"] = await burst(cluster, sizes.cron_burst_jobs)
        context.log(f"  burst: {result['burst']['lateness']}")
    return result
