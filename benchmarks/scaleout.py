"""(i) Scale-out: 1, 2, 3 server nodes on one PostgreSQL database (PostgreSQL only).

For each node count N a fresh database gets N separate ``hetuflow-server start`` processes
(one worker each) and a fixed number of agents, agent ``i`` connected to node ``i mod N`` only.
Then, on that cluster:

1. **Batch throughput**: no-op tasks in ``POST /api/tasks/batch`` requests sent round-robin to
   the nodes, a fixed number of requests in flight in total; tasks/s end to end as in the
   throughput scenario (``succeeded`` counted through ``GET /api/stats``).
2. **Per-task costs** over that run, divided by the tasks: CPU of every server process, of the
   agents, and of the PostgreSQL backends serving this database (``/proc`` of the pids
   ``pg_stat_activity`` lists for it); ``pg_stat_database`` deltas of this database (commits,
   rollbacks, rows inserted and updated); NOTIFYs, counted by a LISTEN connection of the
   suite on every channel the servers use; and the backends' wait events, sampled every
   ``SAMPLE_SECONDS`` from ``pg_stat_activity`` (``Lock:advisory`` = a claim or create
   waiting for the claim lock that keeps ``[scheduler] max_concurrent_tasks`` exact).
   Before the run the same counters are read over an idle window of ``IDLE_SECONDS`` (the
   servers' loops, the suite's ``/api/stats`` polling, which runs through both windows) and
   that rate is subtracted (``per_task``; ``per_task_raw`` without). PostgreSQL 15 backends
   that went idle report their counters up to 10 s late, so each reading of the counters
   waits ``so_stats_settle_seconds`` after the work it should include.
3. **Pickup latency**: an open loop of one ``bench-stamp`` task per ``POST /api/tasks`` at a
   fixed moderate rate, requests round-robin over the nodes; latency = handler start - the
   submit call's return (negative when the frame beats the answer), and from its start.

The node counts in ``so_no_limit_nodes`` are measured again with ``[scheduler]
max_concurrent_tasks = 0`` (no global limit: claims take no advisory lock), as
``nodes_<N>_no_global_limit``: the lock's cost, A/B.

The sampler and the counters read through a connection to the admin database, so their own
transactions do not count in the measured database. CPU of PostgreSQL's shared processes
(WAL writer, checkpointer) is not attributable on a shared machine and is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from benchmarks.harness import (
    Database,
    Ledger,
    Process,
    RawHttp,
    ScenarioFailed,
    Server,
    _machine_jiffies,
    admin_url,
    database,
    machine_load,
    proc_stat,
    start_agent,
    start_server,
    stats,
    stop_all,
    summary_ms,
    tree_cpu_seconds,
    wait_agents_online,
)
from benchmarks.suite import Context
from benchmarks.throughput import NOOP, _wait_done
from hetuflow.server.presence import AGENT_ENABLED_CHANGED
from hetuflow.server.registration import AGENT_CONNECTED
from hetuflow.store.base import AGENT_DRAIN_CHANGED, CRON_CHANGED, TASK_CANCEL, TASKS_READY

CHANNELS = (
    TASKS_READY,
    TASK_CANCEL,
    CRON_CHANGED,
    AGENT_CONNECTED,
    AGENT_ENABLED_CHANGED,
    AGENT_DRAIN_CHANGED,
)
SAMPLE_SECONDS = 0.02
IDLE_SECONDS = 5.0
POLL_SECONDS = 0.1
STAMP = {"task_type": "bench-stamp", "name": "bench-scaleout"}
SETTLE_SECONDS = 10.0


@dataclass
class Nodes:
    """N servers on one database, their agents, and the suite's connections to it."""

    db: Database
    servers: list[Server]
    agents: list[Process]
    http: list[httpx.AsyncClient]
    ledger: Ledger
    admin: asyncpg.Connection
    listener: asyncpg.Connection
    notifications: Counter[str] = field(default_factory=Counter)

    @property
    def name(self) -> str:
        return self.db.url.rsplit("/", 1)[1]


@contextlib.asynccontextmanager
async def nodes(
    context: Context,
    count: int,
    env: dict[str, str] | None = None,
    *,
    agents_count: int | None = None,
    slots: int | None = None,
    label: str = "scaleout",
) -> AsyncIterator[Nodes]:
    """``count`` servers on a fresh database and ``agents_count`` agents of ``slots`` slots
    (by default ``so_agents`` of ``so_slots``), agent ``i`` on node ``i mod count``."""
    sizes = context.sizes
    agents_count = sizes.so_agents if agents_count is None else agents_count
    slots = sizes.so_slots if slots is None else slots
    async with database("postgres", context.workdir) as db:
        servers: list[Server] = []
        agents: list[Process] = []
        http: list[httpx.AsyncClient] = []
        admin: asyncpg.Connection | None = None
        listener: asyncpg.Connection | None = None
        try:
            for index in range(count):  # one after the other: the first migrates
                name = f"{label}-{count}-node-{index}"
                servers.append(await start_server(db, context.workdir, env, name=name))
            http = [server.http() for server in servers]
            ledger = Ledger(context.workdir / f"{label}-{count}-{time.monotonic_ns()}.ledger")
            for index in range(agents_count):
                server = servers[index % count]
                name = f"{label}-{count}-agent-{index}"
                agents.append(start_agent(server, name, context.workdir, ledger.path, slots=slots))
            await wait_agents_online(http[0], agents_count)
            admin = await asyncpg.connect(admin_url())
            listener = await asyncpg.connect(db.url)
            cluster = Nodes(db, servers, agents, http, ledger, admin, listener)
            for channel in CHANNELS:
                await listener.add_listener(channel, _counter(cluster.notifications))
            yield cluster
        except BaseException:
            for server in servers:
                context.log(f"--- {server.process.name} log tail\n{server.process.output()}")
            raise
        finally:
            for client in http:
                await client.aclose()
            for connection in (admin, listener):
                if connection is not None:
                    await connection.close()
            await stop_all(agents)
            await stop_all([server.process for server in servers])


def _counter(counts: Counter[str]) -> Any:
    def received(_connection: object, _pid: int, channel: str, _payload: str) -> None:
        counts[channel] += 1

    return received


# --- counters ---------------------------------------------------------------------------------


_DB_COUNTERS = (
    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted"
    " FROM pg_stat_database WHERE datname = $1"
)


@dataclass
class Reading:
    at: float
    servers: float
    agents: float
    backends: dict[int, float]
    database: dict[str, int]
    notifications: int
    machine: tuple[int, int]


async def _backend_pids(cluster: Nodes) -> list[int]:
    rows = await cluster.admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
        " AND pid <> $2",
        cluster.name,
        cluster.listener.get_server_pid(),
    )
    return [row["pid"] for row in rows]


async def read(cluster: Nodes) -> Reading:
    await cluster.admin.execute("SELECT pg_stat_clear_snapshot()")
    row = await cluster.admin.fetchrow(_DB_COUNTERS, cluster.name)
    if row is None:
        raise ScenarioFailed(f"no pg_stat_database row for {cluster.name}")
    backends: dict[int, float] = {}
    for pid in await _backend_pids(cluster):
        with contextlib.suppress(OSError):
            backends[pid] = proc_stat(pid).cpu_seconds
    return Reading(
        at=time.monotonic(),
        servers=sum(tree_cpu_seconds(server.process.pid) for server in cluster.servers),
        agents=sum(tree_cpu_seconds(agent.pid) for agent in cluster.agents),
        backends=backends,
        database=dict(row),
        notifications=sum(cluster.notifications.values()),
        machine=_machine_jiffies(),
    )


@dataclass
class Usage:
    """What a window between two readings used, in totals."""

    seconds: float
    servers_cpu: float
    agents_cpu: float
    postgres_cpu: float
    database: dict[str, int]
    notifications: int
    machine_busy_percent: float


def used(before: Reading, after: Reading) -> Usage:
    postgres = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items())
    busy = after.machine[0] - before.machine[0]
    total = max(after.machine[1] - before.machine[1], 1)
    return Usage(
        seconds=after.at - before.at,
        servers_cpu=after.servers - before.servers,
        agents_cpu=after.agents - before.agents,
        postgres_cpu=postgres,
        database={k: after.database[k] - before.database[k] for k in before.database},
        notifications=after.notifications - before.notifications,
        machine_busy_percent=round(100 * busy / total, 1),
    )


def per_task(usage: Usage, tasks: int) -> dict[str, float]:
    return {
        "server_cpu_ms": round(1000 * usage.servers_cpu / tasks, 4),
        "postgres_backends_cpu_ms": round(1000 * usage.postgres_cpu / tasks, 4),
        "agents_cpu_ms": round(1000 * usage.agents_cpu / tasks, 4),
        "commits": round(usage.database["xact_commit"] / tasks, 4),
        "rollbacks": round(usage.database["xact_rollback"] / tasks, 4),
        "rows_inserted": round(usage.database["tup_inserted"] / tasks, 3),
        "rows_updated": round(usage.database["tup_updated"] / tasks, 3),
        "notifications": round(usage.notifications / tasks, 5),
    }


class WaitSampler:
    """Samples the wait events of this database's backends until stopped."""

    def __init__(self, cluster: Nodes) -> None:
        self.cluster = cluster
        self.samples = 0
        self.events: Counter[str] = Counter()
        self.active: int = 0
        self.advisory_waiting_samples = 0
        self.advisory_waiters = 0
        self.advisory_held_samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        samples = max(self.samples, 1)
        return {
            "samples": self.samples,
            "interval_ms": SAMPLE_SECONDS * 1000,
            "mean_active_backends": round(self.active / samples, 3),
            "advisory_lock_waiters_mean": round(self.advisory_waiters / samples, 3),
            "advisory_lock_wait_share_of_samples": round(
                self.advisory_waiting_samples / samples, 3
            ),
            "advisory_lock_held_share_of_samples": round(self.advisory_held_samples / samples, 3),
            "wait_events_mean_backends": {
                event: round(count / samples, 3) for event, count in self.events.most_common(10)
            },
        }

    async def _run(self) -> None:
        query = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS event, count(*)"
            " FROM pg_stat_activity WHERE datname = $1 AND state = 'active'"
            " AND backend_type = 'client backend' GROUP BY 1"
        )
        held = (
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1"
        )
        while True:
            rows = await self.cluster.admin.fetch(query, self.cluster.name)
            self.advisory_held_samples += bool(
                await self.cluster.admin.fetchval(held, self.cluster.name)
            )
            self.samples += 1
            waiters = 0
            for row in rows:
                self.events[row["event"]] += row["count"]
                self.active += row["count"]
                if row["event"] == "Lock:advisory":
                    waiters = row["count"]
            self.advisory_waiters += waiters
            self.advisory_waiting_samples += waiters > 0
            await asyncio.sleep(SAMPLE_SECONDS)


# --- the workloads ----------------------------------------------------------------------------


async def _spread_batches(
    clients: Sequence[httpx.AsyncClient], total: int, size: int, in_flight: int
) -> None:
    """``total`` no-op tasks in batches of ``size``, round-robin over ``clients``, at most
    ``in_flight`` requests at once."""
    limit = asyncio.Semaphore(in_flight)

    async def post(http: httpx.AsyncClient, count: int) -> None:
        try:
            response = await http.post("/api/tasks/batch", json={"tasks": [NOOP] * count})
            if response.status_code != 201:
                raise ScenarioFailed(f"batch create: {response.status_code} {response.text[:200]}")
        finally:
            limit.release()

    async with asyncio.TaskGroup() as group:
        sent = index = 0
        while sent < total:
            count = min(size, total - sent)
            await limit.acquire()
            group.create_task(post(clients[index % len(clients)], count))
            sent += count
            index += 1


class StatsPoller:
    """``GET /api/stats`` every ``POLL_SECONDS`` for the whole measurement, idle windows
    included, so that the idle rate subtracted from the run holds the same polling."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatsPoller:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            numbers = await stats(self.http)
            self.samples.append((time.monotonic(), numbers["tasks_by_status"]))
            self.changed.set()
            await asyncio.sleep(POLL_SECONDS)

    async def succeeded(self) -> int:
        self.changed.clear()
        await self.changed.wait()
        return self.samples[-1][1]["succeeded"]

    async def until_succeeded(self, target: int, timeout_seconds: float) -> float:
        """The instant of the first sample with ``target`` tasks succeeded."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                self.changed.clear()
                await self.changed.wait()
                at, by_status = self.samples[-1]
                if by_status["succeeded"] >= target:
                    return at
                if by_status["failed"] or by_status["timed_out"]:
                    raise ScenarioFailed(f"tasks did not succeed: {by_status}")


async def _idle_window(cluster: Nodes, settle: float) -> Usage:
    """The counters' rate with no tasks (the servers' loops, the stats polling)."""
    await asyncio.sleep(settle)
    before = await read(cluster)
    await asyncio.sleep(IDLE_SECONDS + settle)
    return used(before, await read(cluster))


async def batch(cluster: Nodes, context: Context, total: int) -> dict[str, Any]:
    sizes = context.sizes
    settle = sizes.so_stats_settle_seconds
    async with StatsPoller(cluster.http[0]) as poller:
        idle = await _idle_window(cluster, settle)
        base = await poller.succeeded()
        load = machine_load()
        before = await read(cluster)
        channels_before = Counter(cluster.notifications)
        sampler = WaitSampler(cluster)
        sampler.start()
        started = time.monotonic()
        try:
            await _spread_batches(
                cluster.http, total, sizes.so_batch_size, sizes.so_batch_in_flight
            )
            finished = await poller.until_succeeded(base + total, timeout_seconds=600)
        finally:
            waits = await sampler.stop()
        in_run = used(before, await read(cluster))
        await asyncio.sleep(settle)  # idle backends report their pg_stat counters late
        counted = used(before, await read(cluster))
    elapsed = finished - started
    # CPU up to the last completion; database counters including the settle (idle subtracted).
    window = Usage(
        in_run.seconds,
        in_run.servers_cpu,
        in_run.agents_cpu,
        in_run.postgres_cpu,
        counted.database,
        counted.notifications,
        in_run.machine_busy_percent,
    )
    net = Usage(
        in_run.seconds,
        in_run.servers_cpu - idle.servers_cpu * in_run.seconds / idle.seconds,
        in_run.agents_cpu - idle.agents_cpu * in_run.seconds / idle.seconds,
        in_run.postgres_cpu - idle.postgres_cpu * in_run.seconds / idle.seconds,
        {
            k: round(v - idle.database[k] * counted.seconds / idle.seconds)
            for k, v in counted.database.items()
        },
        round(counted.notifications - idle.notifications * counted.seconds / idle.seconds),
        in_run.machine_busy_percent,
    )
    return {
        "tasks": total,
        "tasks_per_second": round(total / elapsed, 1),
        "seconds": round(elapsed, 3),
        "load_average_1m_before": round(load, 2),
        "machine_busy_percent": in_run.machine_busy_percent,
        "cpu_percent": {
            "servers": round(100 * in_run.servers_cpu / elapsed, 1),
            "postgres_backends": round(100 * in_run.postgres_cpu / elapsed, 1),
            "agents": round(100 * in_run.agents_cpu / elapsed, 1),
        },
        "per_task": per_task(net, total),
        "per_task_raw": per_task(window, total),
        "idle_per_second": {
            "server_cpu_ms": round(1000 * idle.servers_cpu / idle.seconds, 2),
            "postgres_backends_cpu_ms": round(1000 * idle.postgres_cpu / idle.seconds, 2),
            "commits": round(idle.database["xact_commit"] / idle.seconds, 1),
            "notifications": round(idle.notifications / idle.seconds, 2),
        },
        "notifications_by_channel": dict(cluster.notifications - channels_before),
        "waits": waits,
    }


async def pickup(cluster: Nodes, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop of single creates at ``rate``/s, round-robin over the nodes."""
    count = max(int(rate * seconds), 1)
    sent: dict[str, tuple[float, float]] = {}
    errors: list[str] = []
    behind = 0
    raws = [RawHttp(http.base_url) for http in cluster.http]
    body = json.dumps(STAMP).encode()

    async def submit(raw: RawHttp) -> None:
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
                group.create_task(submit(raws[index % len(raws)]))
    finally:
        for raw in raws:
            raw.close()
    if errors:
        raise ScenarioFailed(f"{len(errors)} submits failed, first: {errors[0]}")
    deadline = time.monotonic() + SETTLE_SECONDS
    starts = cluster.ledger.first_starts()
    while any(task_id not in starts for task_id in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        starts = cluster.ledger.first_starts()
    from_return = [starts[t].at - sent[t][1] for t in sent if t in starts]
    from_send = [starts[t].at - sent[t][0] for t in sent if t in starts]
    return {
        "rate_per_second": rate,
        "tasks": len(sent),
        "not_started": sum(1 for t in sent if t not in starts),
        "submits_behind_schedule": behind,
        "latency": summary_ms(from_return),
        "negative": sum(1 for value in from_return if value < 0),
        "from_submit_call_start": summary_ms(from_send),
    }


async def durable_commit(count: int = 200) -> dict[str, Any]:
    """The round trip of a transaction that must flush its commit record (``SELECT
    txid_current()`` alone, ``synchronous_commit`` as configured), one after the other, in
    the admin database: the least time a claim holds the advisory lock, which it keeps until
    its commit is durable."""
    connection = await asyncpg.connect(admin_url())
    try:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await connection.fetchval("SELECT txid_current()")
            times.append(time.perf_counter() - started)
    finally:
        await connection.close()
    return summary_ms(times)


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    if context.db_kind != "postgres":
        return {"skipped": "several server nodes need PostgreSQL (--db postgres)"}
    result: dict[str, Any] = {
        "agents": sizes.so_agents,
        "slots_per_agent": sizes.so_slots,
        "batch_size": sizes.so_batch_size,
        "batch_requests_in_flight": sizes.so_batch_in_flight,
        "pickup_rate_per_second": sizes.so_pickup_rate,
        "pickup_seconds": sizes.so_pickup_seconds,
    }
    result["durable_commit"] = await durable_commit()
    runs: list[tuple[int, str, str | None]] = [(n, f"nodes_{n}", None) for n in sizes.so_nodes]
    runs += [(n, f"nodes_{n}_no_global_limit", "0") for n in sizes.so_no_limit_nodes]
    for count, name, limit in runs:
        env: dict[str, str] = (
            {} if limit is None else {"HETUFLOW_SCHEDULER__MAX_CONCURRENT_TASKS": limit}
        )
        async with nodes(context, count, env) as cluster:
            await _spread_batches(cluster.http, 200 * count, 100, count)  # warm every node
            await _wait_done(cluster.http[0], 200 * count, timeout_seconds=120)
            numbers = await batch(cluster, context, sizes.so_batch_tasks)
            await pickup(cluster, 20, 0.5)  # warm-up of the single-create path
            numbers["pickup"] = await pickup(cluster, sizes.so_pickup_rate, sizes.so_pickup_seconds)
            result[name] = numbers
            context.log(
                f"  {name}: {numbers['tasks_per_second']} tasks/s, pickup p99 "
                f"{numbers['pickup']['latency'].get('p99_ms')} ms"
            )
    return result
