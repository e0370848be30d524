"""The built-in shell runner with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hetuflow.agent import TaskContext, TaskFailed, TaskTimedOut, processes
from hetuflow.agent.environment import base_task_environment
from hetuflow.agent.outbox import Outbox
from hetuflow.agent.shell import run_shell
from hetuflow.agent.tracking import ProcessTracker, TrackingMethod
from hetuflow.errors import ShellPayloadInvalid
from hetuflow.protocol import LogEntry, TaskLogs, decode_agent_message

MAX_LINE = 1000


class Logs:
    """Collects the log lines an outbox sends, as the server would receive them."""

    def __init__(self) -> None:
        self.lines: list[LogEntry] = []
        self.changed = asyncio.Event()

    async def send(self, frame: str) -> None:
        message = decode_agent_message(frame)
        if isinstance(message, TaskLogs):
            self.lines.extend(message.lines)
            self.changed.set()

    def of(self, stream: str) -> list[str]:
        return [entry.line for entry in self.lines if entry.stream == stream]

    async def wait_for(self, stream: str, count: int = 1) -> list[str]:
        async with asyncio.timeout(10):
            while len(self.of(stream)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.of(stream)


@pytest.fixture
async def outbox_logs() -> AsyncIterator[tuple[Outbox, Logs]]:
    outbox = Outbox(log_flush_seconds=0.005)
    outbox.bind(asyncio.get_running_loop())
    logs = Logs()
    pump = asyncio.create_task(outbox.pump(logs.send))
    try:
        yield outbox, logs
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


def context(outbox: Outbox) -> TaskContext:
    return TaskContext(
        task_id="t-1",
        attempt=1,
        name="shell",
        task_type="shell",
        payload={},
        priority="normal",
        timeout_seconds=None,
        outbox=outbox,
        max_line_bytes=MAX_LINE,
    )


async def shell(
    outbox: Outbox,
    payload: dict[str, Any],
    grace: float = 5.0,
    tracker: ProcessTracker | None = None,
) -> dict[str, Any]:
    return await run_shell(
        payload,
        context(outbox),
        kill_grace_seconds=grace,
        max_line_bytes=MAX_LINE,
        base_env=base_task_environment(os.environ, []),
        tracker=tracker,
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


async def group_reaped(pgid: int, deadline_seconds: float = 5.0) -> bool:
    """Whether the group disappears entirely (zombies reaped by init) before the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_success_streams_both_streams_and_returns_the_exit_code(
    outbox_logs: tuple[Outbox, Logs],
) -> None:
    outbox, logs = outbox_logs
    result = await shell(outbox, {"command": "echo hello; echo world; echo oops >&2"})
    assert result["exit_code"] == 0
    assert result["stdout_tail"] == "hello\nworld"
    assert result["duration_seconds"] >= 0
    assert await logs.wait_for("stdout", 2) == ["hello", "world"]
    assert await logs.wait_for("stderr") == ["oops"]
    assert all(entry.task_id == "t-1" and entry.attempt == 1 for entry in logs.lines)


async def test_failure_carries_exit_code_and_stderr_tail(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, _ = outbox_logs
    with pytest.raises(TaskFailed) as failure:
        await shell(outbox, {"command": "echo partial; echo 'disk full' >&2; exit 3"})
    assert failure.value.exit_code == 3
    assert failure.value.message == "command exited with code 3; stderr: disk full"
    assert failure.value.result["stdout_tail"] == "partial"


async def test_args_env_and_cwd(outbox_logs: tuple[Outbox, Logs], tmp_path: Path) -> None:
    outbox, _ = outbox_logs
    result = await shell(
        outbox,
        {
            "args": ["/bin/sh", "-c", 'echo "$GREETING $HOME_SET"; pwd'],
            "env": {"GREETING": "hi", "HOME_SET": 1},
            "cwd": str(tmp_path),
        },
    )
    assert result["stdout_tail"] == f"hi 1\n{tmp_path}"
    inherited = await shell(outbox, {"args": ["/bin/sh", "-c", "echo $PATH"]})
    assert inherited["stdout_tail"] == os.environ["PATH"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "needs 'command'"),
        ({"command": "true", "args": ["true"]}, "not both"),
        ({"args": "true"}, "needs 'command'"),
        ({"command": "true", "cwd": "/no/such/dir"}, "is not a directory"),
        ({"command": "true", "timeout_seconds": -1}, "positive number"),
        ({"command": "true", "env": ["A=1"]}, "'env' must be an object"),
    ],
)
async def test_invalid_payload_is_refused(
    outbox_logs: tuple[Outbox, Logs], payload: dict[str, Any], problem: str
) -> None:
    outbox, _ = outbox_logs
    with pytest.raises(ShellPayloadInvalid, match=problem):
        await shell(outbox, payload)


async def test_missing_program_fails(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, _ = outbox_logs
    with pytest.raises(TaskFailed, match="cannot start '/no/such/program'"):
        await shell(outbox, {"args": ["/no/such/program"]})


async def test_long_lines_are_cut(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, logs = outbox_logs
    await shell(outbox, {"command": "head -c 300000 /dev/zero | tr '\\0' x; echo; echo next"})
    lines = await logs.wait_for("stdout", 2)
    assert lines[1] == "next"
    assert len(lines[0].encode()) <= MAX_LINE
    assert lines[0].endswith("[truncated]")
    assert lines[0].startswith("xxxx")


async def test_timeout_kills_the_whole_group(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, logs = outbox_logs
    started = time.monotonic()
    with pytest.raises(TaskTimedOut, match=r"timed out after 0.5 s"):
        await shell(
            outbox, {"command": "sleep 600 & echo $$ $!; sleep 600", "timeout_seconds": 0.5}
        )
    assert time.monotonic() - started < 4
    pgid, grandchild = map(int, (await logs.wait_for("stdout"))[0].split())
    assert not alive(grandchild)
    assert group_members(pgid) == []


async def test_cancel_of_sleep_600_leaves_no_process(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, logs = outbox_logs
    running = asyncio.create_task(shell(outbox, {"command": "sleep 600 & echo $$ $!; sleep 600"}))
    pgid, grandchild = map(int, (await logs.wait_for("stdout"))[0].split())
    assert alive(pgid)
    assert alive(grandchild)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not alive(grandchild)
    assert not alive(pgid)
    assert group_members(pgid) == []
    assert await group_reaped(pgid)


async def test_a_group_ignoring_sigterm_gets_sigkill_after_the_grace(
    outbox_logs: tuple[Outbox, Logs],
) -> None:
    outbox, logs = outbox_logs
    command = "trap '' TERM; sh -c \"trap '' TERM; sleep 600\" & echo $$ $!; wait"
    running = asyncio.create_task(shell(outbox, {"command": command}, grace=0.3))
    pgid, _ = map(int, (await logs.wait_for("stdout"))[0].split())
    started = time.monotonic()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert 0.3 <= time.monotonic() - started < 4
    assert group_members(pgid) == []


async def test_background_leftovers_are_stopped_when_the_command_exits(
    outbox_logs: tuple[Outbox, Logs],
) -> None:
    outbox, _ = outbox_logs
    started = time.monotonic()
    result = await shell(outbox, {"command": "sleep 600 & echo $!"})
    assert time.monotonic() - started < 4
    assert result["exit_code"] == 0
    assert not alive(int(result["stdout_tail"]))


async def test_killed_by_signal_is_named(outbox_logs: tuple[Outbox, Logs]) -> None:
    outbox, _ = outbox_logs
    with pytest.raises(TaskFailed, match="command killed by signal SIGKILL") as failure:
        await shell(outbox, {"command": "kill -9 $$"})
    assert failure.value.exit_code == -9


# --- daemons: processes that leave the task's process group -------------------------------------

DOUBLE_FORK = (
    "import os, sys, time\n"
    "if os.fork():\n    sys.exit(0)\n"
    "os.setsid()\n"
    "if os.fork():\n    os._exit(0)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(600)\n"
)


def daemonising(kind: str, pidfile: Path, then: str = "sleep 600") -> str:
    """A command that starts a daemon writing its pid to ``pidfile``, then runs ``then``."""
    if kind == "setsid":
        start = f"setsid sh -c 'sleep 600 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}' &"
    else:
        start = f'{sys.executable} -c "$DOUBLE_FORK" {pidfile}'
    return f"{start}\n{then}"


@pytest.fixture(params=["cgroup", "subreaper"])
async def tracker(request: pytest.FixtureRequest) -> AsyncIterator[ProcessTracker]:
    method: TrackingMethod = request.param
    tracker = ProcessTracker(method)
    try:
        await tracker.track("probe", 0)
    except RuntimeError:
        pytest.skip(f"{method} tracking is not possible on this machine")
    yield tracker
    tracker.close()


def read_pidfile(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(pidfile.read_text())


async def daemon_pid(pidfile: Path) -> int:
    """The daemon's pid, once it wrote it."""
    return await asyncio.to_thread(read_pidfile, pidfile)


@pytest.mark.parametrize("kind", ["setsid", "double_fork"])
async def test_cancel_stops_a_daemon_that_left_the_group(
    outbox_logs: tuple[Outbox, Logs], tracker: ProcessTracker, tmp_path: Path, kind: str
) -> None:
    outbox, _ = outbox_logs
    pidfile = tmp_path / "daemon.pid"
    payload = {"command": daemonising(kind, pidfile), "env": {"DOUBLE_FORK": DOUBLE_FORK}}
    running = asyncio.create_task(shell(outbox, payload, tracker=tracker))
    daemon = await daemon_pid(pidfile)
    try:
        assert alive(daemon)
        assert os.getsid(daemon) != os.getsid(0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert not alive(daemon)
        if tracker.method == "subreaper":
            assert processes.read(daemon) is None  # adopted by this process, and reaped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["setsid", "double_fork"])
async def test_timeout_and_exit_stop_a_daemon_that_left_the_group(
    outbox_logs: tuple[Outbox, Logs], tracker: ProcessTracker, tmp_path: Path, kind: str
) -> None:
    outbox, _ = outbox_logs
    pidfile = tmp_path / "daemon.pid"
    command = daemonising(kind, pidfile)
    payload = {"command": command, "env": {"DOUBLE_FORK": DOUBLE_FORK}, "timeout_seconds": 2}
    daemons = []
    try:
        with pytest.raises(TaskTimedOut):
            await shell(outbox, payload, tracker=tracker)
        daemons.append(await daemon_pid(pidfile))
        assert not alive(daemons[-1])
        pidfile.unlink()
        # the command exits at once, leaving its daemon: that is stopped as well
        exits = daemonising(kind, pidfile, then=f"until test -e {pidfile}; do sleep 0.02; done")
        payload = {"command": exits, "env": {"DOUBLE_FORK": DOUBLE_FORK}}
        result = await shell(outbox, payload, tracker=tracker)
        assert result["exit_code"] == 0
        daemons.append(await daemon_pid(pidfile))
        assert not alive(daemons[-1])
    finally:
        for daemon in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGKILL)


async def test_a_missing_program_fails_the_same_with_tracking(
    outbox_logs: tuple[Outbox, Logs], tracker: ProcessTracker
) -> None:
    outbox, _ = outbox_logs
    with pytest.raises(TaskFailed, match="cannot start '/no/such/program'"):
        await shell(outbox, {"args": ["/no/such/program"]}, tracker=tracker)
    with pytest.raises(TaskFailed, match="cannot start 'no-such-program-here'"):
        await shell(outbox, {"args": ["no-such-program-here"]}, tracker=tracker)
    result = await shell(outbox, {"args": ["echo", "found on PATH"]}, tracker=tracker)
    assert result["stdout_tail"] == "found on PATH"
