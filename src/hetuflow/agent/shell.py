"""The built-in ``shell`` task type: run a command in its own process group.

Payload::

    {"command": "make test"}                 # run with /bin/sh -c
    {"args": ["python", "-m", "job"]}        # run directly, no shell
    "env": {"K": "V"}                        # added to the task's minimal environment
    "cwd": "/srv/app"                        # working directory
    "timeout_seconds": 60                    # ends the attempt timed_out

stdout and stderr stream to the server line by line (long lines cut). Exit code 0 succeeds with
``{"exit_code": 0, "duration_seconds": …, "stdout_tail": …}``; another exit code fails with the
code and the tail of stderr in the error. The command runs in a new session (its own process
group); when it is stopped (cancel, timeout, agent shutdown) the whole group, and every process
the task's tracking (``agent/tracking.py``: a cgroup per task, else the agent as subreaper)
finds beyond the group, gets SIGTERM, then SIGKILL after the grace period. When the command
exits, whatever it left running is stopped the same way, so no process outlives its task, not
even a daemon that started its own session (``setsid``, a double fork). If the agent dies
without stopping it (SIGKILL), the agent's ``ShellWatchdog`` (``agent/watchdog.py``) stops the
group and the task's cgroup.

The command does not inherit the agent's environment: it gets ``base_env`` (the minimal set of
``agent/environment.py`` plus the agent's ``pass_env`` names), the payload's ``env``, and
``HETUFLOW_TASK_ID`` and ``HETUFLOW_TASK_ATTEMPT`` (the attempt's number), so a command can key
its side effects by attempt. Its output lines, and so the tails and the error, are scrubbed of
the secrets the agent knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from hetuflow.agent.context import TaskContext, cut_line
from hetuflow.agent.tracking import ProcessTracker, TaskProcesses, missing_program
from hetuflow.agent.watchdog import ShellWatchdog
from hetuflow.errors import ShellPayloadInvalid, TaskFailed, TaskTimedOut

STDOUT_TAIL_CHARS = 4000
STDERR_TAIL_CHARS = 2000
_GROUP_POLL_SECONDS = 0.02
PIPE_DRAIN_SECONDS = 2.0


def _parse(
    payload: Mapping[str, Any], base_env: Mapping[str, str]
) -> tuple[list[str], dict[str, str], str | None, float | None]:
    command = payload.get("command")
    args = payload.get("args")
    if command is not None and args is not None:
        raise ShellPayloadInvalid("shell payload: give either 'command' or 'args', not both")
    if isinstance(command, str) and command.strip():
        argv = ["/bin/sh", "-c", command]
    elif isinstance(args, list) and args and all(isinstance(arg, str) for arg in args):
        argv = list(args)
    else:
        raise ShellPayloadInvalid(
            "shell payload needs 'command' (a non-empty string) or 'args' (a list of strings)"
        )
    env = dict(base_env)
    extra_env = payload.get("env") or {}
    if not isinstance(extra_env, dict):
        raise ShellPayloadInvalid("shell payload: 'env' must be an object of strings")
    env.update({str(key): str(value) for key, value in extra_env.items()})
    cwd = payload.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not Path(cwd).is_dir()):
        raise ShellPayloadInvalid(f"shell payload: cwd {cwd!r} is not a directory")
    timeout = payload.get("timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ShellPayloadInvalid("shell payload: 'timeout_seconds' must be a positive number")
    return argv, env, cwd, float(timeout) if timeout is not None else None


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is alive (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _wait_gone(pgid: int, processes: TaskProcesses, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _group_alive(pgid) or processes.members():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_SECONDS)
    return True


class _Stream:
    """One output pipe: splits it into lines, sends each as a log line, keeps a tail."""

    def __init__(
        self,
        name: Literal["stdout", "stderr"],
        ctx: TaskContext,
        max_line_bytes: int,
        tail_chars: int,
    ) -> None:
        self.name: Literal["stdout", "stderr"] = name
        self.ctx = ctx
        self.max_line_bytes = max_line_bytes
        self.tail: deque[str] = deque()
        self.tail_chars = tail_chars
        self._tail_size = 0
        self._pending = b""
        self._skipping = False  # inside a line already cut

    def _emit(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        line = cut_line(self.ctx.redact(raw.decode("utf-8", "replace")), self.max_line_bytes)
        self.ctx.log(line, stream=self.name)
        self.tail.append(line)
        self._tail_size += len(line) + 1
        while self._tail_size > self.tail_chars and len(self.tail) > 1:
            self._tail_size -= len(self.tail.popleft()) + 1

    def feed(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for index, line in enumerate(lines):
            if self._skipping and index == 0:
                self._skipping = False
                continue
            self._emit(line)
        if len(self._pending) > self.max_line_bytes:
            if not self._skipping:
                self._emit(self._pending)  # cut and marked by cut_line
            self._skipping = True
            self._pending = b""

    def close(self) -> None:
        if self._pending and not self._skipping:
            self._emit(self._pending)
        self._pending = b""

    def text(self) -> str:
        text = "\n".join(self.tail)
        return text[-self.tail_chars :]


class _ShellProtocol(asyncio.SubprocessProtocol):
    """Feeds the pipes to their streams; tells when the process exited and the pipes closed.

    ``Process.wait()`` of asyncio also waits for the pipes, which a background process left by
    the command may hold open; this protocol sees the exit itself."""

    def __init__(self, out: _Stream, err: _Stream) -> None:
        self.streams = {1: out, 2: err}
        self.exited = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.streams[fd].feed(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self._open:
            self.streams[fd].close()
            self._open.discard(fd)
            if not self._open:
                self.pipes_closed.set()

    def process_exited(self) -> None:
        self.exited.set()


async def _wait_event(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_group(
    pgid: int, exited: asyncio.Event, grace_seconds: float, processes: TaskProcesses
) -> None:
    """SIGTERM process group ``pgid`` and the task's tracked ``processes``, SIGKILL them after
    ``grace_seconds``; return once the leader has exited and none of them is left."""
    if not exited.is_set() or _group_alive(pgid) or processes.members():
        _signal_group(pgid, signal.SIGTERM)
        processes.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        stopped = await _wait_event(exited, grace_seconds) and await _wait_gone(
            pgid, processes, max(deadline - time.monotonic(), 0.0)
        )
        if not stopped:
            _signal_group(pgid, signal.SIGKILL)
            processes.kill()
            await _wait_gone(pgid, processes, 5.0)
    await _wait_event(exited, 5.0)


async def _stop_shielded(
    pgid: int, exited: asyncio.Event, grace_seconds: float, processes: TaskProcesses
) -> None:
    """``stop_group`` that a second cancel cannot interrupt halfway (it SIGKILLs instead)."""
    stopping = asyncio.ensure_future(stop_group(pgid, exited, grace_seconds, processes))
    try:
        await asyncio.shield(stopping)
    except BaseException:
        _signal_group(pgid, signal.SIGKILL)
        processes.kill()
        raise


async def run_shell(
    payload: dict[str, Any],
    ctx: TaskContext,
    *,
    kill_grace_seconds: float,
    max_line_bytes: int,
    base_env: Mapping[str, str],
    watchdog: ShellWatchdog | None = None,
    tracker: ProcessTracker | None = None,
) -> dict[str, Any]:
    """Run the payload's command; see the module docstring. ``base_env`` is the environment
    the command starts from (never the agent's own: see ``agent/environment.py``);
    ``watchdog`` stops the command's process group (and cgroup) if the agent dies first;
    ``tracker`` finds the processes that left the group (without it: the group only)."""
    argv, env, cwd, timeout_seconds = _parse(payload, base_env)
    env["HETUFLOW_TASK_ID"] = str(ctx.task_id)
    env["HETUFLOW_TASK_ATTEMPT"] = str(ctx.attempt)
    started = time.monotonic()
    out = _Stream("stdout", ctx, max_line_bytes, STDOUT_TAIL_CHARS)
    err = _Stream("stderr", ctx, max_line_bytes, STDERR_TAIL_CHARS)
    loop = asyncio.get_running_loop()
    processes = (
        TaskProcesses() if tracker is None else await tracker.track(ctx.task_id, ctx.attempt)
    )
    command = processes.argv(argv)
    if command is not argv and missing_program(argv, env, cwd):
        await processes.release()
        raise TaskFailed(f"cannot start {argv[0]!r}: no such executable")
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ShellProtocol(out, err),
            *command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as error:
        await processes.release()
        raise TaskFailed(f"cannot start {argv[0]!r}: {error}") from None
    pgid = transport.get_pid()
    processes.started(pgid)
    timed_out = False
    try:
        if watchdog is not None:
            await watchdog.watch(pgid, processes.cgroup)
        try:
            async with asyncio.timeout(timeout_seconds):
                await protocol.exited.wait()
        except TimeoutError:
            timed_out = True
        # the command is done (or timed out): nothing of its group may outlive it
        await _stop_shielded(pgid, protocol.exited, kill_grace_seconds, processes)
        if not await _wait_event(protocol.pipes_closed, PIPE_DRAIN_SECONDS):
            ctx.log("output pipes still open after the command ended; stopped reading")
    except BaseException:
        # cancelled (cancel, execution timeout, agent shutdown): stop the whole group
        await _stop_shielded(pgid, protocol.exited, kill_grace_seconds, processes)
        raise
    finally:
        transport.close()
        await processes.release()
        if watchdog is not None:
            watchdog.release(pgid)
    duration = round(time.monotonic() - started, 3)
    returncode = transport.get_returncode()
    code = returncode if returncode is not None else -1
    details = {
        "exit_code": code,
        "duration_seconds": duration,
        "stdout_tail": out.text(),
    }
    if timed_out:
        raise TaskTimedOut(
            f"command timed out after {timeout_seconds:g} s", exit_code=code, result=details
        )
    if code == 0:
        return details
    details["stderr_tail"] = err.text()
    if code < 0:
        try:
            reason = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            reason = f"killed by signal {-code}"
    else:
        reason = f"exited with code {code}"
    tail = err.text()
    raise TaskFailed(
        f"command {reason}" + (f"; stderr: {tail}" if tail else ""), exit_code=code, result=details
    )
