"""The chaos suite: real agents (and PostgreSQL backends) killed, paused and terminated at
random under a steady load, then the ledger held against the store (``ledger.check``).

Run by ``scripts/chaos [--quick|--full]`` (``python -m chaos.run`` from ``tests/``) and, in
its quick form, by ``tests/chaos/test_chaos.py`` in the normal suite. See docs/guarantees.md.
``--scenario nodes`` runs ``nodes.py`` (three server nodes), ``--scenario network`` runs
``network.py`` (agents behind a link cut and slowed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import httpx

from hetuflow.config import DatabaseConfig
from hetuflow.store import create_store
from hetuflow.store.migrate import migrate_up

from . import ledger as ledger_module
from .ledger import Fault, Report

if TYPE_CHECKING:  # mypy names the test tree from the root (``-p tests``)
    from tests.acceptance.processes import Cluster, Process, ServerProcess, cluster
else:  # at run time ``tests/`` is on sys.path (pytest's rootdir conftest, scripts/chaos)
    from acceptance.processes import Cluster, Process, ServerProcess, cluster

HERE = Path(__file__).parent
ACTIVE = ("pending", "dispatched", "running", "cancelling")


@dataclass(frozen=True)
class Scenario:
    agents: int = 6
    slots: int = 2
    faults: int = 30
    """SIGKILLs plus SIGSTOP/SIGCONT pauses, spread over ``seconds``."""
    seconds: float = 40.0
    kill_share: float = 0.5
    long_share: float = 0.25
    terminate_backends: bool = False
    """PostgreSQL only: ``pg_terminate_backend`` on random backends of the run's database."""
    restart_postgres: tuple[str, ...] = ()
    """``pg_ctlcluster`` restart modes (``fast``, ``immediate``) run near the end: the whole
    cluster restarts, so only ``--full`` on a machine of its own asks for it."""
    seed: int = 0


@dataclass
class Run:
    scenario: Scenario
    cluster: Cluster
    server: ServerProcess
    ledger: Path
    rng: random.Random
    agents: dict[str, Process] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    submitted: dict[str, UUID] = field(default_factory=dict)
    backends_terminated: int = 0
    restarts: list[str] = field(default_factory=list)
    refused: int = 0
    """Create calls answered 503 or cut off, retried with the same idempotency key."""
    spawned: int = 0

    async def spawn(self) -> None:
        self.spawned += 1
        name = f"chaos-{self.spawned}"
        self.agents[name] = await self.cluster.agent(
            name, task_types="chaos,shell", slots=self.scenario.slots, modules=("chaos_handlers",)
        )


async def _submit_one(run: Run, http: httpx.AsyncClient) -> None:
    uid = uuid.uuid4().hex
    long = run.rng.random() < run.scenario.long_share
    seconds = run.rng.uniform(1.5, 4.0) if long else run.rng.uniform(0.02, 0.3)
    if run.rng.random() < 0.5:
        body: dict[str, Any] = {
            "task_type": "chaos",
            "payload": {"uid": uid, "seconds": round(seconds, 3)},
        }
    else:
        command = ledger_module.shell_command(run.ledger, uid, seconds)
        body = {"task_type": "shell", "payload": {"uid": uid, "command": command}}
    body |= {"name": f"chaos-{'long' if long else 'short'}", "idempotency_key": uid}
    async with asyncio.timeout(120):
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await http.post("/api/tasks", json=body)
                if response.status_code in (200, 201):
                    run.submitted[uid] = UUID(response.json()["id"])
                    return
                assert response.status_code == 503, response.text
            run.refused += 1
            await asyncio.sleep(0.2)


async def _active(http: httpx.AsyncClient) -> int | None:
    with contextlib.suppress(httpx.TransportError, KeyError, ValueError):
        response = await http.get(
            "/api/tasks", params=[*(("status", s) for s in ACTIVE), ("limit", "1")]
        )
        if response.status_code == 200:
            total: int = response.json()["total"]
            return total
    return None


async def _load(run: Run, http: httpx.AsyncClient, until: float) -> None:
    """Keep about one task per slot in flight, short and long, Python and shell."""
    target = run.scenario.agents * run.scenario.slots
    while time.monotonic() < until:
        active = await _active(http)
        if active is not None and active < target:
            for _ in range(min(target - active, 8)):
                await _submit_one(run, http)
        await asyncio.sleep(0.1)


async def _pause(run: Run, name: str, seconds: float) -> None:
    agent = run.agents[name]
    run.paused.add(name)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.pid, signal.SIGSTOP)
        await asyncio.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.pid, signal.SIGCONT)
        run.paused.discard(name)


async def _agent_faults(run: Run, until: float) -> None:
    """``scenario.faults`` SIGKILLs (each followed by a replacement) and pauses."""
    async with asyncio.TaskGroup() as pauses:
        for done in range(run.scenario.faults):
            left = until - time.monotonic()
            if left <= 0:
                break
            # Paced on what is left, so the time spent killing and replacing is caught up.
            interval = left / (run.scenario.faults - done)
            await asyncio.sleep(run.rng.uniform(0.5, 1.5) * interval)
            candidates = sorted(set(run.agents) - run.paused)
            if len(candidates) <= 1:
                continue
            name = run.rng.choice(candidates)
            if run.rng.random() < run.scenario.kill_share:
                run.faults.append(Fault("kill", name, time.time()))
                agent = run.agents.pop(name)
                await agent.kill()
                await run.spawn()
            else:
                seconds = run.rng.choice([run.rng.uniform(0.2, 1.0), run.rng.uniform(2.0, 5.0)])
                run.faults.append(Fault("pause", name, time.time(), seconds))
                pauses.create_task(_pause(run, name, seconds))


async def _backend_faults(run: Run, admin_url: str, database: str, until: float) -> None:
    """Terminate one or two random backends of the run's database every second or so."""
    while time.monotonic() < until:
        await asyncio.sleep(run.rng.uniform(0.5, 2.0))
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            connection = await asyncpg.connect(admin_url)
            try:
                rows = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1"
                    " AND pid <> pg_backend_pid()",
                    database,
                )
                for row in run.rng.sample(rows, min(len(rows), run.rng.choice([1, 2]))):
                    await connection.execute("SELECT pg_terminate_backend($1)", row["pid"])
                    run.backends_terminated += 1
            finally:
                await connection.close()


async def _restart_postgres(run: Run, modes: tuple[str, ...]) -> None:
    """Restart the machine's PostgreSQL cluster once per mode (the suite runs as root)."""
    version, name = _cluster_name()
    for mode in modes:
        await asyncio.sleep(run.scenario.seconds / (len(modes) + 1))
        process = await asyncio.create_subprocess_exec(
            "pg_ctlcluster", version, name, "restart", "-m", mode
        )
        await process.wait()
        run.restarts.append(f"{mode}: exit {process.returncode}")


def _cluster_name() -> tuple[str, str]:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        version, name, port, *_ = line.split()
        if port == "5432":
            return version, name
    raise RuntimeError("no PostgreSQL cluster on port 5432")


async def _drain(http: httpx.AsyncClient, timeout_seconds: float) -> None:
    """Wait until no task is active (or the deadline passes: ``check`` reports the stuck)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_seconds):
            while await _active(http) != 0:  # noqa: ASYNC110 - polls another process
                await asyncio.sleep(0.25)


async def run_scenario(
    scenario: Scenario, database: DatabaseConfig, workdir: Path, admin_url: str | None = None
) -> tuple[Report, dict[str, Any]]:
    """One run on ``database`` (migrated, empty); the report and the run's own figures."""
    rng = random.Random(scenario.seed or None)
    ledger = workdir / "chaos-ledger.txt"
    env = {
        "PYTHONPATH": str(HERE),
        "HETUFLOW_CHAOS_LEDGER": str(ledger),
        "HETUFLOW_AGENT_PASS_ENV": "HETUFLOW_ACK_AGENT",
        "HETUFLOW_SCHEDULER__MAX_CONCURRENT_TASKS": "10000",
    }
    started = time.monotonic()
    async with cluster(database, workdir, env) as c:
        server = await c.server()
        run = Run(scenario, c, server, ledger, rng)
        for _ in range(scenario.agents):
            await run.spawn()
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            until = time.monotonic() + scenario.seconds
            async with asyncio.TaskGroup() as group:
                group.create_task(_load(run, http, until))
                group.create_task(_agent_faults(run, until))
                if scenario.terminate_backends and admin_url is not None:
                    name = database.dsn.rsplit("/", 1)[1]
                    group.create_task(_backend_faults(run, admin_url, name, until))
                if scenario.restart_postgres:
                    group.create_task(_restart_postgres(run, scenario.restart_postgres))
            await _drain(http, timeout_seconds=90)
        if server.process.returncode is not None:
            raise AssertionError(f"the server died:\n{server.output()[-4000:]}")
    store = create_store(database)
    await store.open()
    try:
        names = {agent.id: agent.name for agent in await store.list_agents()}
        report = await ledger_module.check(
            store, run.submitted, ledger_module.read(ledger), run.faults, names
        )
    finally:
        await store.close()
    figures = {
        "database": database.kind,
        "agents": scenario.agents,
        "slots_per_agent": scenario.slots,
        "seconds": round(time.monotonic() - started, 1),
        "agents_started": run.spawned,
        "backends_terminated": run.backends_terminated,
        "postgres_restarts": run.restarts,
        "creates_retried": run.refused,
    }
    return report, figures


# --- the command line (scripts/chaos) ------------------------------------------------------

QUICK = Scenario(agents=6, faults=30, seconds=40.0)
FULL = Scenario(agents=20, faults=1000, seconds=600.0)


async def _pg_database(admin_url: str) -> tuple[DatabaseConfig, str]:
    name = f"hetuflow_chaos_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = admin_url.rsplit("/", 1)[0]
    config = DatabaseConfig(type="postgres", url=f"{base}/{name}", max_connections=10)
    await migrate_up(config)
    return config, name


async def _drop(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def main_nodes(arguments: argparse.Namespace, admin_url: str) -> int:
    """``--scenario nodes``: three server nodes on one PostgreSQL database (see nodes.py)."""
    from .nodes import FULL_NODES, QUICK_NODES, run_nodes  # nodes.py builds on this module

    workdir = Path(tempfile.mkdtemp(prefix="chaos-nodes-"))
    database, name = await _pg_database(admin_url)
    try:
        report, nodes, figures = await run_nodes(
            FULL_NODES if arguments.full else QUICK_NODES, database, workdir
        )
    finally:
        await _drop(admin_url, name)
    print(json.dumps({**figures, **report.summary(), **nodes.summary()}, indent=2))
    violations = [*report.violations, *nodes.violations]
    for violation in violations:
        print("VIOLATION", violation)
    if violations:
        print(f"ledger and logs kept in {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def main_async(arguments: argparse.Namespace) -> int:
    base = FULL if arguments.full else QUICK
    admin_url = os.environ.get(
        "HETUFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    if arguments.scenario == "nodes":
        return await main_nodes(arguments, admin_url)
    failures = 0
    for kind in arguments.db:
        workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{kind}-"))
        # The workdir (the ledger, every process's log) is kept when the ledger fails.
        if kind == "sqlite":
            database = DatabaseConfig(type="sqlite", path=str(workdir / "hetuflow.db"))
            await migrate_up(database)
            scenario = base
            dropped = None
        else:
            database, dropped = await _pg_database(admin_url)
            restarts = tuple(arguments.restart_postgres) if arguments.full else ()
            scenario = replace(base, terminate_backends=True, restart_postgres=restarts)
        try:
            report, figures = await run_scenario(scenario, database, workdir, admin_url)
        finally:
            if dropped is not None:
                await _drop(admin_url, dropped)
        print(json.dumps({**figures, **report.summary()}, indent=2))
        for violation in report.violations:
            print("VIOLATION", violation)
        failures += len(report.violations)
        if report.violations:
            print(f"ledger and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="agents: 6 agents, 30 faults per database; nodes: 3 nodes, 4 agents, a node "
        "killed every ~5 s for 30 s",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="agents: 20 agents, 1,000 faults; nodes: 3 nodes, 9 agents, a node killed every "
        "~20 s for 5 minutes",
    )
    parser.add_argument(
        "--scenario",
        choices=["agents", "nodes", "network"],
        default="agents",
        help="agents (default): agents killed and paused (PostgreSQL backends terminated too); "
        "nodes: three server nodes on one PostgreSQL, a random one SIGKILLed and restarted "
        "under load and per-second cron jobs (PostgreSQL only); network: agents in a network "
        "namespace of their own, their link cut and degraded (tests/chaos/network.py, as root)",
    )
    parser.add_argument(
        "--db", action="append", choices=["sqlite", "postgres"], help="default: both"
    )
    parser.add_argument(
        "--restart-postgres",
        action="append",
        choices=["fast", "immediate"],
        default=[],
        help="with --full: restart the machine's PostgreSQL cluster (pg_ctlcluster) in "
        "this mode mid-load; it restarts the whole cluster, every database on it",
    )
    arguments = parser.parse_args()
    if arguments.scenario == "nodes" and (arguments.restart_postgres or arguments.db):
        parser.error("--scenario nodes runs on PostgreSQL only, with no --db or --restart-postgres")
    arguments.db = arguments.db or ["sqlite", "postgres"]
    if arguments.restart_postgres and not arguments.full:
        parser.error("--restart-postgres needs --full")
    if arguments.scenario == "network":
        if arguments.restart_postgres:
            parser.error("--restart-postgres is for the agents scenario")
        from . import network

        sys.exit(asyncio.run(network.main_async(arguments)))
    sys.exit(asyncio.run(main_async(arguments)))


if __name__ == "__main__":
    main()
