"""Outgoing messages, batched into as few frames as possible and kept across reconnects.

Everything the agent says after registration goes through the ``Outbox``; one writer
(``Outbox.pump``) sends it. A flush sends, in this order: control messages one per frame
(``TaskAccepted``, ``TaskStarted``, the latest ``TaskProgress`` of each attempt, ``Pong``,
``AgentHeartbeat``, ``AgentDraining``, an updated ``AgentCapabilities``), then the log lines
as ``TaskLogs``, then the results as one ``TaskResult`` or a ``TaskResults``. Results and logs
wake the writer at once or after ``log_flush_seconds``; a result waits only while the next
turn of the event loop brings more (at most ``MAX_GATHER_TURNS`` turns), so results finishing
together share a frame and a lone one is not delayed.

An attempt whose result is in the same flush as its unsent ``TaskAccepted``/``TaskStarted``
sends only the result (which carries ``started_at``): the protocol allows a result without a
start, and a quick task then costs one batched entry instead of three frames.

While disconnected, results, log lines, starts and progress stay buffered and go out after the
next registration; pongs and heartbeats of the old connection are dropped.

Results handed to a connection that then ends abnormally (no close frame: the node died, the
network failed) may never have been written: the last ``RESEND_WINDOW_SECONDS`` of them are
sent again after the next registration (``resend_recent``). The server takes a result at
most once (a repeat is fenced like a stale one), so a resend costs a rejected entry at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from hetuflow.protocol import (
    AgentCapabilities,
    AgentDraining,
    AgentHeartbeat,
    LogEntry,
    Pong,
    TaskAccepted,
    TaskLogs,
    TaskOutcomeField,
    TaskProgress,
    TaskResult,
    TaskResults,
    TaskStarted,
    encode,
)

log = logging.getLogger("hetuflow.agent")

AttemptKey = tuple[str, int]
Control = TaskAccepted | TaskStarted | Pong | AgentHeartbeat | AgentDraining | AgentCapabilities
MAX_ENTRIES_PER_FRAME = 2000
MAX_GATHER_TURNS = 4
"""A flush waits while each turn of the event loop adds more, at most this many turns."""
RESEND_WINDOW_SECONDS = 10.0
"""Results sent this long before a connection ended abnormally are sent again."""
MAX_RESENT_RESULTS = 10_000


class Outbox:
    """Buffers and batches outgoing messages; ``pump`` sends them over one connection."""

    def __init__(self, *, log_flush_seconds: float = 0.02, max_log_lines: int = 100_000) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._control: list[Control] = []
        self._progress: dict[AttemptKey, TaskProgress] = {}
        self._results: list[TaskOutcomeField] = []
        self._sent: deque[tuple[float, TaskOutcomeField]] = deque(maxlen=MAX_RESENT_RESULTS)
        """Results handed to the current connection in the last ``RESEND_WINDOW_SECONDS``."""
        self._logs: deque[LogEntry] = deque()
        self._thread_logs: deque[LogEntry] = deque()
        self._thread_wake_pending = False
        self._log_timer: asyncio.TimerHandle | None = None
        self._added = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._log_flush_seconds = log_flush_seconds
        self._max_log_lines = max_log_lines
        self.dropped_log_lines = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that owns this outbox (log lines may come from other threads)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    # --- adding (event-loop thread unless said otherwise) -----------------------------------

    def control(self, message: Control) -> None:
        self._control.append(message)
        self._poke()

    def progress(self, message: TaskProgress) -> None:
        self._progress[(message.task_id, message.attempt)] = message
        self._poke()

    def result(self, entry: TaskOutcomeField) -> None:
        self._results.append(entry)
        self._poke()

    def log_line(self, entry: LogEntry) -> None:
        """Add a log line; safe to call from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._logs.append(entry)
            self._trim_logs()
            self._schedule_log_flush()
            return
        self._thread_logs.append(entry)
        if not self._thread_wake_pending and self._loop is not None:
            self._thread_wake_pending = True
            with contextlib.suppress(RuntimeError):  # a closed loop: the agent is gone
                self._loop.call_soon_threadsafe(self._take_thread_logs)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the outbox's loop; from any thread."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(callback, *args)

    def _take_thread_logs(self) -> None:
        self._thread_wake_pending = False
        while self._thread_logs:
            self._logs.append(self._thread_logs.popleft())
        self._trim_logs()
        self._schedule_log_flush()

    def _trim_logs(self) -> None:
        excess = len(self._logs) - self._max_log_lines
        if excess > 0:
            for _ in range(excess):
                self._logs.popleft()
            if self.dropped_log_lines == 0:
                log.warning("log buffer full (%d lines): dropping the oldest", self._max_log_lines)
            self.dropped_log_lines += excess

    def _schedule_log_flush(self) -> None:
        self._idle.clear()
        if self._log_timer is None and self._loop is not None and not self._wake.is_set():
            self._log_timer = self._loop.call_later(self._log_flush_seconds, self._log_due)

    def _log_due(self) -> None:
        self._log_timer = None
        self._wake.set()

    def _poke(self) -> None:
        self._added += 1
        self._idle.clear()
        self._wake.set()

    # --- reconnects ------------------------------------------------------------------------

    def forget_connection(self, held: Collection[AttemptKey]) -> None:
        """Drop what only meant something to the old connection (pongs, heartbeats, drains,
        messages about attempts no longer held). Results and logs stay."""
        self._control = [
            message
            for message in self._control
            if isinstance(message, TaskAccepted | TaskStarted)
            and (message.task_id, message.attempt) in held
        ]
        self._progress = {key: value for key, value in self._progress.items() if key in held}
        self._sent.clear()  # the old connection's node had them (or resend_recent took them)

    def resend_recent(self) -> int:
        """The connection ended abnormally: put the results sent on it in the last
        ``RESEND_WINDOW_SECONDS`` back in front of the buffered ones, to go out again after
        the next registration (the node may have died before writing them). Returns how
        many."""
        cutoff = time.monotonic() - RESEND_WINDOW_SECONDS
        buffered = {(entry.task_id, entry.attempt) for entry in self._results}
        recent = [
            entry
            for at, entry in self._sent
            if at >= cutoff and (entry.task_id, entry.attempt) not in buffered
        ]
        self._sent.clear()
        if recent:
            self._results[:0] = recent
            self._poke()
        return len(recent)

    @property
    def pending(self) -> bool:
        return bool(
            self._control or self._progress or self._results or self._logs or self._thread_logs
        )

    async def wait_idle(self) -> None:
        """Until everything added so far has been handed to the connection."""
        while self.pending or not self._idle.is_set():
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    # --- sending ---------------------------------------------------------------------------

    def _take_frames(self) -> tuple[list[str], list[TaskOutcomeField]]:
        """Encode everything buffered into frames; returns them and the results they carry."""
        results, self._results = self._results, []
        finished = {(entry.task_id, entry.attempt) for entry in results}
        frames: list[str] = []
        for message in self._control:
            if (
                isinstance(message, TaskAccepted | TaskStarted)
                and (message.task_id, message.attempt) in finished
            ):
                continue  # folded into the result
            frames.append(encode(message))
        self._control = []
        for key, progress in self._progress.items():
            if key not in finished:
                frames.append(encode(progress))
        self._progress = {}
        logs = self._logs
        self._logs = deque()
        while logs:
            count = min(len(logs), MAX_ENTRIES_PER_FRAME)
            frames.append(encode(TaskLogs(lines=[logs.popleft() for _ in range(count)])))
        if len(results) == 1:
            frames.append(encode(TaskResult.model_construct(**dict(results[0]))))
        else:
            for start in range(0, len(results), MAX_ENTRIES_PER_FRAME):
                batch = results[start : start + MAX_ENTRIES_PER_FRAME]
                frames.append(encode(TaskResults(results=batch)))
        return frames, results

    async def _gather(self) -> None:
        """Yield to the loop while that brings more to send (tasks dispatched in this turn
        finish in the next), so they share a flush; a few turns at most."""
        seen = -1
        turns = 0
        while seen != self._added and turns < MAX_GATHER_TURNS:
            seen = self._added
            turns += 1
            await asyncio.sleep(0)

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Send buffered messages over one connection until cancelled or the send fails.

        Results of a flush that could not be sent are put back for the next connection.
        """
        while True:
            if not self.pending:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._log_timer is not None:
                self._log_timer.cancel()
                self._log_timer = None
            await self._gather()
            frames, results = self._take_frames()
            try:
                for frame in frames:
                    await send(frame)
            except BaseException:
                self._results[:0] = results  # resent after reconnect; the server fences dupes
                raise
            if results:
                self._remember_sent(results)

    def _remember_sent(self, results: list[TaskOutcomeField]) -> None:
        now = time.monotonic()
        while self._sent and self._sent[0][0] < now - RESEND_WINDOW_SECONDS:
            self._sent.popleft()
        self._sent.extend((now, entry) for entry in results)
