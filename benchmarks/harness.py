"""Processes, databases and measuring tools shared by the scenarios.

Everything here runs real programs: ``hetuflow-server start`` and ``hetuflow-agent start`` from
the virtualenv's ``bin``, each with its output in a log file of the run's work directory, each
stopped (and reaped) by the scenario that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_ENV = "HETUFLOW_BENCH_DATABASE_URL"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

SERVER_ENV = {
    # The global limit of the default config (100 tasks held at once) would cap throughput;
    # the suite measures the server, not that setting.
    "HETUFLOW_SCHEDULER__MAX_CONCURRENT_TASKS": "1000000",
    # Access logs (one INFO line per request) off, as for any benchmark of a web server.
    "HETUFLOW_SERVER__LOG_LEVEL": "warning",
}


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one (for 10,000 WebSockets); used in children too."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- numbers ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values_seconds: Sequence[float]) -> dict[str, Any]:
    """count, p50/p90/p99/max (and min, mean) of durations, in milliseconds."""
    ordered = sorted(v * 1000 for v in values_seconds)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "min_ms": round(ordered[0], 3),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p90_ms": round(percentile(ordered, 90), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(sum(ordered) / len(ordered), 3),
    }


# --- processes --------------------------------------------------------------------------------


@dataclass
class ProcStat:
    """A point-in-time reading of a process from /proc."""

    rss_bytes: int
    cpu_seconds: float
    threads: int


def proc_stat(pid: int) -> ProcStat:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, num_threads 20, rss 24.
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return ProcStat(int(fields[21]) * PAGE_SIZE, cpu, int(fields[17]))


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stat(self) -> ProcStat:
        return proc_stat(self.pid)

    def output(self, tail: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    async def wait(self, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self, timeout_seconds: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_seconds``; always reaped."""
        if not self.alive():
            return
        self.signal(signal.SIGCONT)  # a SIGSTOPped process must run to handle SIGTERM
        self.signal(signal.SIGTERM)
        if not await self.wait(timeout_seconds):
            self.signal(signal.SIGKILL)
            await self.wait(timeout_seconds)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait(10.0)


def spawn(
    name: str, argv: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None
) -> Process:
    log = workdir / f"{name}.log"
    environment = {**os.environ, **(env or {})}
    environment.pop("DATABASE_URL", None)
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,  # --module benchmarks.handlers resolves from here
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )
    return Process(name, popen, log)


# --- databases --------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str
    url: str
    details: dict[str, Any] = field(default_factory=dict)


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or os.environ.get(
        "HETUFLOW_TEST_DATABASE_URL", DEFAULT_ADMIN_URL
    )


async def postgres_details(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        return {
            "server_version": await connection.fetchval("SHOW server_version"),
            "synchronous_commit": await connection.fetchval("SHOW synchronous_commit"),
            "fsync": await connection.fetchval("SHOW fsync"),
            "shared_buffers": await connection.fetchval("SHOW shared_buffers"),
        }
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def database(kind: str, workdir: Path) -> AsyncIterator[Database]:
    """A fresh, empty database for one scenario (the server migrates it); dropped after."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        yield Database("sqlite", f"sqlite:///{path.resolve()}", {"path": str(path)})
        _remove_sqlite(path)
        return
    admin = admin_url()
    name = f"hetuflow_bench_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = _with_database(admin, name)
    try:
        yield Database("postgres", url, await postgres_details(url))
    finally:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


# --- server and agents ------------------------------------------------------------------------


@dataclass
class Server:
    process: Process
    port: int
    env: dict[str, str]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def http(self, connections: int = 64) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.http_url,
            timeout=120,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )


class ScenarioFailed(Exception):
    """A scenario could not measure what it set out to (the message says why)."""


async def start_server(
    db: Database, workdir: Path, env: Mapping[str, str] | None = None, name: str = "server"
) -> Server:
    port = free_port()
    environment = {**SERVER_ENV, **(env or {})}
    argv = [str(BIN / "hetuflow-server"), "start", "--bind", f"127.0.0.1:{port}"]
    argv += ["--database-url", db.url]
    server = Server(spawn(name, argv, workdir, environment), port, environment)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        while True:
            if not server.process.alive():
                raise ScenarioFailed(f"server exited at start:\n{server.process.output()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return server
            if time.monotonic() > deadline:
                await server.process.stop()
                raise ScenarioFailed(f"server not ready in 60 s:\n{server.process.output()}")
            await asyncio.sleep(0.05)


TASK_TYPES = ("bench-noop", "bench-stamp", "bench-hold", "bench-chain", "bench-list")


def start_agent(
    server: Server,
    name: str,
    workdir: Path,
    ledger: Path,
    *,
    slots: int,
) -> Process:
    argv = [str(BIN / "hetuflow-agent"), "start", "--server", server.ws_url, "--name", name]
    argv += ["--module", "benchmarks.handlers", "--task-types", *TASK_TYPES]
    argv += ["--max-concurrent", str(slots), "--no-shell", "--log-level", "warning"]
    env = {"HETUFLOW_BENCH_LEDGER": str(ledger), "HETUFLOW_BENCH_AGENT": name}
    return spawn(name, argv, workdir, env)


async def wait_agents_online(
    http: httpx.AsyncClient, count: int, timeout_seconds: float = 60.0
) -> None:
    """Until the store counts at least ``count`` agents online."""
    deadline = time.monotonic() + timeout_seconds
    online = 0
    while time.monotonic() < deadline:
        online = (await stats(http))["agents_online"]
        if online >= count:
            return
        await asyncio.sleep(0.1)
    raise ScenarioFailed(f"only {online} of {count} agents online after {timeout_seconds:g} s")


class RawHttp:
    """Plain HTTP/1.1 requests over a pool of keep-alive asyncio connections, for the load
    generators: with dozens of requests in flight httpx spent about 3 ms of the generator's
    CPU per request here, so it, not the server, bounded one-task-per-request numbers.

    A connection idle longer than ``MAX_IDLE_SECONDS`` is closed rather than reused (uvicorn
    closes idle keep-alive connections after 5 s)."""

    MAX_IDLE_SECONDS = 2.0

    def __init__(self, base_url: httpx.URL) -> None:
        self.host = base_url.host
        self.port = base_url.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < self.MAX_IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; (status, response body)."""
        reader, writer = await self._connection()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer, time.monotonic()))
        return int(lines[0].split(b" ", 2)[1]), answer

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/api/stats")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def stop_all(processes: Sequence[Process]) -> None:
    await asyncio.gather(*(process.stop() for process in processes))


# --- the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """One handler start, as written by ``benchmarks.handlers``."""

    task_id: str
    attempt: int
    at: float
    agent: str
    pid: int


class Ledger:
    """Reads the handlers' start lines, incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.starts: list[Start] = []

    def read(self) -> list[Start]:
        """New complete lines since the last call."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as source:
            source.seek(self._offset)
            data = source.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            task_id, attempt, at, agent, pid = line.decode().split(" ")
            new.append(Start(task_id, int(attempt), float(at), agent, int(pid)))
        self.starts.extend(new)
        return new

    def first_starts(self) -> dict[str, Start]:
        """The first start of each task."""
        self.read()
        firsts: dict[str, Start] = {}
        for start in self.starts:
            firsts.setdefault(start.task_id, start)
        return firsts


# --- CPU accounting ---------------------------------------------------------------------------


def _machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine, in clock ticks, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (a server started with several
    workers is a parent and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_stat(current).cpu_seconds
        todo.extend(children.get(current, ()))
    return total


def _postgres_seconds() -> float:
    """CPU seconds used so far by every live ``postgres`` process (server and backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if stat[stat.index("(") + 1 : stat.rindex(")")].startswith("postgres"):
                total += proc_stat(int(entry.name)).cpu_seconds
    return total


class CpuMeter:
    """CPU seconds of some processes (with their children) between ``start`` and ``stop``, as
    % of one core; also
    every PostgreSQL process together (``postgres``, when any runs) and the whole machine
    (``machine``, % of all its cores: near 100 means the cores, not waits, bound a run)."""

    def __init__(self, processes: Mapping[str, Process]) -> None:
        self.processes = dict(processes)
        self._before: dict[str, float] = {}
        self._since = 0.0
        self._machine = (0, 0)

    def start(self) -> None:
        self._since = time.monotonic()
        self._before = {name: tree_cpu_seconds(p.pid) for name, p in self.processes.items()}
        self._before["postgres"] = _postgres_seconds()
        self._machine = _machine_jiffies()

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._since, 1e-9)
        usage: dict[str, float] = {}
        for name, process in self.processes.items():
            used = tree_cpu_seconds(process.pid) - self._before[name]
            usage[name] = round(100 * used / elapsed, 1)
        postgres = _postgres_seconds() - self._before["postgres"]
        if postgres > 0:
            usage["postgres"] = round(100 * postgres / elapsed, 1)
        busy, total = _machine_jiffies()
        if total > self._machine[1]:
            usage["machine"] = round(
                100 * (busy - self._machine[0]) / (total - self._machine[1]), 1
            )
        return usage


def machine_load() -> float:
    return os.getloadavg()[0]
