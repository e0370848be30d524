"""(e) Recovery: from killing the agent that runs a task to that task starting on another one.

Each round submits one ``bench-hold`` task (it stamps the ledger, then sleeps), waits for its
start, and then either SIGKILLs that agent's process (``clean``: the kernel closes its socket,
the server sees the disconnect) or SIGSTOPs it (``silent``: the socket stays open, only the
missing heartbeats tell). Recovery = the next start of the task on another agent minus the
instant of the signal. A replacement agent is started after each round.

At the end every task must have succeeded (else ``lost``), with exactly one start per attempt
and one re-dispatch per kill (else ``duplicated``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

from benchmarks.harness import Process, ScenarioFailed, Start, summary_ms, wait_agents_online
from benchmarks.suite import Cluster, Context

START_TIMEOUT_SECONDS = 30.0


async def _start_of(
    cluster: Cluster, task_id: str, other_than: str | None, timeout_seconds: float
) -> Start:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        cluster.ledger.read()
        for start in cluster.ledger.starts:
            if start.task_id == task_id and start.agent != other_than:
                return start
        await asyncio.sleep(0.005)
    raise ScenarioFailed(f"task {task_id} did not start (other than on {other_than}) in time")


async def _round(cluster: Cluster, silent: bool, hold_seconds: float, name: str) -> dict[str, Any]:
    response = await cluster.http.post(
        "/api/tasks",
        json={
            "task_type": "bench-hold",
            "name": "bench-recovery",
            "payload": {"seconds": hold_seconds},
        },
    )
    if response.status_code != 201:
        raise ScenarioFailed(f"create: {response.status_code} {response.text[:200]}")
    task_id: str = response.json()["id"]
    first = await _start_of(cluster, task_id, None, START_TIMEOUT_SECONDS)
    victim: Process = next(a for a in cluster.agents if a.name == first.agent)
    signalled = time.time()
    victim.signal(signal.SIGSTOP if silent else signal.SIGKILL)
    again = await _start_of(cluster, task_id, first.agent, START_TIMEOUT_SECONDS)
    if silent:
        victim.signal(signal.SIGKILL)
    await victim.wait(10)
    cluster.agents.remove(victim)
    cluster.add_agent(name)
    return {"task_id": task_id, "seconds": again.at - signalled}


async def _audit(cluster: Cluster, task_ids: list[str], kills: int) -> dict[str, Any]:
    """Wait for every task to finish; count lost and duplicated."""
    deadline = time.monotonic() + 60
    statuses: dict[str, str] = {}
    attempts: dict[str, int] = {}
    while time.monotonic() < deadline:
        for task_id in task_ids:
            if statuses.get(task_id) in ("succeeded", "failed", "timed_out", "cancelled"):
                continue
            body = (await cluster.http.get(f"/api/tasks/{task_id}")).json()
            statuses[task_id], attempts[task_id] = body["status"], body["attempts"]
        if all(statuses.get(t) == "succeeded" for t in task_ids):
            break
        await asyncio.sleep(0.2)
    cluster.ledger.read()
    per_attempt = Counter(
        (s.task_id, s.attempt) for s in cluster.ledger.starts if s.task_id in set(task_ids)
    )
    starts_per_task = Counter(s.task_id for s in cluster.ledger.starts if s.task_id in task_ids)
    duplicated = {t for (t, _), n in per_attempt.items() if n > 1}
    duplicated |= {t for t in task_ids if starts_per_task[t] > 2 or attempts.get(t, 0) > 2}
    return {
        "tasks": len(task_ids),
        "kills": kills,
        "lost": sum(1 for t in task_ids if statuses.get(t) != "succeeded"),
        "duplicated": len(duplicated),
        "statuses": dict(Counter(statuses.values())),
        "attempts_per_task": dict(Counter(attempts.values())),
    }


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    env = {
        "HETUFLOW_SCHEDULER__HEARTBEAT_INTERVAL_SECONDS": str(sizes.rec_heartbeat_seconds),
        "HETUFLOW_SCHEDULER__HEARTBEAT_MISSES": str(sizes.rec_heartbeat_misses),
    }
    result: dict[str, Any] = {
        "agents": sizes.rec_agents,
        "config": {
            "heartbeat_interval_seconds": sizes.rec_heartbeat_seconds,
            "heartbeat_misses": sizes.rec_heartbeat_misses,
            "reconnect_grace_seconds": 1.0,
            "task_hold_seconds": sizes.rec_hold_seconds,
        },
    }
    task_ids: list[str] = []
    async with context.cluster("recovery", agents=sizes.rec_agents, slots=2, env=env) as cluster:
        serial = 0
        for kind, kills in (("clean", sizes.rec_clean_kills), ("silent", sizes.rec_silent_kills)):
            seconds = []
            for _ in range(kills):
                serial += 1
                await wait_agents_online(cluster.http, sizes.rec_agents)
                outcome = await _round(
                    cluster, kind == "silent", sizes.rec_hold_seconds, f"recovery-agent-r{serial}"
                )
                task_ids.append(outcome["task_id"])
                seconds.append(outcome["seconds"])
            result[kind] = {"kills": kills, "recovery": summary_ms(seconds)}
            context.log(f"  {kind}: {result[kind]['recovery']}")
        result.update(await _audit(cluster, task_ids, serial))
    return result
