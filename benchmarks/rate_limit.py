"""(k) A rate limit across server nodes: the dispatched rate, and the most in any window
(PostgreSQL only).

``rl_nodes`` server processes on one fresh PostgreSQL database (``benchmarks.scaleout.nodes``:
agent ``i`` connected to node ``i mod rl_nodes``; ``rl_agents`` agents of ``rl_slots`` slots,
far more than the limit keeps busy). One rate limit (``POST /api/rate-limits``: ``rl_limit``
units per ``rl_per_seconds``), then enough no-op tasks naming it (one unit each) for
``rl_seconds`` plus two windows, in ``POST /api/tasks/batch`` requests sent round-robin to the
nodes, one at a time, as fast as they are answered. Every node's dispatcher claims them as the
window allows.

The numbers come from the attempt history in the database: every attempt's ``dispatched_at``
(the claim's instant, which is also the instant its spend is recorded at). With ``t0`` the
first dispatch:

- ``max_in_any_window``: the most dispatches in any half-open window ``[t, t + per_seconds)``
  over the whole run (every window that starts at a dispatch: the largest of all windows);
  the target is ``<= rl_limit``;
- ``rate_per_second``: the dispatches before ``t1`` divided by ``t1 - t0``, where ``t1`` is the
  first dispatch at or after ``t0 + rl_seconds``. A sliding-window limit dispatches in bursts
  (a window's units free together, one window after they were spent); measuring from the start
  of a burst to the start of the one after ``rl_seconds`` counts whole periods, each with the
  delay between a unit freeing and its next dispatch (the dispatcher's timer, the claim),
  which is what slows the rate below the limit. The target is within 2 % of ``rl_limit /
  rl_per_seconds``;
- ``per_window``: the dispatches in each window ``[t0 + k * per_seconds, t0 + (k + 1) *
  per_seconds)``, and ``by_node`` the dispatches whose agent is connected to each node.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

from benchmarks.harness import CpuMeter, ScenarioFailed, machine_load
from benchmarks.scaleout import Nodes, StatsPoller, _spread_batches, nodes
from benchmarks.suite import Context
from benchmarks.throughput import NOOP, _wait_done

LIMIT_NAME = "bench-rate"

_HISTORY = """
SELECT (extract(epoch FROM a.dispatched_at) * 1000000)::bigint AS dispatched_us, g.name AS agent
FROM attempts AS a
JOIN task_rate_limits AS l ON l.task_id = a.task_id AND l.name = $1
LEFT JOIN agents AS g ON g.id = a.agent_id
ORDER BY a.dispatched_at"""


async def _create_limit(http: httpx.AsyncClient, limit: int, per_seconds: float) -> None:
    body = {"name": LIMIT_NAME, "limit": limit, "per_seconds": per_seconds}
    response = await http.post("/api/rate-limits", json=body)
    if response.status_code != 201:
        raise ScenarioFailed(f"create rate limit: {response.status_code} {response.text[:200]}")


async def _submit(clients: Sequence[httpx.AsyncClient], total: int, size: int) -> None:
    """``total`` rate-limited no-op tasks, ``size`` per batch, round-robin over ``clients``."""
    task = {**NOOP, "rate_limits": [{"name": LIMIT_NAME, "units": 1}]}
    sent = index = 0
    while sent < total:
        count = min(size, total - sent)
        response = await clients[index % len(clients)].post(
            "/api/tasks/batch", json={"tasks": [task] * count}
        )
        if response.status_code != 201:
            raise ScenarioFailed(f"batch create: {response.status_code} {response.text[:200]}")
        sent += count
        index += 1


def most_in_window(times: Sequence[int], window: int) -> int:
    """The most of the sorted ``times`` in any half-open window ``[t, t + window)``."""
    most = 0
    low = 0
    for high, at in enumerate(times):
        while times[low] <= at - window:
            low += 1
        most = max(most, high - low + 1)
    return most


def rate_over(times: Sequence[int], seconds: float) -> tuple[float, float] | None:
    """(dispatches per second from the first dispatch to the first at or after ``seconds``
    later, that span in seconds); None if no dispatch comes that late."""
    t0 = times[0]
    end = bisect.bisect_left(times, t0 + round(seconds * 1_000_000))
    if end >= len(times):
        return None
    span = (times[end] - t0) / 1_000_000
    return end / span, span


def per_window(times: Sequence[int], window: int) -> list[int]:
    counts: Counter[int] = Counter((at - times[0]) // window for at in times)
    return [counts.get(k, 0) for k in range(max(counts) + 1)]


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    if context.db_kind != "postgres":
        return {"skipped": "several server nodes need PostgreSQL (--db postgres)"}
    limit, per_seconds = sizes.rl_limit, sizes.rl_per_seconds
    total = math.ceil(limit * (sizes.rl_seconds / per_seconds + 2))
    result: dict[str, Any] = {
        "nodes": sizes.rl_nodes,
        "agents": sizes.rl_agents,
        "slots_per_agent": sizes.rl_slots,
        "limit": limit,
        "per_seconds": per_seconds,
        "target_per_second": limit / per_seconds,
        "measured_seconds": sizes.rl_seconds,
        "tasks": total,
    }
    async with nodes(
        context,
        sizes.rl_nodes,
        agents_count=sizes.rl_agents,
        slots=sizes.rl_slots,
        label="rate-limit",
    ) as cluster:
        warm = 200 * sizes.rl_nodes
        await _spread_batches(cluster.http, warm, 100, sizes.rl_nodes)  # warm every node
        await _wait_done(cluster.http[0], warm, timeout_seconds=120)
        await _create_limit(cluster.http[0], limit, per_seconds)
        result.update(await _measure(cluster, total, warm, sizes.rl_seconds + 60))
        rows = await cluster.listener.fetch(_HISTORY, LIMIT_NAME)
    times = [row["dispatched_us"] for row in rows]
    if len(times) != total:
        raise ScenarioFailed(f"{len(times)} of {total} rate-limited tasks dispatched")
    window = round(per_seconds * 1_000_000)
    measured = rate_over(times, sizes.rl_seconds)
    if measured is None:
        raise ScenarioFailed(f"dispatches ended before {sizes.rl_seconds:g} s")
    rate, span = measured
    by_node: Counter[str] = Counter()
    for row in rows:
        agent = row["agent"] or "?"
        node = int(agent.rsplit("-", 1)[1]) % sizes.rl_nodes if agent != "?" else -1
        by_node[f"node_{node}"] += 1
    result.update(
        {
            "max_in_any_window": (most := most_in_window(times, window)),
            "window_excess": most - limit,
            "rate_per_second": round(rate, 2),
            "rate_error_percent": round(
                100 * (rate - limit / per_seconds) / (limit / per_seconds), 2
            ),
            "rate_span_seconds": round(span, 4),
            "dispatch_seconds": round((times[-1] - times[0]) / 1_000_000, 3),
            "per_window": per_window(times, window),
            "by_node": dict(sorted(by_node.items())),
        }
    )
    context.log(
        f"  {result['rate_per_second']}/s over {span:.3f} s ({result['rate_error_percent']} %),"
        f" most in a window {result['max_in_any_window']} (limit {limit})"
    )
    return result


async def _measure(cluster: Nodes, total: int, base: int, limit_seconds: float) -> dict[str, Any]:
    meter = CpuMeter({s.process.name: s.process for s in cluster.servers})
    load = machine_load()
    meter.start()
    started = time.monotonic()
    async with StatsPoller(cluster.http[0]) as poller:
        await _submit(cluster.http, total, 500)
        submitted = time.monotonic()
        finished = await poller.until_succeeded(base + total, limit_seconds)
    cpu = meter.stop()
    return {
        "submit_seconds": round(submitted - started, 3),
        "seconds": round(finished - started, 3),
        "load_average_1m_before": round(load, 2),
        "machine_busy_percent": cpu.pop("machine", None),
        "cpu_percent": cpu,
    }
