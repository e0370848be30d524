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

Run by ``scripts/chaos --scenario nodes [--quick|--full]`` and, in its quick form, by
``tests/chaos/test_chaos.py``. See docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from hetuflow.config import DatabaseConfig
from hetuflow.models import CronTick, TaskFilter, TickOutcome
from hetuflow.store import create_store
from hetuflow.store.base import Store

from . import ledger as ledger_module
from .ledger import Entry, Fault, Report, percentiles
from .run import HERE, Run, Scenario, _drain, _load

if TYPE_CHECKING:
    from tests.acceptance.processes import Cluster, ServerProcess, cluster
else:
    from acceptance.processes import Cluster, ServerProcess, cluster

RECONNECT_BOUND_SECONDS = 30.0
MISFIRE_POLICIES = ("skip", "run_once", "catch_up")
SECOND = timedelta(seconds=1)


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


@dataclass(frozen=True)
class NodeKill:
    node: str
    url: str
    at: float
    back_after_seconds: float
    """From the SIGKILL to the restarted node answering ``/readyz``."""


@dataclass
class NodesReport:
    kills: list[NodeKill] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)
    not_reconnected: list[str] = field(default_factory=list)
    running_at_kills: int = 0
    carried_over: int = 0
    cron: dict[str, dict[str, int]] = field(default_factory=dict)
    cron_violations: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        slow = [x for x in self.reconnects if x > RECONNECT_BOUND_SECONDS]
        return [
            *(f"not reconnected: {x}" for x in self.not_reconnected),
            *(f"reconnected after {x:.1f} s" for x in slow),
            *(f"cron: {x}" for x in self.cron_violations),
        ]

    def summary(self) -> dict[str, Any]:
        backs = [kill.back_after_seconds for kill in self.kills]
        return {
            "node_kills": len(self.kills),
            "node_restart_seconds": percentiles(backs),
            "agent_reconnect_seconds": percentiles(self.reconnects),
            "not_reconnected": len(self.not_reconnected),
            "attempts_running_at_kills": self.running_at_kills,
            "attempts_carried_over": self.carried_over,
            "cron": self.cron,
            "cron_violations": len(self.cron_violations),
        }


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
    registrations = {name: _registrations(log) for name, log in agent_logs.items()}
    faults = _measure_reconnects(report, registrations)
    store = create_store(database)
    await store.open()
    try:
        names = {agent.id: agent.name for agent in await store.list_agents()}
        cron_tasks = await _check_cron(store, jobs, report)
        submitted = {**run.submitted, **{str(task_id): task_id for task_id in cron_tasks}}
        ledger_report = await ledger_module.check(store, submitted, entries, faults, names)
        await _carried_over(store, report, faults, entries)
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


# --- reconnects --------------------------------------------------------------------------

REGISTERED = re.compile(r"^registered as \S+ \(\S+\) on (\S+),")


def _registrations(log: Path) -> list[tuple[float, str]]:
    """(unix time, server URL) of each registration in an agent's JSON log."""
    found: list[tuple[float, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            match = REGISTERED.match(record["message"])
            if match:
                found.append((_unix(record["time"]), match.group(1)))
    return found


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _measure_reconnects(
    report: NodesReport, registrations: dict[str, list[tuple[float, str]]]
) -> list[Fault]:
    """For each kill, the agents registered on that node then, and when each registered
    again; a ``node kill`` fault for each (it explains their released attempts)."""
    faults: list[Fault] = []
    for kill in report.kills:
        for agent, events in registrations.items():
            before = [url for at, url in events if at < kill.at]
            if not before or before[-1] != kill.url:
                continue
            faults.append(Fault("node kill", agent, kill.at))
            after = [at for at, _ in events if at >= kill.at]
            if after:
                report.reconnects.append(after[0] - kill.at)
            else:
                report.not_reconnected.append(f"{agent} after {kill.node} died at {kill.at:.3f}")
    return faults


async def _carried_over(
    store: Store, report: NodesReport, faults: list[Fault], entries: list[Entry]
) -> None:
    """Attempts running on an agent when its node died; those that became the result."""
    for fault in faults:
        running = [
            entry
            for entry in entries
            if entry.event == "start" and entry.agent == fault.agent and entry.at < fault.at
        ]
        ended = {(e.task_id, e.attempt) for e in entries if e.event == "end" and e.at <= fault.at}
        for entry in running:
            if (entry.task_id, entry.attempt) in ended:
                continue
            report.running_at_kills += 1
            task = await store.get_task(UUID(entry.task_id))
            if task is not None and task.attempts == entry.attempt:
                report.carried_over += 1


# --- cron ----------------------------------------------------------------------------------

COVERS = (
    re.compile(r"the oldest (\d+) skipped"),
    re.compile(r"^missed (\d+)\+? ticks?"),
    re.compile(r"^ran once now for (\d+)\+? ticks?"),
)


def covers(tick: CronTick) -> int:
    """How many ticks of the schedule this recorded tick stands for (a misfire records a run
    of missed ticks as one, at the first of them)."""
    for pattern in COVERS:
        match = pattern.search(tick.reason or "")
        if match:
            return int(match.group(1))
    return 1


async def _check_cron(store: Store, jobs: dict[str, UUID], report: NodesReport) -> list[UUID]:
    """Each job's ticks: none twice, none missing, each fired one with its task."""
    tasks: list[UUID] = []
    for name, job_id in jobs.items():
        ticks = sorted(await store.list_cron_ticks(job_id, limit=100_000), key=lambda t: t.tick_at)
        instants = [tick.tick_at for tick in ticks]
        counts = {
            "ticks": len(ticks),
            "fired": sum(t.outcome is TickOutcome.FIRED for t in ticks),
            "skipped": sum(t.outcome is TickOutcome.SKIPPED for t in ticks),
            "late": sum(t.reason is not None and t.outcome is TickOutcome.FIRED for t in ticks),
            "missed_covered": sum(covers(t) - 1 for t in ticks),
        }
        report.cron[name] = counts
        if len(set(instants)) != len(instants):
            report.cron_violations.append(f"{name}: a tick recorded twice")
        for tick, following in itertools.pairwise(ticks):
            if following.tick_at - tick.tick_at != covers(tick) * SECOND:
                report.cron_violations.append(
                    f"{name}: {tick.tick_at.isoformat()} ({tick.outcome}, {tick.reason!r}) "
                    f"then {following.tick_at.isoformat()}: ticks missing"
                )
        for tick in ticks:
            if tick.outcome is not TickOutcome.FIRED:
                continue
            task = await store.get_task(tick.task_id) if tick.task_id else None
            if task is None or task.cron_tick_at != tick.tick_at:
                report.cron_violations.append(
                    f"{name}: tick {tick.tick_at.isoformat()} fired without its task"
                )
                continue
            tasks.append(task.id)
        made = await store.list_tasks(TaskFilter(cron_job_id=job_id), limit=1)
        if made.total != counts["fired"]:
            report.cron_violations.append(
                f"{name}: {made.total} tasks for {counts['fired']} fired ticks"
            )
    return tasks
