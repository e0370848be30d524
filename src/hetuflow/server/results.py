"""ResultWriter: what agents report, written to the Store in batches (group commit).

Starts, results, log lines and progress from every connection of the node are queued in
memory and written by one loop: one ``start_attempts``, one ``finish_attempts``, one
``append_logs`` and one ``set_progress`` call per flush, whatever the number of agents and
tasks. When the loop is idle a report is written at once; under load reports pile up while a
flush is in progress and the next flush takes all of them. Nothing is dropped when the
database is unavailable (``StoreUnavailable``): what is not written yet goes back to the head
of the queue and is retried with backoff.

One bad report cannot hold up the others: when the database refuses a batch for any other
reason (a value it will not store), the batch is split in halves until the refused reports
are found; the rest is written. A refused result is recorded as a failed attempt with an
error saying why (or, if even that is refused, dropped); a refused start, log line or progress
value is dropped. Each one gets a log line (task, attempt, error), and the agent, if the
report came with its connection, an ``Error`` (``report_refused``).

A start or result the Store rejects belongs to a superseded attempt: the connection that sent
it gets ``TaskCancel(reason="superseded")`` so the agent stops that work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from hetuflow.clock import Clock
from hetuflow.errors import StoreUnavailable
from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    LogBudget,
    LogLine,
)
from hetuflow.server.metrics import Metrics
from hetuflow.server.registry import AgentConnection
from hetuflow.server.resilience import StoreRetry
from hetuflow.store.base import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

REFUSED_ERROR_CHARS = 300


class ResultWriter:
    """Batches agent reports into Store calls. ``run`` is an engine loop."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        budget: LogBudget,
        on_finished: Callable[[bool], Awaitable[None]],
        *,
        max_log_line_bytes: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self.budget = budget
        """Charged by the Store with the attempt (not here), so it holds across nodes."""
        self.max_log_line_bytes = max_log_line_bytes
        self._on_finished = on_finished
        self._starts: list[tuple[AttemptStart, str, AgentConnection]] = []
        self._results: list[tuple[AttemptResult, AgentConnection]] = []
        self._logs: list[LogLine] = []
        self._progress: dict[tuple[UUID, int], tuple[AttemptRef, float]] = {}
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False
        self._retry = StoreRetry(
            "writing agent reports", metrics=metrics, operation="write_reports", log=logger
        )

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
        """Wait until everything queued before this call is written (or the timeout).

        ``StoreUnavailable`` if the timeout passes while the database is unavailable: a
        caller about to compare the store with what agents report must not act on a store
        that lacks their results (it would release attempts that in fact finished)."""
        if not self.pending and not self._waiters and not self._flushing:
            return  # (a flush in flight holds reports taken off the queues)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_seconds):
                await waiter
        except TimeoutError:
            if self._retry.failing:
                raise StoreUnavailable(
                    f"agent reports not written within {timeout_seconds:g} s"
                ) from None
            logger.warning("reports not written within %.1f s; carrying on", timeout_seconds)

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        retry = self._retry
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as error:
                await retry.backoff(error)
                self._wake.set()
            else:
                retry.succeeded()

    async def flush(self) -> None:
        """Write everything queued. On failure the unwritten part is queued again (reports
        the database refuses are not: see the module's docstring)."""
        waiters, self._waiters = self._waiters, []
        starts, self._starts = self._starts, []
        results, self._results = self._results, []
        logs, self._logs = self._logs, []
        progress_by_ref, self._progress = self._progress, {}
        progress = list(progress_by_ref.values())
        self._flushing = True
        try:
            # Each list loses the reports written (or refused) as it goes.
            await self._write_isolated(starts, self._write_starts, self._start_refused)
            # Log lines and progress before results: a task seen finished has all its lines.
            await self._write_isolated(logs, self._write_logs, self._log_refused)
            await self._write_isolated(progress, self._store.set_progress, self._progress_refused)
            await self._write_isolated(results, self._write_results, self._result_refused)
        except BaseException:
            self._starts[:0] = starts
            self._results[:0] = results
            self._logs[:0] = logs
            for ref, value in progress:
                self._progress.setdefault((ref.task_id, ref.attempt), (ref, value))
            self._waiters[:0] = waiters
            raise
        finally:
            self._flushing = False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _write_starts(self, starts: list[tuple[AttemptStart, str, AgentConnection]]) -> None:
        accepted = await self._store.start_attempts([start for start, _, _ in starts])
        for (start, task_type, connection), ok in zip(starts, accepted, strict=True):
            if ok:
                self._metrics.task_started(task_type)
            else:
                self._metrics.report_fenced("start")
                connection.send_cancel(start.ref.task_id, start.ref.attempt, "superseded")

    async def _write_logs(self, lines: list[LogLine]) -> None:
        await self._store.append_logs(lines, budget=self.budget)

    # --- a report the database refuses ------------------------------------------------------

    async def _write_isolated(
        self,
        pending: list[T],
        write: Callable[[list[T]], Awaitable[object]],
        refused: Callable[[T, Exception], Awaitable[None]],
    ) -> None:
        """Write ``pending`` with ``write``, removing from it what is written or refused.

        ``StoreUnavailable`` propagates with ``pending`` holding exactly what is not written.
        Any other error means the database refuses something in the chunk: the chunk is
        halved until the refused report is alone, which goes to ``refused``; order is kept."""
        size = len(pending)
        while pending:
            chunk = pending[:size]
            try:
                await write(chunk)
            except StoreUnavailable:
                raise
            except Exception as error:
                if size > 1:
                    size //= 2
                    continue
                await refused(chunk[0], error)
            del pending[: len(chunk)]
            size = len(pending)

    def _refused(self, kind: str, task_id: UUID, attempt: int, error: Exception, fate: str) -> str:
        problem = _describe(error)
        self._metrics.database_error(f"refused_{kind}")
        logger.error(
            "the database refused the %s of task %s attempt %d; %s: %s",
            kind,
            task_id,
            attempt,
            fate,
            problem,
        )
        return f"the server could not store this {kind} ({fate}): {problem}"

    async def _start_refused(
        self, entry: tuple[AttemptStart, str, AgentConnection | None], error: Exception
    ) -> None:
        start, _, connection = entry
        ref = start.ref
        message = self._refused("start", ref.task_id, ref.attempt, error, "dropped")
        if connection is not None:
            connection.send_error(
                "report_refused", message, message_type="TaskStarted", task_id=str(ref.task_id)
            )

    async def _log_refused(self, line: LogLine, error: Exception) -> None:
        self._refused("log line", line.task_id, line.attempt, error, "dropped")

    async def _progress_refused(self, entry: tuple[AttemptRef, float], error: Exception) -> None:
        self._refused("progress", entry[0].task_id, entry[0].attempt, error, "dropped")

    async def _result_refused(
        self, entry: tuple[AttemptResult, AgentConnection], error: Exception
    ) -> None:
        """Record the attempt failed with an error saying why its result is missing (the task
        then retries or fails as for any failure); drop the result if even that is refused."""
        result, connection = entry
        ref = result.ref
        fate = "recorded the attempt as failed"
        stand_in = AttemptResult(
            ref=ref,
            outcome=AttemptOutcome.FAILED,
            error=f"the database refused this attempt's result: {_describe(error)}",
            finished_at=result.finished_at,
            started_at=result.started_at,
        )
        try:
            await self._write_results([(stand_in, connection)])
        except StoreUnavailable:
            raise
        except Exception as again:
            fate, error = "dropped", again
        message = self._refused("result", ref.task_id, ref.attempt, error, fate)
        connection.send_error(
            "report_refused", message, message_type="TaskResult", task_id=str(ref.task_id)
        )

    async def _write_results(self, results: list[tuple[AttemptResult, AgentConnection]]) -> None:
        outcomes = await self._store.finish_attempts(
            [result for result, _ in results], now=self._clock.now()
        )
        finished = False
        made_pending = False
        for (result, connection), outcome in zip(results, outcomes, strict=True):
            ref = result.ref
            if not outcome.accepted:
                self._metrics.report_fenced("result")
                connection.send_cancel(ref.task_id, ref.attempt, "superseded")
                continue
            finished = True
            made_pending = made_pending or outcome.made_pending
            task_type = outcome.task_type
            if task_type is not None:
                if result.started_at is not None:
                    self._metrics.task_started(task_type)
                self._metrics.task_finished(task_type, result.outcome.value, _run_seconds(result))
        if finished:
            await self._on_finished(made_pending)


def _describe(error: Exception) -> str:
    """The error as one short line of storable text (for logs, the agent and the task)."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(text) > REFUSED_ERROR_CHARS:
        text = text[: REFUSED_ERROR_CHARS - 1] + "…"
    return text


def _run_seconds(result: AttemptResult) -> float | None:
    """How long the attempt ran, when the agent said when it started (it folds its start into
    the result)."""
    if result.started_at is None or result.finished_at is None:
        return None
    return (result.finished_at - result.started_at).total_seconds()
