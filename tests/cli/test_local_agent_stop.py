"""``start --local-agent`` stops its agent's shell tasks with it: on SIGTERM the server gives
its agent time to drain and stop them, and a server that is SIGKILLed leaves an agent that
notices (its stdin pipe closes), drains and exits. No ``sleep 600`` of a task remains."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from hetuflow.client import Client

from .conftest import Running, free_port, launch, stop, workdir

DEADLINE_SECONDS = 30.0


def _processes_marked(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``HETUFLOW_TEST_MARK=marker``."""
    wanted = f"HETUFLOW_TEST_MARK={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
        except OSError:
            continue
        if wanted in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return False


def _wait(what: str, check: Callable[[], bool], running: Running) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{running.output()}"
        time.sleep(0.1)


def _start_sleep(tmp_path: Path) -> tuple[Running, int, str, list[int]]:
    """A server with its local agent running a ``sleep 600`` shell task; returns the server,
    the agent's pid, the task's marker and the task's processes."""
    running = launch(workdir(tmp_path), "./hetuflow-server start --local-agent", free_port())
    marker = uuid.uuid4().hex
    try:
        with Client(running.url) as client:
            _wait("the local agent", lambda: bool(client.list_agents(online=True)), running)
            task = client.submit(
                "shell", payload={"command": "sleep 600", "env": {"HETUFLOW_TEST_MARK": marker}}
            )
            _wait(
                "the task to run",
                lambda: client.get_task(task.id).status == "running",
                running,
            )
        _wait("the sleep to start", lambda: bool(_sleeps(marker)), running)
        threads = Path(f"/proc/{running.process.pid}/task").glob("*/children")
        [agent_pid] = [int(pid) for path in threads for pid in path.read_text().split()]
    except BaseException:
        stop(running)  # nothing of this server outlives a failed start
        _kill_left(_processes_marked(marker))
        raise
    return running, agent_pid, marker, _processes_marked(marker)


def _sleeps(marker: str) -> list[int]:
    return [pid for pid in _processes_marked(marker) if "sleep 600" in _command_line(pid)]


def _kill_left(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_the_server_stops_the_local_agents_shell_tasks(tmp_path: Path) -> None:
    running, agent_pid, marker, task_pids = _start_sleep(tmp_path)
    try:
        assert _sleeps(marker)
        running.process.send_signal(signal.SIGTERM)  # the server alone, not its group
        assert running.process.wait(timeout=DEADLINE_SECONDS) == 0, running.output()
        assert not _alive(agent_pid), "the server exited before its agent"
        assert not _sleeps(marker), running.output()
        assert not _processes_marked(marker)
    finally:
        stop(running)
        _kill_left(task_pids)


def test_a_local_agent_whose_server_was_killed_drains_and_exits(tmp_path: Path) -> None:
    running, agent_pid, marker, task_pids = _start_sleep(tmp_path)
    try:
        running.process.send_signal(signal.SIGKILL)  # the server alone: its agent is orphaned
        running.process.wait(timeout=DEADLINE_SECONDS)
        _wait("the orphaned agent to exit", lambda: not _alive(agent_pid), running)
        assert not _sleeps(marker), running.output()
        assert "standard input closed" in running.output()
    finally:
        stop(running)
        _kill_left([agent_pid, *task_pids])
