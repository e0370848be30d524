"""The chaos suite's server-nodes scenario: three ``hetuflow-server`` nodes on one PostgreSQL
database, agents given all three URLs, the suite's steady load and per-second cron jobs, and a
random node SIGKILLed (then restarted on its address) every ``kill_interval_seconds`` or so.

At the end the ledger is held against the store as in the agents scenario (``ledger.check``,
cron tasks included), and besides:

- **reconnects**: every agent connected to a node when it died registered again (on another
  node) within ``RECONNECT_BOUND_SECONDS``; measured from the kill to the ``registered as … on
  URL`` line of the agent's own log (JSON, millisecond times);
- **carried over**: the attempts those agents were running at the kill, and how many of them
  went on to be the task's result (the rest were released and ran again, counted by the ledger);
- **cron**: for each job, no tick recorded twice, each fired tick's task exists with that
  tick, and no tick missing between the first and the last: consecutive recorded ticks are one
  second apart, or the earlier one says (as its misfire policy records a gap) how many ticks it
  stands for.

The checks are in ``nodes_checks.py``. Run by ``scripts/chaos --scenario nodes [--quick|--full]``
and, in its quick form, by
``tests/chaos/test_chaos.py``. See docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from hetuflow.config import DatabaseConfig
from hetuflow.store import create_store

from . import ledger as ledger_module
from .ledger import Report
from .nodes_checks import (
    NodeKill,
    NodesReport,
    carried_over,
    check_cron,
    measure_reconnects,
    registrations,
)
from .run import HERE, Run, Scenario, _drain, _load

if TYPE_CHECKING:
    from tests.acceptance.processes import Cluster, ServerProcess, cluster
else:
    from acceptance.processes import Cluster, ServerProcess, cluster

MISFIRE_POLICIES = ("skip", "run_once", "catch_up")


@dataclass(frozen=True)
class NodesScenario:
    nodes: int = 3
    agents: int = 4
    slots: int = 2
    seconds: float = 30.0
    kill_interval_seconds: float = 5.0
    """Mean time between two node kills (each 0.5 to 1.5 times this)."""
    cron_jobs: int = 3
    """Per-second jobs, with misfire policies skip, run_once and catch_up in turn."""
    seed: int = 0


QUICK_NODES = NodesScenario()
FULL_NODES = NodesScenario(agents=9, seconds=300.0, kill_interval_seconds=20.0)


class LiveNodes(httpx.AsyncBaseTransport):
    """Sends each request to a random live node, so the load and the checks ride out kills."""

    def __init__(self, ports: list[int], rng: random.Random) -> None:
        self.live = set(ports)
        self._rng = rng
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        port = self._rng.choice(sorted(self.live))
        request.url = request.url.copy_with(port=port)
        request.headers["Host"] = f"127.0.0.1:{port}"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Node:
    name: str
    process: ServerProcess
    incarnation: int = 1

    @property
    def url(self) -> str:
        return self.process.ws_url


@dataclass
class NodesRun:
    scenario: NodesScenario
    cluster: Cluster
    nodes: list[Node]
    transport: LiveNodes
    rng: random.Random
    report: NodesReport


async def _node_faults(run: NodesRun, until: float) -> None:
    """Kill a random node every ``kill_interval_seconds`` or so (kill to kill, the restart
    included), and restart it on its port at once."""
    rng = run.rng
    next_at = time.monotonic() + rng.uniform(0.5, 1.5) * run.scenario.kill_interval_seconds
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        node = rng.choice(run.nodes)
        run.transport.live.discard(node.process.port)
        at = time.time()
        await node.process.kill()
        node.incarnation += 1
        node.process = await run.cluster.server(
            f"{node.name}.{node.incarnation}",
            migrate=False,
            node_id=f"{node.name}.{node.incarnation}",
            port=node.process.port,
        )
        run.transport.live.add(node.process.port)
        run.report.kills.append(NodeKill(node.name, node.url, at, time.time() - at))
        next_at += rng.uniform(0.5, 1.5) * run.scenario.kill_interval_seconds
        next_at = max(next_at, time.monotonic() + 1.0)


async def _create_cron_jobs(http: httpx.AsyncClient, count: int) -> dict[str, UUID]:
    jobs: dict[str, UUID] = {}
    for index in range(count):
        policy = MISFIRE_POLICIES[index % len(MISFIRE_POLICIES)]
        body = {
            "name": f"chaos-cron-{index}-{policy}",
            "cron_expression": "* * * * * *",
            "task_type": "chaos",
            "payload": {"seconds": 0.05},
            "misfire_policy": policy,
            "catch_up_limit": 5,
        }
        response = await http.post("/api/cron-jobs", json=body)
        assert response.status_code == 201, response.text
        jobs[str(body["name"])] = UUID(response.json()["id"])
    return jobs


async def _disable(http: httpx.AsyncClient, job_id: UUID) -> None:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await http.post(f"/api/cron-jobs/{job_id}/disable")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def run_nodes(
    scenario: NodesScenario, database: DatabaseConfig, workdir: Path
) -> tuple[Report, NodesReport, dict[str, Any]]:
    """One run on ``database`` (PostgreSQL, migrated, empty)."""
    assert database.kind == "postgres", "several nodes need PostgreSQL"
    rng = random.Random(scenario.seed or None)
    ledger = workdir / "chaos-ledger.txt"
    env = {
        "PYTHONPATH": str(HERE),
        "HETUFLOW_CHAOS_LEDGER": str(ledger),
        "HETUFLOW_AGENT_PASS_ENV": "HETUFLOW_ACK_AGENT",
        "HETUFLOW_AGENT_LOG_FORMAT": "json",  # millisecond times for the reconnects
        "HETUFLOW_SCHEDULER__MAX_CONCURRENT_TASKS": "10000",
    }
    started = time.monotonic()
    report = NodesReport()
    async with cluster(database, workdir, env) as c:
        first = await c.server("node-1", node_id="node-1.1")
        others = await asyncio.gather(
            *(
                c.server(f"node-{n}", migrate=False, node_id=f"node-{n}.1")
                for n in range(2, scenario.nodes + 1)
            )
        )
        nodes = [Node(f"node-{n + 1}", process) for n, process in enumerate([first, *others])]
        base = Scenario(agents=scenario.agents, slots=scenario.slots, seconds=scenario.seconds)
        run = Run(base, c, first, ledger, rng)
        for index in range(scenario.agents):
            name = f"chaos-{index + 1}"
            turn = index % len(nodes)
            order = tuple(node.process for node in [*nodes[turn:], *nodes[:turn]])
            run.agents[name] = await c.agent(
                name,
                servers=order,
                task_types="chaos,shell",
                slots=scenario.slots,
                modules=("chaos_handlers",),
            )
        transport = LiveNodes([node.process.port for node in nodes], rng)
        async with httpx.AsyncClient(
            base_url=first.http_url, timeout=30, transport=transport
        ) as http:
            jobs = await _create_cron_jobs(http, scenario.cron_jobs)
            until = time.monotonic() + scenario.seconds
            faults_run = NodesRun(scenario, c, nodes, transport, rng, report)
            async with asyncio.TaskGroup() as group:
                group.create_task(_load(run, http, until))
                group.create_task(_node_faults(faults_run, until))
            for job_id in jobs.values():
                await _disable(http, job_id)
            await _drain(http, timeout_seconds=90)
        for node in nodes:
            if node.process.process.returncode is not None:
                raise AssertionError(f"{node.name} died:\n{node.process.output()[-4000:]}")
        agent_logs = {name: agent.log for name, agent in run.agents.items()}
    entries = ledger_module.read(ledger)
    registered = {name: registrations(log) for name, log in agent_logs.items()}
    faults = measure_reconnects(report, registered)
    store = create_store(database)
    await store.open()
    try:
        names = {agent.id: agent.name for agent in await store.list_agents()}
        cron_tasks = await check_cron(store, jobs, report)
        submitted = {**run.submitted, **{str(task_id): task_id for task_id in cron_tasks}}
        ledger_report = await ledger_module.check(store, submitted, entries, faults, names)
        await carried_over(store, report, faults, entries)
    finally:
        await store.close()
    figures = {
        "scenario": "nodes",
        "database": database.kind,
        "nodes": scenario.nodes,
        "agents": scenario.agents,
        "slots_per_agent": scenario.slots,
        "cron_jobs": scenario.cron_jobs,
        "seconds": round(time.monotonic() - started, 1),
        "load_tasks": len(run.submitted),
        "cron_tasks": len(cron_tasks),
        "creates_retried": run.refused,
    }
    return ledger_report, report, figures
