"""Reports: what an agent says about its attempts (starts, progress, logs, results, heartbeats).

Each report is checked against the attempts the connection holds, turned into domain objects
and queued on the ResultWriter; nothing here waits for the database. A report about an attempt
the agent does not hold gets ``TaskCancel(reason="superseded")``, except late log lines and
progress of an attempt it has just reported finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from hetuflow.clock import Clock
from hetuflow.models import AttemptOutcome, AttemptRef, AttemptResult, AttemptStart, LogLine
from hetuflow.protocol import (
    AgentHeartbeat,
    TaskLogs,
    TaskOutcomeField,
    TaskProgress,
    TaskStarted,
    parse_uuid,
)
from hetuflow.server.registry import AgentConnection
from hetuflow.server.results import ResultWriter

BadFrame = Callable[[AgentConnection, str, str, str | None, str | None], None]


class Reports:
    def __init__(self, clock: Clock, results: ResultWriter, bad_frame: BadFrame) -> None:
        self._clock = clock
        self._results = results
        self._bad_frame = bad_frame

    def _task_id(self, connection: AgentConnection, text: str, message_type: str) -> UUID | None:
        task_id = parse_uuid(text)
        if task_id is None:
            self._bad_frame(
                connection,
                "invalid_task_id",
                f"task_id {text!r} is not a task id",
                message_type,
                text[:100],
            )
        return task_id

    def results(
        self,
        connection: AgentConnection,
        entries: tuple[TaskOutcomeField, ...] | list[TaskOutcomeField],
        message_type: str,
    ) -> None:
        now = self._clock.now()
        agent_id = connection.agent_id
        assert agent_id is not None
        for entry in entries:
            task_id = self._task_id(connection, entry.task_id, message_type)
            if task_id is None:
                continue
            attempt = entry.attempt
            held = connection.held.get(task_id)
            if attempt is None:
                if held is None:
                    self._bad_frame(
                        connection,
                        "unknown_attempt",
                        "this agent holds no attempt of that task; a result for an earlier "
                        "attempt must name it in 'attempt'",
                        message_type,
                        entry.task_id,
                    )
                    continue
                attempt = held[0]
            connection.finished(task_id, attempt)
            outcome = AttemptOutcome(entry.resolved_outcome())
            error = None if entry.error is None else storable_text(entry.error)
            if error is None and entry.exit_code and outcome is not AttemptOutcome.SUCCEEDED:
                error = f"exit code {entry.exit_code}"
            self._results.add_result(
                AttemptResult(
                    ref=AttemptRef(task_id, attempt, agent_id),
                    outcome=outcome,
                    result=storable_json(entry.result),
                    error=error,
                    finished_at=aware(entry.finished_at, now),
                    # A start folded into the result is written with it (one transaction).
                    started_at=None if entry.started_at is None else aware(entry.started_at, now),
                ),
                connection,
            )

    def started(self, connection: AgentConnection, message: TaskStarted) -> None:
        task_id = self._task_id(connection, message.task_id, message.type)
        if task_id is None:
            return
        assert connection.agent_id is not None
        held = connection.held.get(task_id)
        self._results.add_start(
            AttemptStart(
                ref=AttemptRef(task_id, message.attempt, connection.agent_id),
                started_at=aware(message.started_at, self._clock.now()),
            ),
            held[1] if held is not None else "unknown",
            connection,
        )

    def progress(self, connection: AgentConnection, message: TaskProgress) -> None:
        task_id = self._task_id(connection, message.task_id, message.type)
        if task_id is None:
            return
        assert connection.agent_id is not None
        if connection.holds(task_id, message.attempt):
            ref = AttemptRef(task_id, message.attempt, connection.agent_id)
            self._results.add_progress(ref, message.progress)
        elif (task_id, message.attempt) not in connection.recently_finished:
            connection.send_cancel(task_id, message.attempt, "superseded")

    def logs(self, connection: AgentConnection, message: TaskLogs) -> None:
        now = self._clock.now()
        max_line_bytes = self._results.max_log_line_bytes
        lines: list[LogLine] = []
        for entry in message.lines:
            task_id = self._task_id(connection, entry.task_id, message.type)
            if task_id is None:
                continue
            attempt = entry.attempt
            if (
                not connection.holds(task_id, attempt)
                and (task_id, attempt) not in connection.recently_finished
            ):
                connection.send_cancel(task_id, attempt, "superseded")
                continue
            text = cut_log_line(storable_text(entry.line), max_line_bytes)
            lines.append(LogLine(task_id, attempt, entry.stream, text, aware(entry.at, now)))
        # The attempt's log budget is charged when the lines are written (by the Store, with
        # the attempt: it holds across nodes and restarts).
        self._results.add_logs(lines)

    def heartbeat(self, connection: AgentConnection, message: AgentHeartbeat) -> None:
        if message.running is None:
            return
        for item in message.running:
            task_id = parse_uuid(item.task_id)
            if task_id is None or connection.holds(task_id, item.attempt):
                continue
            if (task_id, item.attempt) not in connection.recently_finished:
                connection.send_cancel(task_id, item.attempt, "superseded")


def aware(value: datetime | None, default: datetime) -> datetime:
    """``value`` as aware UTC; ``default`` when absent, without an offset or out of range
    (not trusted)."""
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        return default
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return default


def cut_log_line(line: str, max_bytes: int) -> str:
    """``line`` cut to at most ``max_bytes`` UTF-8 bytes (``[scheduler] max_log_line_bytes``),
    saying so."""
    if len(line) * 4 <= max_bytes:
        return line
    encoded = line.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return line
    suffix = f" …[cut at {max_bytes} bytes]"
    keep = max_bytes - len(suffix.encode())
    return encoded[:keep].decode("utf-8", "ignore") + suffix


# --- what an agent reports must fit in both databases --------------------------------------

MAX_RESULT_DEPTH = 64
_INT64 = 2**63


def storable_text(text: str) -> str:
    """``text`` without NUL characters (neither database stores them): each becomes U+FFFD.
    (Lone surrogates never get here: the frame decoder refuses them.)"""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def storable_json(value: Any, depth: int = 0) -> Any:
    """An agent's result made storable instead of poisoning a batch write: NUL in text is
    replaced, integers beyond 64 bits become strings, NaN and infinities become null, and
    nesting deeper than ``MAX_RESULT_DEPTH`` is cut (replaced by null)."""
    if depth > MAX_RESULT_DEPTH:
        return None
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [storable_json(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {
            storable_text(str(key)): storable_json(item, depth + 1) for key, item in value.items()
        }
    return storable_text(str(value))
