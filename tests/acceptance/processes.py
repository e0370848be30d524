"""Real ``hetuflow-server`` and ``hetuflow-agent`` processes for the acceptance tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hetuflow.config import DatabaseConfig

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent

FAST_SCHEDULER = {
    "HETUFLOW_SCHEDULER__HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "HETUFLOW_SCHEDULER__RECONNECT_GRACE_SECONDS": "0.5",
    "HETUFLOW_SCHEDULER__DISPATCH_LOOKAHEAD_SECONDS": "0.5",
}


def database_url(database: DatabaseConfig) -> str:
    if database.kind == "postgres":
        return database.dsn
    return f"sqlite:///{Path(database.sqlite_path).resolve()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self, sig: int = signal.SIGTERM, timeout_seconds: float = 15.0) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no drain."""
        await self.stop(signal.SIGKILL)


@dataclass
class ServerProcess(Process):
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """Servers and agents started by one test; everything is stopped at the end."""

    def __init__(self, database: DatabaseConfig, workdir: Path, env: Mapping[str, str]) -> None:
        self.database = database
        self.workdir = workdir
        self.env = {**os.environ, **FAST_SCHEDULER, **env}
        self.env.pop("DATABASE_URL", None)
        self.processes: list[Process] = []
        self.servers: list[ServerProcess] = []
        self.ledger = workdir / "ledger.txt"
        self.env["HETUFLOW_ACK_LEDGER"] = str(self.ledger)

    async def _spawn(
        self, name: str, *argv: str, env: Mapping[str, str] | None = None
    ) -> tuple[asyncio.subprocess.Process, Path]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=HERE,
                env={**self.env, **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        return process, log

    async def server(
        self,
        name: str = "server",
        *,
        migrate: bool = True,
        node_id: str | None = None,
        port: int | None = None,
    ) -> ServerProcess:
        """Start a node (on ``port``, else a free one: a restarted node keeps its address)."""
        port = port or free_port()
        argv = [str(BIN / "hetuflow-server"), "start", "--bind", f"127.0.0.1:{port}"]
        argv += ["--database-url", database_url(self.database)]
        if not migrate:
            argv.append("--no-migrate")
        env = {"HETUFLOW_SERVER__NODE_ID": node_id} if node_id else None
        process, log = await self._spawn(name, *argv, env=env)
        server = ServerProcess(name, process, log, port)
        self.processes.append(server)
        self.servers.append(server)
        await self._ready(server)
        return server

    async def _ready(self, server: ServerProcess, timeout_seconds: float = 30.0) -> None:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            async with asyncio.timeout(timeout_seconds):
                while True:
                    if server.process.returncode is not None:
                        raise AssertionError(f"{server.name} exited:\n{server.output()}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            return
                    await asyncio.sleep(0.05)

    async def agent(
        self,
        name: str,
        *,
        server: ServerProcess | None = None,
        servers: tuple[ServerProcess, ...] = (),
        task_types: str = "shell",
        capabilities: str = "",
        slots: int = 2,
        modules: tuple[str, ...] = (),
    ) -> Process:
        """An agent connected to ``server`` (default: the first), or given every URL of
        ``servers`` (``--server`` repeated: the first that answers, then the others in turn)."""
        targets = servers or (server or self.servers[0],)
        argv = [str(BIN / "hetuflow-agent"), "start"]
        for target in targets:
            argv += ["--server", target.ws_url]
        argv += ["--name", name, "--task-types", task_types, "--max-concurrent", str(slots)]
        argv += ["--kill-grace-seconds", "1"]
        if capabilities:
            argv += ["--capabilities", capabilities]
        for module in modules:
            argv += ["--module", module]
        process, log = await self._spawn(name, *argv, env={"HETUFLOW_ACK_AGENT": name})
        agent = Process(name, process, log)
        self.processes.append(agent)
        return agent

    async def close(self) -> None:
        for process in reversed(self.processes):
            await process.stop()

    def logs(self) -> str:
        def tail(process: Process) -> str:
            lines = [line for line in process.output().splitlines() if "uvicorn.access" not in line]
            return "\n".join(lines[-60:])

        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in self.processes)


@contextlib.asynccontextmanager
async def cluster(
    database: DatabaseConfig, workdir: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    running = Cluster(database, workdir, env or {})
    try:
        yield running
    except BaseException:
        print(running.logs())  # shown by pytest for a failing test
        raise
    finally:
        await running.close()


class Api:
    """The REST API of one server, for the tests."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def create(self, **body: Any) -> str:
        body.setdefault("name", body.get("task_type", "t"))
        response = await self.http.post("/api/tasks", json=body)
        assert response.status_code == 201, response.text
        task_id: str = response.json()["id"]
        return task_id

    async def task(self, task_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait(
        self,
        task_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_seconds: float = 20.0,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout_seconds):
            while True:
                task = await self.task(task_id)
                if predicate(task):
                    return task
                await asyncio.sleep(0.05)

    async def wait_status(
        self, task_id: str, *statuses: str, timeout_seconds: float = 20.0
    ) -> dict[str, Any]:
        return await self.wait(task_id, lambda t: t["status"] in statuses, timeout_seconds)

    async def wait_agents_online(self, count: int, timeout_seconds: float = 15.0) -> None:
        async with asyncio.timeout(timeout_seconds):
            while True:
                response = await self.http.get("/api/agents")
                online = [a for a in response.json()["items"] if a["status"] == "online"]
                if len(online) >= count:
                    return
                await asyncio.sleep(0.05)

    async def attempts(self, task_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/tasks/{task_id}/attempts")
        assert response.status_code == 200, response.text
        body = response.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items

    async def logs(self, task_id: str) -> list[str]:
        response = await self.http.get(f"/api/tasks/{task_id}/logs")
        assert response.status_code == 200, response.text
        body = response.json()
        items = body["items"] if isinstance(body, dict) else body
        return [item["line"] for item in items]


@contextlib.asynccontextmanager
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        yield Api(http)


async def wait_gone(pid: int, timeout_seconds: float = 10.0) -> None:
    """Wait until no process ``pid`` exists (zombies of other parents count as gone)."""
    async with asyncio.timeout(timeout_seconds):
        while True:
            if not _alive(pid):
                return
            await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line
    return True
