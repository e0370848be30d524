"""The chaos suite's network scenario: agents behind a link the suite cuts and degrades.

The suite makes a network namespace of its own (``ip netns add``) joined to the host by a
veth pair, and runs some of the agents (real ``hetuflow-agent`` processes) inside it with
``ip netns exec``; the server and the other agents stay on the host. Under the suite's steady
load it then cuts the link (the namespace's end set ``down``, or every packet dropped with
a blackhole route on both ends: a silent partition) for a few seconds, a minute or five
minutes, and degrades it (``tc netem delay 100ms 20ms loss 5%`` on both ends; where the kernel
has no ``sch_netem``, as on the machine the figures come from, a slow link with ``tc tbf``,
whose queue delays packets and drops what would wait too long). The ledger
(``ledger.check``) must balance as in the other scenarios; on top of that the run reports
how the server re-dispatched the cut-off agents' attempts (after the silence window) and how
many of their late starts and results it refused as stale (``hetuflow_reports_fenced_total``).

Addresses: the veth pair carries **loopback-range addresses** (``127.77.x.y/30``, one /30 per
run, picked from the suite's process id) with ``route_localnet`` set on its two ends only,
so nothing on it is routable beyond this machine and the server binds a loopback address:
auth stays off, as for the other scenarios (docs/security.md), with no token to hand out.

Everything is removed at the end (the namespace, hence the veth pair), and leftovers of an
earlier run that crashed (named after a process id that is gone) are removed at the start.
Needs root, ``ip`` (iproute2) and ``tc``; ``unavailable()`` says why not when it cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from hetuflow.config import DatabaseConfig
from hetuflow.models import AttemptOutcome
from hetuflow.store import create_store
from hetuflow.store.base import Store
from hetuflow.store.migrate import migrate_up

from . import ledger as ledger_module
from .ledger import Fault, Report
from .run import HERE, Run, Scenario, _drain, _drop, _load, _pg_database

if TYPE_CHECKING:  # mypy names the test tree from the root (``-p tests``)
    from tests.acceptance.processes import (
        BIN,
        Cluster,
        Process,
        ServerProcess,
        cluster,
        database_url,
        free_port,
    )
else:  # at run time ``tests/`` is on sys.path (pytest's rootdir conftest, scripts/chaos)
    from acceptance.processes import (
        BIN,
        Cluster,
        Process,
        ServerProcess,
        cluster,
        database_url,
        free_port,
    )

PREFIX = "hfchaos-"
"""Namespaces are ``hfchaos-<pid>``; the veth ends ``hfc<pid>h`` (host) and ``hfc<pid>a``."""
HEARTBEAT_SECONDS = 0.5
SILENCE_SECONDS = 1.5
"""The suite's scheduler (``acceptance.processes.FAST_SCHEDULER``): heartbeats every 0.5 s,
an agent silent for 3 of them is offline and its attempts are released."""
SLOW_LINK = "tbf rate 96kbit burst 2kb latency 400ms"
"""The degraded link where the kernel has no ``sch_netem``: 12 kB/s each way, packets that would
wait more than 400 ms in the queue dropped."""
LEFTOVER_LINK = re.compile(r"^\d+:\s+hfc(\d+)[ha][@:]")


@dataclass(frozen=True)
class NetworkScenario:
    inside: int = 3
    """Agents in the namespace (cut off together)."""
    outside: int = 3
    """Agents on the host side: they take the re-dispatched attempts."""
    slots: int = 2
    cuts: tuple[tuple[str, float], ...] = (("drop", 5.0), ("down", 5.0))
    """``(how, seconds)``: ``drop`` (blackhole routes on both ends) or ``down`` (link down)."""
    degrade: str = "delay 100ms 20ms loss 5%"
    degrade_seconds: float = 10.0
    gap_seconds: float = 7.0
    """Load without a fault before each fault and after the last."""
    long_share: float = 0.25
    seed: int = 0

    @property
    def seconds(self) -> float:
        faults = len(self.cuts) + (1 if self.degrade_seconds else 0)
        return sum(s for _, s in self.cuts) + self.degrade_seconds + self.gap_seconds * (faults + 1)


QUICK = NetworkScenario()
FULL = NetworkScenario(
    inside=5,
    outside=5,
    cuts=(("drop", 5.0), ("down", 5.0), ("drop", 60.0), ("down", 60.0), ("drop", 300.0)),
    degrade_seconds=60.0,
    gap_seconds=20.0,
)


# --- the namespace and its link --------------------------------------------------------------


def _ip(*argv: str, namespace: str | None = None, check: bool = True) -> str:
    command = ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Remove namespaces and veth ends of earlier runs whose process is gone."""
    removed: list[str] = []
    for line in _ip("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name[len(PREFIX) :]
        if name.startswith(PREFIX) and pid.isdigit() and not _alive(int(pid)):
            _ip("ip", "netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("ip", "-o", "link", "show", check=False).splitlines():
        match = LEFTOVER_LINK.match(line)
        if match and not _alive(int(match.group(1))):
            link = line.split(":")[1].strip().split("@")[0]
            _ip("ip", "link", "del", link, check=False)
            removed.append(link)
    return removed


def unavailable() -> str | None:
    """Why the network scenario cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the network scenario needs root (ip netns, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the network scenario needs {tool!r} (iproute2)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    try:
        _ip("ip", "netns", "add", probe)
    except RuntimeError as error:
        return f"ip netns is not permitted here: {error}"
    _ip("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Link:
    """A namespace joined to the host by a veth pair, with loopback-range addresses."""

    namespace: str
    host_link: str
    agent_link: str
    host_address: str
    agent_address: str

    @classmethod
    def for_this_process(cls) -> Link:
        pid = os.getpid()
        block = (pid % 16_384) * 4  # one /30 of 127.77.0.0/16 per run
        base = f"127.77.{block // 256}.{block % 256}"
        prefix = base.rsplit(".", 1)[0]
        return cls(
            namespace=f"{PREFIX}{pid}",
            host_link=f"hfc{pid}h",
            agent_link=f"hfc{pid}a",
            host_address=f"{prefix}.{block % 256 + 1}",
            agent_address=f"{prefix}.{block % 256 + 2}",
        )

    def create(self) -> None:
        self.remove()
        _ip("ip", "netns", "add", self.namespace)
        _ip("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.agent_link)
        _ip("ip", "link", "set", self.agent_link, "netns", self.namespace)
        # 127/8 is routed off the loopback interface on these two ends only.
        _ip("sysctl", "-qw", f"net.ipv4.conf.{self.host_link}.route_localnet=1")
        _ip("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _ip("ip", "link", "set", self.host_link, "up")
        inside = self.namespace
        _ip("sysctl", "-qw", f"net.ipv4.conf.{self.agent_link}.route_localnet=1", namespace=inside)
        _ip(
            "ip",
            "addr",
            "add",
            f"{self.agent_address}/30",
            "dev",
            self.agent_link,
            namespace=inside,
        )
        _ip("ip", "link", "set", self.agent_link, "up", namespace=inside)
        _ip("ip", "link", "set", "lo", "up", namespace=inside)

    def remove(self) -> None:
        """Delete the namespace (its veth end goes with it, and so the pair); idempotent."""
        _ip("ip", "netns", "del", self.namespace, check=False)
        _ip("ip", "link", "del", self.host_link, check=False)

    def _qdisc(self, *spec: str) -> None:
        _ip("tc", "qdisc", "replace", "dev", self.host_link, "root", *spec)
        _ip(
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.agent_link,
            "root",
            *spec,
            namespace=self.namespace,
        )

    def cut(self, how: str) -> None:
        """``down``: the namespace's end of the pair down (its sockets see the network gone);
        ``drop``: a blackhole route on both ends (every packet dropped, the sockets see
        nothing: a silent partition)."""
        if how == "down":
            _ip("ip", "link", "set", self.agent_link, "down", namespace=self.namespace)
        elif how == "drop":
            _ip("ip", "route", "add", "blackhole", f"{self.agent_address}/32")
            _ip(
                "ip",
                "route",
                "add",
                "blackhole",
                f"{self.host_address}/32",
                namespace=self.namespace,
            )
        else:
            raise ValueError(f"unknown cut {how!r}")

    def degrade(self, netem: str) -> str:
        """Latency and loss on both ends (``tc netem``), or, on a kernel without netem, a slow
        link (``tc tbf``: queueing delay, and tail drops past it). Returns what was applied."""
        try:
            self._qdisc("netem", *netem.split())
        except RuntimeError as error:
            if "unknown" not in str(error):
                raise
            self._qdisc(*SLOW_LINK.split())
            return f"tc {SLOW_LINK} (no netem in this kernel)"
        return f"tc netem {netem}"

    def mend(self) -> None:
        """Undo ``cut`` and ``degrade``: the link up, no blackhole route, no qdisc."""
        _ip("ip", "link", "set", self.agent_link, "up", namespace=self.namespace)
        _ip("ip", "route", "del", "blackhole", f"{self.agent_address}/32", check=False)
        inside = self.namespace
        _ip(
            "ip",
            "route",
            "del",
            "blackhole",
            f"{self.host_address}/32",
            namespace=inside,
            check=False,
        )
        _ip("tc", "qdisc", "del", "dev", self.host_link, "root", check=False)
        _ip("tc", "qdisc", "del", "dev", self.agent_link, "root", namespace=inside, check=False)


# --- processes on either side ----------------------------------------------------------------


@dataclass
class LinkedServer(ServerProcess):
    """A server bound to the host end of the veth pair (a loopback-range address)."""

    host: str = "127.0.0.1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _server(c: Cluster, link: Link) -> LinkedServer:
    port = free_port()
    argv = [str(BIN / "hetuflow-server"), "start", "--bind", f"{link.host_address}:{port}"]
    argv += ["--database-url", database_url(c.database)]
    process, log = await c._spawn("server", *argv)
    server = LinkedServer("server", process, log, port, host=link.host_address)
    c.processes.append(server)
    c.servers.append(server)
    await c._ready(server)
    return server


async def _agent_inside(
    c: Cluster, link: Link, server: LinkedServer, name: str, slots: int
) -> Process:
    """A ``hetuflow-agent`` in the namespace (``ip netns exec`` execs it: same pid)."""
    argv = ["ip", "netns", "exec", link.namespace, str(BIN / "hetuflow-agent"), "start"]
    argv += ["--server", server.ws_url, "--name", name, "--task-types", "chaos,shell"]
    argv += ["--max-concurrent", str(slots), "--kill-grace-seconds", "1"]
    argv += ["--module", "chaos_handlers"]
    process, log = await c._spawn(name, *argv, env={"HETUFLOW_ACK_AGENT": name})
    agent = Process(name, process, log)
    c.processes.append(agent)
    return agent


# --- the run ---------------------------------------------------------------------------------


@dataclass
class NetworkFaults:
    cuts: list[dict[str, Any]]
    degraded: list[dict[str, Any]]


async def _online(http: httpx.AsyncClient, names: set[str], timeout_seconds: float) -> bool:
    """Wait until every agent of ``names`` is online (False if the deadline passes)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_seconds):
            while True:
                with contextlib.suppress(httpx.TransportError, KeyError, ValueError):
                    response = await http.get("/api/agents", params={"limit": "500"})
                    items = response.json()["items"]
                    online = {a["name"] for a in items if a["status"] == "online"}
                    if names <= online:
                        return True
                await asyncio.sleep(0.25)
    return False


async def _faults(
    run: Run, link: Link, scenario: NetworkScenario, inside: list[str], log: NetworkFaults
) -> None:
    async def hold(kind: str, seconds: float, act: Any, *args: str) -> tuple[float, Any]:
        at = time.time()
        run.faults.extend(Fault(kind, name, at, seconds) for name in inside)
        try:
            done = await asyncio.to_thread(act, *args)
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(link.mend)
        return at, done

    for how, seconds in scenario.cuts:
        await asyncio.sleep(scenario.gap_seconds)
        at, _ = await hold("cut", seconds, link.cut, how)
        log.cuts.append({"how": how, "seconds": seconds, "at": round(at, 3)})
    if scenario.degrade_seconds:
        await asyncio.sleep(scenario.gap_seconds)
        _, applied = await hold(
            "degraded", scenario.degrade_seconds, link.degrade, scenario.degrade
        )
        log.degraded.append({"applied": applied, "seconds": scenario.degrade_seconds})


async def _fenced_reports(http: httpx.AsyncClient) -> dict[str, float]:
    """``hetuflow_reports_fenced_total`` by report, from the server's ``/metrics``."""
    counts: dict[str, float] = {}
    response = await http.get("/metrics")
    for line in response.text.splitlines():
        match = re.match(r'^hetuflow_reports_fenced_total\{report="(\w+)"\} (\S+)$', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


async def run_network(
    scenario: NetworkScenario, database: DatabaseConfig, workdir: Path
) -> tuple[Report, dict[str, Any]]:
    """One run on ``database`` (migrated, empty); the report and the run's own figures."""
    link = Link.for_this_process()
    leftovers = await asyncio.to_thread(remove_leftovers)
    await asyncio.to_thread(link.create)
    try:
        report, figures = await _run(scenario, database, workdir, link)
    finally:
        await asyncio.to_thread(link.remove)
    return report, {**figures, "leftovers_removed": leftovers}


async def _run(
    scenario: NetworkScenario, database: DatabaseConfig, workdir: Path, link: Link
) -> tuple[Report, dict[str, Any]]:
    rng = random.Random(scenario.seed or None)
    ledger = workdir / "chaos-ledger.txt"
    env = {
        "PYTHONPATH": str(HERE),
        "HETUFLOW_CHAOS_LEDGER": str(ledger),
        "HETUFLOW_AGENT_PASS_ENV": "HETUFLOW_ACK_AGENT",
        "HETUFLOW_SCHEDULER__MAX_CONCURRENT_TASKS": "10000",
    }
    started = time.monotonic()
    base = Scenario(
        agents=scenario.inside + scenario.outside,
        slots=scenario.slots,
        faults=0,
        seconds=scenario.seconds,
        long_share=scenario.long_share,
    )
    log = NetworkFaults([], [])
    async with cluster(database, workdir, env) as c:
        server = await _server(c, link)
        run = Run(base, c, server, ledger, rng)
        inside = [f"inside-{n}" for n in range(1, scenario.inside + 1)]
        for name in inside:
            run.agents[name] = await _agent_inside(c, link, server, name, scenario.slots)
        for _ in range(scenario.outside):
            await run.spawn()
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            if not await _online(http, set(run.agents), 30):
                raise AssertionError(f"agents did not come online:\n{c.logs()}")
            until = time.monotonic() + scenario.seconds
            async with asyncio.TaskGroup() as group:
                group.create_task(_load(run, http, until))
                group.create_task(_faults(run, link, scenario, inside, log))
            # The cut-off agents back (their late reports sent), then nothing left active.
            back = await _online(http, set(inside), 60)
            await _drain(http, timeout_seconds=120)
            fenced = await _fenced_reports(http)
        if server.process.returncode is not None:
            raise AssertionError(f"the server died:\n{server.output()[-4000:]}")
    store = create_store(database)
    await store.open()
    try:
        names = {agent.id: agent.name for agent in await store.list_agents()}
        report = await ledger_module.check(
            store, run.submitted, ledger_module.read(ledger), run.faults, names
        )
        held = await _redispatch_of_held(store, run, set(inside), log.cuts, names)
    finally:
        await store.close()
    figures = {
        "scenario": "network",
        "database": database.kind,
        "agents_inside": scenario.inside,
        "agents_outside": scenario.outside,
        "slots_per_agent": scenario.slots,
        "addresses": f"server {link.host_address}, namespace {link.agent_address} (/30)",
        "cuts": log.cuts,
        "degraded": log.degraded,
        "cut_off_agents_back": back,
        "redispatch_of_attempts_held_at_a_cut_seconds": ledger_module.percentiles(held),
        "reports_fenced": fenced,
        "seconds": round(time.monotonic() - started, 1),
        "creates_retried": run.refused,
    }
    return report, figures


async def _redispatch_of_held(
    store: Store,
    run: Run,
    inside: set[str],
    cuts: list[dict[str, Any]],
    names: dict[UUID, str],
) -> list[float]:
    """For each attempt a cut-off agent held when its link was cut and lost with it: the time
    from the cut to the next attempt's dispatch (the silence window plus a dispatch round)."""
    delays: list[float] = []
    for task_id in run.submitted.values():
        attempts = sorted(await store.list_attempts(task_id), key=lambda a: a.number)
        for attempt, following in itertools.pairwise(attempts):
            name = names.get(attempt.agent_id) if attempt.agent_id else None
            if attempt.outcome != AttemptOutcome.LOST or name not in inside:
                continue
            dispatched = attempt.dispatched_at.timestamp()
            again = following.dispatched_at.timestamp()
            for cut in cuts:
                if dispatched < cut["at"] < again:
                    delays.append(again - cut["at"])
                    break
    return delays


def demonstrated(report: Report, figures: dict[str, Any]) -> list[str]:
    """What the run was meant to show and did not (besides the ledger's violations)."""
    missing: list[str] = []
    if not figures["cut_off_agents_back"]:
        missing.append("the cut-off agents did not come back online within 60 s")
    held = figures["redispatch_of_attempts_held_at_a_cut_seconds"]
    if not held["n"]:
        missing.append("no attempt a cut-off agent held was re-dispatched")
    elif held["min"] < SILENCE_SECONDS - HEARTBEAT_SECONDS:
        # The server last heard from the agent at most a heartbeat interval before the cut.
        missing.append(f"an attempt was re-dispatched {held['min']} s after its agent's cut")
    if not report.late_results.get("agent cut"):
        missing.append("no attempt of a cut-off agent ran to its end after being re-dispatched")
    if not figures["reports_fenced"].get("result"):
        missing.append("the server refused no late result (hetuflow_reports_fenced_total)")
    return missing


# --- the command line (scripts/chaos --scenario network) -------------------------------------


async def main_async(arguments: argparse.Namespace) -> int:
    scenario = FULL if arguments.full else QUICK
    if reason := unavailable():
        print(f"cannot run the network scenario: {reason}")
        return 2
    admin_url = os.environ.get(
        "HETUFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    failures = 0
    for kind in arguments.db:
        workdir = Path(tempfile.mkdtemp(prefix=f"chaos-network-{kind}-"))
        dropped = None
        if kind == "sqlite":
            database = DatabaseConfig(type="sqlite", path=str(workdir / "hetuflow.db"))
            await migrate_up(database)
        else:
            database, dropped = await _pg_database(admin_url)
        try:
            report, figures = await run_network(scenario, database, workdir)
        finally:
            if dropped is not None:
                await _drop(admin_url, dropped)
        print(json.dumps({**figures, **report.summary()}, indent=2))
        problems = [*report.violations, *demonstrated(report, figures)]
        for problem in problems:
            print("VIOLATION", problem)
        failures += len(problems)
        if problems:
            print(f"ledger and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0
