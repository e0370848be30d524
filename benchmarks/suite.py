"""The suite: sizes per mode, the per-scenario cluster, and the runner over databases."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    Database,
    Ledger,
    Process,
    Server,
    database,
    start_agent,
    start_server,
    stop_all,
    wait_agents_online,
)

SCENARIOS = (
    "throughput",
    "latency",
    "cron",
    "agents",
    "recovery",
    "producer",
    "edge",
    "workflows",
)
ON_DEMAND = ("scaleout", "concurrency_keys", "rate_limit")
"""Scenarios run only when named in ``--only`` (several minutes each; ``scaleout`` and
``rate_limit`` on PostgreSQL only)."""


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does. ``full`` is what docs/benchmarks.md reports."""

    # (a) throughput
    tp_batch_tasks: int = 30_000
    tp_batch_size: int = 500
    tp_batch_in_flight: int = 2
    tp_single_tasks: int = 3_000
    tp_single_in_flight: int = 32
    tp_agents: int = 2
    tp_slots: int = 1000
    # (b) latency: (rate per second, seconds) per idle phase; half-throughput phase seconds
    lat_idle: tuple[tuple[float, float], ...] = ((10.0, 20.0), (100.0, 15.0))
    lat_half_seconds: float = 8.0
    lat_agents: int = 2
    lat_slots: int = 500
    # (c) cron
    cron_one_seconds: float = 30.0
    cron_burst_jobs: int = 1000
    cron_agents: int = 2
    cron_slots: int = 600
    # (d) idle agents: total connections at each step; simulated agents per process
    agents_steps: tuple[int, ...] = (1000, 5000, 10_000)
    agents_per_process: int = 5000
    agents_hold_seconds: float = 12.0
    agents_heartbeat_seconds: float = 5.0
    # (e) recovery
    rec_clean_kills: int = 20
    rec_silent_kills: int = 5
    rec_agents: int = 3
    rec_heartbeat_seconds: float = 1.0
    rec_heartbeat_misses: int = 3
    rec_hold_seconds: float = 1.0
    # (f) producer: serial SDK submits (sync, async), and those of 8 threads sharing a Client
    prod_tasks: int = 5000
    prod_thread_tasks: int = 20_000
    prod_warmup: int = 200
    # (g) edge: requests per route, to the server and to a bare Starlette app
    edge_requests: int = 2000
    # (h) workflows: a chain of no-op steps; 100-step workflows created one after the other
    wf_chain_steps: int = 1000
    wf_create_repeats: int = 50
    # (h) workflows: the items of a fan-out (map_over), each a no-op child step
    wf_map_items: int = 10_000
    # (i) scale-out: node counts on one PostgreSQL; agents in all (agent i on node i mod N)
    so_nodes: tuple[int, ...] = (1, 2, 3)
    so_agents: int = 6
    so_slots: int = 300
    so_batch_tasks: int = 30_000
    so_batch_size: int = 500
    so_batch_in_flight: int = 6
    so_pickup_rate: float = 200.0
    so_pickup_seconds: float = 15.0
    # node counts run again with ``max_concurrent_tasks = 0`` (no global limit, no claim lock)
    so_no_limit_nodes: tuple[int, ...] = (3,)
    # PostgreSQL 15 backends that went idle report their pg_stat counters up to 10 s late
    so_stats_settle_seconds: float = 11.0
    # (j) concurrency keys: the same tasks unkeyed, then over ``ck_keys`` keys limited to 1
    ck_tasks: int = 100_000
    ck_keys: int = 1000
    ck_batch_size: int = 500
    ck_batch_in_flight: int = 2
    ck_agents: int = 2
    ck_slots: int = 1000
    # then keyed tasks that each hold their key for ``ck_hold_seconds`` (the overlap check)
    ck_hold_tasks: int = 10_000
    ck_hold_seconds: float = 0.02
    # (k) rate limit: ``rl_limit`` per ``rl_per_seconds``, measured over ``rl_seconds``, with
    # ``rl_nodes`` server nodes on one PostgreSQL; tasks for ``rl_seconds`` + 2 windows
    rl_limit: int = 500
    rl_per_seconds: float = 1.0
    rl_seconds: float = 10.0
    rl_nodes: int = 2
    rl_agents: int = 4
    rl_slots: int = 500


FULL = Sizes()
QUICK = dataclasses.replace(
    FULL,
    tp_batch_tasks=10_000,
    tp_single_tasks=2_000,
    lat_idle=((10.0, 6.0), (100.0, 5.0)),
    lat_half_seconds=4.0,
    cron_one_seconds=8.0,
    cron_burst_jobs=300,
    agents_steps=(1000, 3000),
    agents_hold_seconds=6.0,
    rec_clean_kills=5,
    rec_silent_kills=2,
    prod_tasks=2000,
    prod_thread_tasks=5000,
    edge_requests=1000,
    wf_chain_steps=300,
    wf_create_repeats=20,
    wf_map_items=1000,
    so_batch_tasks=10_000,
    so_pickup_seconds=6.0,
    ck_tasks=20_000,
    rl_seconds=5.0,
)
SMOKE = dataclasses.replace(
    FULL,
    tp_batch_tasks=300,
    tp_batch_size=100,
    tp_single_tasks=60,
    tp_single_in_flight=8,
    tp_agents=1,
    tp_slots=50,
    lat_idle=((20.0, 0.5),),
    lat_half_seconds=0.5,
    lat_agents=1,
    lat_slots=50,
    cron_one_seconds=2.0,
    cron_burst_jobs=10,
    cron_agents=1,
    cron_slots=20,
    agents_steps=(20,),
    agents_per_process=20,
    agents_hold_seconds=1.0,
    agents_heartbeat_seconds=0.5,
    rec_clean_kills=1,
    rec_silent_kills=1,
    rec_agents=2,
    rec_heartbeat_seconds=0.3,
    rec_heartbeat_misses=2,
    rec_hold_seconds=0.3,
    prod_tasks=40,
    prod_thread_tasks=80,
    prod_warmup=10,
    edge_requests=40,
    wf_chain_steps=10,
    wf_create_repeats=3,
    wf_map_items=50,
    so_nodes=(1, 2),
    so_agents=2,
    so_slots=50,
    so_batch_tasks=300,
    so_batch_size=100,
    so_batch_in_flight=2,
    so_pickup_rate=20.0,
    so_pickup_seconds=0.5,
    so_no_limit_nodes=(),
    so_stats_settle_seconds=1.0,
    ck_tasks=300,
    ck_keys=20,
    ck_batch_size=100,
    ck_agents=1,
    ck_slots=50,
    ck_hold_tasks=40,
    rl_limit=50,
    rl_seconds=1.0,
    rl_agents=2,
    rl_slots=50,
)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


@dataclass
class Cluster:
    """One scenario's server, its agents and their shared ledger."""

    context: Context
    db: Database
    server: Server
    http: httpx.AsyncClient
    ledger: Ledger
    agents: list[Process] = field(default_factory=list)
    slots: int = 1

    def add_agent(self, name: str, slots: int | None = None) -> Process:
        agent = start_agent(
            self.server,
            name,
            self.context.workdir,
            self.ledger.path,
            slots=slots or self.slots,
        )
        self.agents.append(agent)
        return agent


@dataclass
class Context:
    """What a scenario gets: the database kind, sizes, a work directory, earlier results."""

    db_kind: str
    sizes: Sizes
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    profile_dir: Path | None = None
    log: Callable[[str], None] = print

    @contextlib.asynccontextmanager
    async def cluster(
        self,
        name: str,
        *,
        agents: int = 0,
        slots: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Cluster]:
        """A fresh database, a server on it, ``agents`` agents online; all stopped after."""
        async with database(self.db_kind, self.workdir) as db:
            server = await start_server(db, self.workdir, env, name=f"{name}-server")
            ledger = Ledger(self.workdir / f"{name}-{time.monotonic_ns()}.ledger")
            http = server.http()
            cluster = Cluster(self, db, server, http, ledger, slots=slots)
            try:
                for index in range(agents):
                    cluster.add_agent(f"{name}-agent-{index}")
                if agents:
                    await wait_agents_online(http, agents)
                yield cluster
            except BaseException:
                self.log(f"--- {name} server log tail\n{server.process.output()}")
                raise
            finally:
                await http.aclose()
                await stop_all(cluster.agents)
                await server.process.stop()


Scenario = Callable[[Context], Awaitable[dict[str, Any]]]


def scenarios() -> dict[str, Scenario]:
    from benchmarks import (
        agents,
        concurrency_keys,
        cron,
        edge,
        latency,
        producer,
        rate_limit,
        recovery,
        scaleout,
        throughput,
        workflows,
    )

    return {
        "throughput": throughput.run,
        "latency": latency.run,
        "cron": cron.run,
        "agents": agents.run,
        "recovery": recovery.run,
        "producer": producer.run,
        "edge": edge.run,
        "workflows": workflows.run,
        "scaleout": scaleout.run,
        "concurrency_keys": concurrency_keys.run,
        "rate_limit": rate_limit.run,
    }


async def run_database(
    db_kind: str,
    only: list[str],
    sizes: Sizes,
    workdir: Path,
    profile_dir: Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every chosen scenario on one database; a failing scenario is recorded, not fatal."""
    context = Context(db_kind, sizes, workdir, profile_dir=profile_dir, log=log)
    found = scenarios()
    database_info: dict[str, Any] = {}
    for name in only:
        log(f"[{db_kind}] {name} …")
        started = time.monotonic()
        try:
            context.results[name] = await found[name](context)
        except Exception as error:
            context.results[name] = {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=8),
            }
            log(f"[{db_kind}] {name} FAILED: {error}")
        context.results[name]["wall_seconds"] = round(time.monotonic() - started, 1)
    if db_kind == "postgres":
        from benchmarks.harness import admin_url, postgres_details

        with contextlib.suppress(Exception):
            database_info = await postgres_details(admin_url())
    return {"database": database_info, "scenarios": context.results}
