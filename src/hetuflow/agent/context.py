"""What a handler gets besides the payload: the ``TaskContext``, and the exceptions it may raise.

A handler is ``handler(payload)`` or ``handler(payload, ctx)``. Through ``ctx`` it learns which
attempt it runs, writes log lines that stream to the server (``ctx.log``, or ``ctx.logger`` for
the ``logging`` API), reports progress and sees a cancel:

- async handlers are cancelled the asyncio way (``CancelledError`` at their next ``await``);
- sync handlers run in a thread and should poll ``ctx.cancelled`` (a ``threading.Event``).

``ctx.cancelled`` is set in both cases. Raising ``TaskFailed`` fails the attempt with a chosen
error (and optionally an exit code and a result); ``TaskTimedOut`` ends it ``timed_out``; any
other exception fails it with ``"<ExceptionType>: <message>"``. Both are defined in
``hetuflow.errors`` and exported by ``hetuflow.agent``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from hetuflow.protocol import LogEntry, TaskProgress

if TYPE_CHECKING:
    from hetuflow.agent.outbox import Outbox

TASK_LOGGER_NAME = "hetuflow.task"
TRUNCATED_MARK = " … [truncated]"


def cut_line(line: str, max_bytes: int) -> str:
    """``line`` cut to at most ``max_bytes`` UTF-8 bytes, marked when cut."""
    if len(line) * 4 <= max_bytes:
        return line
    encoded = line.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return line
    keep = max_bytes - len(TRUNCATED_MARK.encode())
    return encoded[:keep].decode("utf-8", "ignore") + TRUNCATED_MARK


class _TaskLogHandler(logging.Handler):
    """Sends records of ``ctx.logger`` to the server as log lines of that attempt."""

    def emit(self, record: logging.LogRecord) -> None:
        ctx = getattr(record, "hetuflow_task", None)
        if isinstance(ctx, TaskContext):
            try:
                ctx.log(self.format(record))
            except Exception:  # pragma: no cover - logging must never raise
                self.handleError(record)


def _task_logger() -> logging.Logger:
    logger = logging.getLogger(TASK_LOGGER_NAME)
    if not any(isinstance(handler, _TaskLogHandler) for handler in logger.handlers):
        handler = _TaskLogHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


class _ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.update(self.extra or {})
        kwargs["extra"] = extra
        return msg, kwargs


class TaskContext:
    """One attempt as its handler sees it."""

    __slots__ = (
        "_cancel_event",
        "_cancel_requested",
        "_logger",
        "_max_line_bytes",
        "_outbox",
        "_redact",
        "attempt",
        "broadcast_of",
        "cron_job_id",
        "cron_tick_at",
        "max_retries",
        "name",
        "parents",
        "payload",
        "priority",
        "scheduled_at",
        "started_at",
        "step",
        "task_id",
        "task_type",
        "timeout_seconds",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        task_id: str,
        attempt: int,
        name: str,
        task_type: str,
        payload: dict[str, Any],
        priority: str,
        timeout_seconds: float | None,
        outbox: Outbox,
        max_line_bytes: int,
        redact: Callable[[str], str] | None = None,
        parents: dict[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        max_retries: int | None = None,
        cron_job_id: str | None = None,
        cron_tick_at: datetime | None = None,
        workflow_id: str | None = None,
        step: str | None = None,
        broadcast_of: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.name = name
        self.task_type = task_type
        self.payload = payload
        self.priority = priority
        self.timeout_seconds = timeout_seconds
        self.parents: dict[str, Any] = parents or {}
        """A workflow step's parents' results, ``{step name: result}``; empty otherwise."""
        self.scheduled_at = scheduled_at
        """When the task was due (a retry: when the retry was due); None from an older
        server."""
        self.max_retries = max_retries
        """Retries the task's policy allows after failed or timed-out attempts (a lost
        attempt spends none); None from an older server."""
        self.cron_job_id = cron_job_id
        """The cron job that created the task; None otherwise."""
        self.cron_tick_at = cron_tick_at
        """The logical time of that cron run (which night a nightly job processes), not
        when it runs; None for a task no cron job created."""
        self.workflow_id = workflow_id
        self.step = step
        """The workflow and step name of a workflow step; None otherwise."""
        self.broadcast_of = broadcast_of
        """A broadcast child's parent task (the task created with ``dispatch: all``, whose
        ``GET /api/tasks/{id}/children`` lists every agent's child); None otherwise."""
        self.started_at: datetime | None = None
        self._outbox = outbox
        self._max_line_bytes = max_line_bytes
        self._redact = redact
        self._cancel_requested = False
        self._cancel_event: threading.Event | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt})"

    # --- logs ------------------------------------------------------------------------------

    def log(self, message: str, *, stream: Literal["log", "stdout", "stderr"] = "log") -> None:
        """Send one log line (several if ``message`` has newlines) to the server; any thread.

        ``stream`` is ``"log"``, ``"stdout"`` or ``"stderr"``. The agent's known secrets
        (its token…) are replaced by ``[redacted]``.
        """
        now = datetime.now(UTC)
        if self._redact is not None:
            message = self._redact(message)
        for line in message.splitlines() or [""]:
            self._outbox.log_line(
                LogEntry.model_construct(
                    task_id=self.task_id,
                    attempt=self.attempt,
                    stream=stream,
                    line=cut_line(line, self._max_line_bytes),
                    at=now,
                )
            )

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records stream to the server as this attempt's log lines.

        Records also propagate to the agent's own log (logger ``hetuflow.task``).
        """
        if self._logger is None:
            self._logger = _ContextAdapter(
                _task_logger(),
                {"hetuflow_task": self},
            )
        return self._logger

    def redact(self, text: str) -> str:
        """``text`` with the agent's known secrets replaced by ``[redacted]``."""
        return text if self._redact is None else self._redact(text)

    # --- progress --------------------------------------------------------------------------

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0.0 to 1.0, clamped); any thread. Only the latest is sent."""
        if fraction != fraction:  # NaN: nothing to report
            return
        report = TaskProgress(
            task_id=self.task_id,
            attempt=self.attempt,
            progress=min(max(float(fraction), 0.0), 1.0),
            message=self.redact(message) if message else message,
        )
        self._outbox.call_soon(self._outbox.progress, report)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress from an async handler (same as ``set_progress``)."""
        self.set_progress(fraction, message)

    # --- cancellation ----------------------------------------------------------------------

    @property
    def cancelled(self) -> threading.Event:
        """Set when the attempt is to stop (cancel, timeout, superseded, agent shutdown)."""
        if self._cancel_event is None:
            self._cancel_event = threading.Event()
            if self._cancel_requested:
                self._cancel_event.set()
        return self._cancel_event

    @property
    def is_cancelled(self) -> bool:
        return self._cancel_requested

    def request_cancel(self) -> None:
        """Set ``cancelled`` (called by the agent)."""
        self._cancel_requested = True
        if self._cancel_event is not None:
            self._cancel_event.set()
