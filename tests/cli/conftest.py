"""A real ``hetuflow-server start`` process on a free port with a temporary SQLite file, and a
way to run command lines exactly as a user types them (through bash, from that directory)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "hetuflow-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str
    directory: Path
    env: dict[str, str]

    def run(self, command_line: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command line verbatim with bash, in the server's directory."""
        return subprocess.run(
            ["bash", "-c", command_line],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def output(self) -> str:
        return Path(self.directory / "server.out").read_text()


def workdir(tmp_path: Path) -> Path:
    (tmp_path / "hetuflow-server").symlink_to(SHIM)
    return tmp_path


def client_env(url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HETUFLOW_")}
    env.pop("DATABASE_URL", None)
    env["HETUFLOW_SERVER"] = url
    env["COLUMNS"] = "200"
    return env


def launch(directory: Path, command_line: str, port: int, *, ready: bool = True) -> Running:
    url = f"http://127.0.0.1:{port}"
    env = client_env(url)
    server_env = {**env, "HETUFLOW_SERVER__BIND_ADDRESS": f"127.0.0.1:{port}"}
    with (directory / "server.out").open("w") as log:  # the child keeps its own handle
        process = subprocess.Popen(
            ["bash", "-c", command_line],
            cwd=directory,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    running = Running(process, url, directory, env)
    if ready:
        wait_ready(running)
    return running


def wait_ready(running: Running, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise AssertionError(f"the server exited:\n{running.output()}")
        try:
            if httpx.get(running.url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server did not become ready:\n{running.output()}")


def stop(running: Running) -> int:
    """SIGTERM the server's process group (whatever of it is left), SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.process.pid, signal.SIGTERM)
    try:
        running.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait()
    return running.process.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``./hetuflow-server start`` as in the seed (the port comes from the environment)."""
    directory = workdir(tmp_path_factory.mktemp("server"))
    running = launch(directory, "./hetuflow-server start", free_port())
    yield running
    stop(running)
