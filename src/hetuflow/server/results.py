"""ResultWriter: what agents report, written to the Store in batches (group commit).

Starts, results, log lines and progress from every connection of the node are queued in
memory and written by one loop: one ``start_attempts``, one ``finish_attempts``, one
``append_logs`` and one ``set_progress`` call per flush, whatever the number of agents and
tasks. When the loop is idle a report is written at once; under load reports pile up while a
flush is in progress and the next flush takes all of them. Nothing is dropped when the
database fails: the batch goes back to the head of the queue and is retried with backoff.

A start or result the Store rejects belongs to a superseded attempt: the connection that sent
it gets ``TaskCancel(reason="superseded")`` so the agent stops that work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

from hetuflow.clock import Clock
from hetuflow.models import AttemptRef, AttemptResult, AttemptStart, LogLine
from hetuflow.server.metrics import Metrics
from hetuflow.server.registry import AgentConnection
from hetuflow.store.base import Store

logger = logging.getLogger(__name__)

RETRY_DELAYS_SECONDS = (0.05, 0.2, 0.5, 1.0, 2.0)


class LogBudget:
    """Caps log volume per attempt: long lines are cut, and past the byte budget one marker
    line is kept and the rest dropped (so one chatty task cannot fill the disk)."""

    def __init__(self, max_bytes_per_attempt: int, max_line_bytes: int) -> None:
        self.max_bytes = max_bytes_per_attempt
        self.max_line_bytes = max_line_bytes
        self._used: dict[tuple[UUID, int], int] = {}

    def admit(self, task_id: UUID, attempt: int, line: str) -> str | None:
        """The line to store (possibly cut or replaced by the marker), or None to drop it."""
        key = (task_id, attempt)
        used = self._used.get(key, 0)
        if used < 0:
            return None  # the marker was written already
        encoded = line.encode("utf-8", "replace")
        if len(encoded) > self.max_line_bytes:
            suffix = f" …[cut at {self.max_line_bytes} bytes]"
            keep = self.max_line_bytes - len(suffix.encode())
            line = encoded[:keep].decode("utf-8", "ignore") + suffix
            encoded = line.encode("utf-8")
        if used + len(encoded) > self.max_bytes:
            self._used[key] = -1
            return (
                f"[hetuflow] log limit of {self.max_bytes} bytes for this attempt reached; "
                "further lines are dropped"
            )
        self._used[key] = used + len(encoded)
        return line

    def forget(self, task_id: UUID, attempt: int) -> None:
        self._used.pop((task_id, attempt), None)


class ResultWriter:
    """Batches agent reports into Store calls. ``run`` is an engine loop."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        budget: LogBudget,
        on_finished: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self.budget = budget
        self._on_finished = on_finished
        self._starts: list[tuple[AttemptStart, str, AgentConnection]] = []
        self._results: list[tuple[AttemptResult, AgentConnection]] = []
        self._logs: list[LogLine] = []
        self._progress: dict[tuple[UUID, int], tuple[AttemptRef, float]] = {}
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []

    # --- queueing (called by the gateway's readers; never awaits) ------------------------

    def add_start(self, start: AttemptStart, task_type: str, connection: AgentConnection) -> None:
        """Queue a start (a start folded into a result travels with the result)."""
        self._starts.append((start, task_type, connection))
        self._wake.set()

    def add_result(self, result: AttemptResult, connection: AgentConnection) -> None:
        self._results.append((result, connection))
        self._wake.set()

    def add_logs(self, lines: list[LogLine]) -> None:
        if lines:
            self._logs.extend(lines)
            self._wake.set()

    def add_progress(self, ref: AttemptRef, progress: float) -> None:
        self._progress[(ref.task_id, ref.attempt)] = (ref, progress)
        self._wake.set()

    @property
    def pending(self) -> bool:
        return bool(self._starts or self._results or self._logs or self._progress)

    async def drain(self, timeout_seconds: float = 5.0) -> None:
        """Wait until everything queued before this call is written (or the timeout)."""
        if not self.pending and not self._waiters:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_seconds):
                await waiter
        except TimeoutError:
            logger.warning("reports not written within %.1f s; carrying on", timeout_seconds)

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except Exception:
                self._metrics.database_error("write_reports")
                delay = RETRY_DELAYS_SECONDS[min(failures, len(RETRY_DELAYS_SECONDS) - 1)]
                failures += 1
                logger.exception("writing agent reports failed; retrying in %.2f s", delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def flush(self) -> None:
        """Write everything queued. On failure the unwritten part is queued again."""
        waiters, self._waiters = self._waiters, []
        starts, self._starts = self._starts, []
        results, self._results = self._results, []
        logs, self._logs = self._logs, []
        progress, self._progress = self._progress, {}
        try:
            if starts:
                await self._write_starts(starts)
                starts = []
            # Log lines and progress before results: a task seen finished has all its lines.
            if logs:
                await self._store.append_logs(logs)
                logs = []
            if progress:
                await self._store.set_progress(list(progress.values()))
                progress = {}
            if results:
                await self._write_results(results)
                results = []
        except BaseException:
            self._starts[:0] = starts
            self._results[:0] = results
            self._logs[:0] = logs
            for key, value in progress.items():
                self._progress.setdefault(key, value)
            self._waiters[:0] = waiters
            raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _write_starts(self, starts: list[tuple[AttemptStart, str, AgentConnection]]) -> None:
        accepted = await self._store.start_attempts([start for start, _, _ in starts])
        for (start, task_type, connection), ok in zip(starts, accepted, strict=True):
            if ok:
                self._metrics.task_started(task_type)
            else:
                connection.send_cancel(start.ref.task_id, start.ref.attempt, "superseded")

    async def _write_results(self, results: list[tuple[AttemptResult, AgentConnection]]) -> None:
        outcomes = await self._store.finish_attempts(
            [result for result, _ in results], now=self._clock.now()
        )
        finished = False
        for (result, connection), outcome in zip(results, outcomes, strict=True):
            ref = result.ref
            self.budget.forget(ref.task_id, ref.attempt)
            if not outcome.accepted:
                connection.send_cancel(ref.task_id, ref.attempt, "superseded")
                continue
            finished = True
            task = outcome.task
            if task is not None:
                if result.started_at is not None:
                    self._metrics.task_started(task.task_type)
                self._metrics.task_finished(
                    task.task_type, result.outcome.value, _run_seconds(task.started_at, result)
                )
        if finished:
            await self._on_finished()


def _run_seconds(started_at: datetime | None, result: AttemptResult) -> float | None:
    if started_at is None or result.finished_at is None:
        return None
    return (result.finished_at - started_at).total_seconds()
