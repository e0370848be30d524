"""(b) Dispatch latency: from the submit call returning to the handler starting.

An open-loop generator sends ``POST /api/tasks`` (one ``bench-stamp`` task each) at fixed
instants ``t0 + i / rate``, never waiting for earlier answers, and records ``time.time()``
when each answer arrives; the handler writes ``time.time()`` when it starts. Both clocks are
this machine's. A start can come before the answer reaches the generator (the dispatcher is
woken while the response is still being written): such values are negative and kept.

Phases: the idle rates (10/s, 100/s), then half of the measured one-per-request throughput
(from the throughput scenario of this run; otherwise a short calibration).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from benchmarks.harness import RawHttp, ScenarioFailed, summary_ms
from benchmarks.suite import Cluster, Context
from benchmarks.throughput import measure

STAMP = {"task_type": "bench-stamp", "name": "bench-latency"}
SETTLE_SECONDS = 10.0


async def open_loop(http: httpx.AsyncClient, rate: float, seconds: float) -> dict[str, Any]:
    """Submit at ``rate``/s for ``seconds``; per task: (sent, returned) instants. Requests go
    through ``RawHttp`` (a pool of keep-alive connections), so the generator keeps its
    schedule at hundreds per second."""
    count = max(int(rate * seconds), 1)
    sent: dict[str, tuple[float, float]] = {}
    behind = 0
    errors: list[str] = []
    raw = RawHttp(http.base_url)
    body = json.dumps(STAMP).encode()

    async def submit() -> None:
        before = time.time()
        status, answer = await raw.post("/api/tasks", body)
        returned = time.time()
        if status != 201:
            errors.append(f"{status} {answer[:100]!r}")
            return
        sent[json.loads(answer)["id"]] = (before, returned)

    start = time.monotonic() + 0.05
    try:
        async with asyncio.TaskGroup() as group:
            for index in range(count):
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    behind += 1
                group.create_task(submit())
    finally:
        raw.close()
    if errors:
        raise ScenarioFailed(f"{len(errors)} submits failed, first: {errors[0]}")
    return {"sent": sent, "behind_schedule": behind, "seconds": time.monotonic() - start}


async def phase(cluster: Cluster, rate: float, seconds: float) -> dict[str, Any]:
    run = await open_loop(cluster.http, rate, seconds)
    sent: dict[str, tuple[float, float]] = run["sent"]
    deadline = time.monotonic() + SETTLE_SECONDS
    starts = cluster.ledger.first_starts()
    while any(task_id not in starts for task_id in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        starts = cluster.ledger.first_starts()
    missing = [task_id for task_id in sent if task_id not in starts]
    from_return = [starts[t].at - sent[t][1] for t in sent if t in starts]
    from_send = [starts[t].at - sent[t][0] for t in sent if t in starts]
    request = [sent[t][1] - sent[t][0] for t in sent]
    return {
        "rate_per_second": round(rate, 1),
        "tasks": len(sent),
        "not_started": len(missing),
        "submits_behind_schedule": run["behind_schedule"],
        "achieved_rate_per_second": round(len(sent) / run["seconds"], 1),
        "latency": summary_ms(from_return),
        "negative": sum(1 for value in from_return if value < 0),
        "from_submit_call_start": summary_ms(from_send),
        "submit_request": summary_ms(request),
    }


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    result: dict[str, Any] = {"agents": sizes.lat_agents, "slots_per_agent": sizes.lat_slots}
    async with context.cluster("latency", agents=sizes.lat_agents, slots=sizes.lat_slots) as c:
        await phase(c, 20, 1.0)  # warm-up: connections, code paths
        for rate, seconds in sizes.lat_idle:
            result[f"rate_{rate:g}"] = await phase(c, rate, seconds)
            context.log(f"  {rate:g}/s: p99 {result[f'rate_{rate:g}']['latency'].get('p99_ms')} ms")
        single = context.results.get("throughput", {}).get("single", {})
        throughput = single.get("tasks_per_second")
        source = "throughput scenario, one task per request"
        if not throughput:
            calibration = await measure(c, "single", max(sizes.tp_single_tasks // 3, 50))
            throughput = calibration["tasks_per_second"]
            source = "calibration run in this scenario, one task per request"
        half = throughput / 2
        result["half"] = await phase(c, half, sizes.lat_half_seconds)
        result["half"]["throughput_source"] = source
        context.log(f"  half ({half:.0f}/s): p99 {result['half']['latency'].get('p99_ms')} ms")
    return result
