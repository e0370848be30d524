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
    deadline = time.monotonic() + timeout_seconds
    online = 0
    while time.monotonic() < deadline:
        online = int((await stats(cluster.http))["agents_online"])
        if online >= target:
            return online
        await asyncio.sleep(0.5)
    return online


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
                    status_now = _fleet_status(cluster, fleets)
                    raise ScenarioFailed(f"{online} of {target} agents online; fleet {status_now}")
                meter = CpuMeter({"server": server})
                meter.start()
                await asyncio.sleep(sizes.agents_hold_seconds)
                cpu = meter.stop()["server"]
                online_after = int((await stats(cluster.http))["agents_online"])
                rss = server.stat().rss_bytes
                step = {
                    "agents": target,
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
    last = result["steps"][-1]
    result["held"] = last["online_after_hold"]
    result["kib_per_agent"] = last["kib_per_agent"]
    result["hold_cpu_percent"] = last["hold_cpu_percent"]
    result["rss_mib"] = last["rss_mib"]
    return result
