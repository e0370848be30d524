"""(d) Idle agents: how many connected, heartbeating agents one server process holds, and its
memory per agent.

Simulated agents (``benchmarks.simagents``: many WebSockets per process, the real protocol)
are added in steps. At each step the suite waits until the store counts them all online, holds
for a few heartbeat intervals (so heartbeats, pings and the reaper all run), checks they are
still online, and reads the server's RSS and CPU from /proc. Memory per agent is the RSS growth
over the empty, started server divided by the agents connected.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.harness import CpuMeter, Process, ScenarioFailed, spawn, stats, stop_all
from benchmarks.suite import Cluster, Context

STALL_SECONDS = 30.0
KIB = 1024
MIB = 1024 * 1024


def _fleet_status(cluster: Cluster, fleets: list[tuple[Process, str]]) -> dict[str, int]:
    total = {"registered": 0, "failed": 0, "dropped": 0}
    for _, path in fleets:
        try:
            with open(path) as source:
                status = json.load(source)
        except (OSError, ValueError):
            continue
        for key in total:
            total[key] += int(status.get(key) or 0)
    return total


async def _wait_online(cluster: Cluster, target: int, timeout_seconds: float) -> int:
    """Until ``target`` agents are online, or no progress for ``STALL_SECONDS``; the most
    seen online."""
    deadline = time.monotonic() + timeout_seconds
    best, progress_at = 0, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - progress_at < STALL_SECONDS:
        online = int((await stats(cluster.http))["agents_online"])
        if online > best:
            best, progress_at = online, time.monotonic()
        if online >= target:
            break
        await asyncio.sleep(0.5)
    return best


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    env = {"HETUFLOW_SCHEDULER__HEARTBEAT_INTERVAL_SECONDS": str(sizes.agents_heartbeat_seconds)}
    result: dict[str, Any] = {
        "heartbeat_interval_seconds": sizes.agents_heartbeat_seconds,
        "agents_per_simulator_process": sizes.agents_per_process,
        "steps": [],
    }
    async with context.cluster("agents", env=env) as cluster:
        server = cluster.server.process
        await asyncio.sleep(1.0)
        await stats(cluster.http)  # the first request's allocations are not the agents'
        baseline = server.stat().rss_bytes
        result["baseline_rss_mib"] = round(baseline / MIB, 1)
        fleets: list[tuple[Process, str]] = []
        connected = 0
        try:
            for target in sizes.agents_steps:
                started = time.monotonic()
                while connected < target:
                    count = min(sizes.agents_per_process, target - connected)
                    index = len(fleets)
                    status = str(context.workdir / f"agents-sim-{index}.json")
                    argv = [sys.executable, "-m", "benchmarks.simagents", "--url"]
                    argv += [cluster.server.ws_url, "--count", str(count)]
                    argv += ["--prefix", f"sim-{index}", "--status", status]
                    fleets.append((spawn(f"agents-sim-{index}", argv, context.workdir), status))
                    connected += count
                online = await _wait_online(cluster, target, timeout_seconds=60 + target / 50)
                connect_seconds = time.monotonic() - started
                if online < target:
                    step = {
                        "agents": target,
                        "reached": False,
                        "most_online": online,
                        "rss_mib": round(server.stat().rss_bytes / MIB, 1),
                        "fleet": _fleet_status(cluster, fleets),
                    }
                    result["steps"].append(step)
                    context.log(f"  {step}")
                    break
                meter = CpuMeter({"server": server})
                meter.start()
                await asyncio.sleep(sizes.agents_hold_seconds)
                cpu = meter.stop()["server"]
                online_after = int((await stats(cluster.http))["agents_online"])
                rss = server.stat().rss_bytes
                step = {
                    "agents": target,
                    "reached": True,
                    "connect_seconds": round(connect_seconds, 1),
                    "online_after_hold": online_after,
                    "rss_mib": round(rss / MIB, 1),
                    "kib_per_agent": round((rss - baseline) / target / KIB, 2),
                    "hold_cpu_percent": cpu,
                    "fleet": _fleet_status(cluster, fleets),
                }
                result["steps"].append(step)
                context.log(f"  {step}")
        finally:
            await stop_all([process for process, _ in fleets])
    held = [step for step in result["steps"] if step["reached"]]
    if not held:
        raise ScenarioFailed(f"not even {sizes.agents_steps[0]} agents held: {result['steps']}")
    last = held[-1]
    result["held"] = last["online_after_hold"]
    result["most_online"] = max(
        [step.get("most_online", 0) for step in result["steps"]] + [last["online_after_hold"]]
    )
    result["kib_per_agent"] = last["kib_per_agent"]
    result["hold_cpu_percent"] = last["hold_cpu_percent"]
    result["rss_mib"] = last["rss_mib"]
    return result
