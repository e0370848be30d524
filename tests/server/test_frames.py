"""Every server -> agent frame comes from a builder in ``protocol.py``: each builder's frame,
encoded as the server sends it, decodes as the model the agent reads; the close codes of
docs/protocol.md are the ones ``CloseCode`` names."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hetuflow.models import ClaimedTask, Priority
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentRegistered,
    CloseCode,
    DispatchedTask,
    Error,
    Ping,
    RunningAttempt,
    TaskCancel,
    TaskDispatch,
    agent_registered_frame,
    decode_server_message,
    dispatched_task_frame,
    encode_frame,
    error_frame,
    ping_frame,
    task_cancel_frame,
    task_dispatch_frame,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
TASK = ClaimedTask(
    uuid.uuid4(),
    "n",
    "t",
    {"k": [1, "x"]},
    Priority.HIGH,
    2.5,
    T0,
    parents={"a": {"r": 1}},
    max_retries=3,
    cron_job_id=uuid.uuid4(),
    cron_tick_at=T0,
    workflow_id=uuid.uuid4(),
    step="b",
    broadcast_of=uuid.uuid4(),
)


def test_a_dispatch_frame_decodes_as_task_dispatch_with_every_field() -> None:
    later = T0 + timedelta(seconds=3)
    plain = TASK._replace(
        parents=None,
        max_retries=0,
        cron_job_id=None,
        cron_tick_at=None,
        workflow_id=None,
        broadcast_of=None,
    )
    frame = task_dispatch_frame(
        [dispatched_task_frame(TASK, 2, later), dispatched_task_frame(plain, 1, None)]
    )
    decoded = decode_server_message(encode_frame(frame))
    assert decoded == TaskDispatch(
        tasks=[
            DispatchedTask(
                task_id=str(TASK.id),
                attempt=2,
                name="n",
                task_type="t",
                payload={"k": [1, "x"]},
                priority="high",
                timeout_seconds=2.5,
                start_at=later,
                scheduled_at=T0,
                max_retries=3,
                parents={"a": {"r": 1}},
                cron_job_id=str(TASK.cron_job_id),
                cron_tick_at=T0,
                workflow_id=str(TASK.workflow_id),
                step="b",
                broadcast_of=str(TASK.broadcast_of),
            ),
            DispatchedTask(
                task_id=str(TASK.id),
                attempt=1,
                name="n",
                task_type="t",
                payload={"k": [1, "x"]},
                priority="high",
                timeout_seconds=2.5,
                scheduled_at=T0,
                max_retries=0,
            ),
        ]
    )
    bare = dispatched_task_frame(plain, 1, None)
    for absent in ("parents", "cron_job_id", "cron_tick_at", "workflow_id", "step", "broadcast_of"):
        assert absent not in bare  # absent, not null


def test_cancel_error_and_ping_frames_decode() -> None:
    task_id = uuid.uuid4()
    cancel = encode_frame(task_cancel_frame(task_id, 3, "superseded"))
    assert decode_server_message(cancel) == TaskCancel(
        task_id=str(task_id), attempt=3, reason="superseded"
    )
    error = encode_frame(error_frame("bad", "no", message_type="TaskResult", task_id="x"))
    assert decode_server_message(error) == Error(
        code="bad", message="no", message_type="TaskResult", task_id="x"
    )
    assert decode_server_message(encode_frame(error_frame("bad", "no"))) == Error(
        code="bad", message="no"
    )
    assert decode_server_message(encode_frame(ping_frame(T0))) == Ping(timestamp=T0)


def test_agent_registered_decodes_with_the_superseded_attempts() -> None:
    agent_id = uuid.uuid4()
    frame = agent_registered_frame(
        agent_id,
        "a",
        heartbeat_interval_seconds=5.0,
        now=T0,
        superseded=[{"task_id": "t1", "attempt": 2}],
    )
    assert frame["server_time"] == "2030-01-01T12:00:00.250000+00:00"
    assert decode_server_message(encode_frame(frame)) == AgentRegistered(
        agent_id=str(agent_id),
        name="a",
        protocol_version=PROTOCOL_VERSION,
        heartbeat_interval_seconds=5.0,
        server_time=T0,
        superseded=[RunningAttempt(task_id="t1", attempt=2)],
    )
    plain = agent_registered_frame(agent_id, "a", heartbeat_interval_seconds=5.0, now=T0)
    assert plain["superseded"] == []


def test_the_documented_close_codes_are_the_named_ones() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    closing = doc[doc.index("## Closing") :]
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", closing, flags=re.M)}
    never_sent = {CloseCode.NO_STATUS, CloseCode.ABNORMAL}
    assert documented == {int(code) for code in CloseCode} - never_sent
