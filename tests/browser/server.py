"""A real ``hetuflow-server start --local-agent`` process on a free port, for end-to-end tests.

The server runs in its own process group (its local agent's shell tasks too), on a fresh SQLite
file, with the environment's hetuflow settings removed so nothing leaks in from the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

START_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API; raise on an error status; return the JSON body (or None)."""
        response = httpx.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def wait_for(self, what: str, check: Any, deadline_seconds: float = 30.0) -> Any:
        """Poll ``check()`` until it returns a truthy value (returned) or the deadline passes."""
        deadline = time.monotonic() + deadline_seconds
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}\n--- server log ---\n{self.log()}"
                )
            time.sleep(0.1)


def _environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HETUFLOW_") and key != "DATABASE_URL"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"hetuflow-server exited with {process.returncode}")
    try:
        if httpx.get(url + "/readyz", timeout=2).status_code != 200:
            return False
        agents = httpx.get(url + "/api/agents", timeout=2).json()["items"]
    except httpx.HTTPError:
        return False
    return any(agent["status"] == "online" for agent in agents)


@contextlib.contextmanager
def run_server(workdir: Path, *extra_args: str) -> Iterator[ServerProcess]:
    """Start the server with its local agent; yield once it is ready and the agent is online."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("hetuflow-server")),
        "start",
        "--bind",
        f"127.0.0.1:{port}",
        "--database-url",
        f"sqlite:///{workdir / 'hetuflow.db'}",
        "--local-agent",
        *extra_args,
    ]
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(url=url, process=process, log_path=log_path)
    try:
        try:
            server.wait_for(
                "the server and its local agent",
                lambda: _ready(url, process),
                START_DEADLINE_SECONDS,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- server log ---\n{server.log()}") from None
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group; SIGKILL what is left after the deadline."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_DEADLINE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
