"""The create routes answer with ``task_json``: the same JSON as ``TaskOut``, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from hetuflow.models import PendingReason, Priority, RetryPolicy, Task, TaskStatus
from hetuflow.server.api.schemas import TaskOut, encode_json, task_json

AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def make(**changes: object) -> Task:
    values: dict[str, object] = {
        "id": uuid4(),
        "name": "n",
        "task_type": "t",
        "priority": Priority.HIGH,
        "payload": {"nested": {"list": [1, 2.5, True, None, "é"]}, "big": 2**62},
        "required_capabilities": ("chrome", "gpu"),
        "status": TaskStatus.PENDING,
        "scheduled_at": AT,
        "timeout_seconds": None,
        "retry": RetryPolicy(max_retries=2, backoff_seconds=7),
        "idempotency_key": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "agent_id": None,
        "cron_job_id": None,
        "cron_tick_at": None,
        "progress": None,
        "created_at": AT.replace(microsecond=0),
        "updated_at": AT,
        "started_at": None,
        "finished_at": None,
    }
    values.update(changes)
    return Task(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        (make(), PendingReason.QUEUED),
        (make(), None),
        (make(timeout_seconds=30, idempotency_key="k"), PendingReason.SCHEDULED),
        (
            make(
                status=TaskStatus.SUCCEEDED,
                result={"ok": [1, {"x": None}]},
                attempts=3,
                agent_id=uuid4(),
                cron_job_id=uuid4(),
                cron_tick_at=AT - timedelta(days=1),
                progress=1,
                started_at=AT,
                finished_at=AT + timedelta(seconds=1),
                timeout_seconds=0.5,
            ),
            PendingReason.QUEUED,  # not pending: no reason shown
        ),
        (make(status=TaskStatus.FAILED, error="boom", result="text", progress=0.25), None),
    ],
)
def test_task_json_is_task_out(task: Task, reason: PendingReason | None) -> None:
    assert encode_json(task_json(task, reason)) == TaskOut.of(task, reason).model_dump_json(
        by_alias=True
    ).encode("utf-8")
