"""Hypothesis strategies for hostile agent frames: random bytes and text, and valid messages
mutated (fields dropped, replaced by any JSON, wrong types, unknown ``type``, cut short)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

MESSAGE_TYPES = [
    "AgentCapabilities",
    "AgentHeartbeat",
    "TaskAccepted",
    "TaskStarted",
    "TaskProgress",
    "TaskLogs",
    "TaskResult",
    "TaskResults",
    "AgentDraining",
    "Pong",
]


def templates(task_id: str, attempt: int) -> list[dict[str, Any]]:
    """One valid message of each type, about the attempt ``(task_id, attempt)``."""
    ref = {"task_id": task_id, "attempt": attempt}
    return [
        {
            "type": "AgentCapabilities",
            "capabilities": {
                "capabilities": ["x"],
                "max_concurrent_tasks": 2,
                "supported_task_types": ["fuzz"],
            },
            "running": [ref],
        },
        {"type": "AgentHeartbeat", "timestamp": "2030-01-01T00:00:00Z", "running": [ref]},
        {"type": "TaskAccepted", **ref},
        {"type": "TaskStarted", **ref, "started_at": "2030-01-01T00:00:00Z"},
        {"type": "TaskProgress", **ref, "progress": 0.5, "message": "m"},
        {"type": "TaskLogs", "lines": [{**ref, "stream": "stdout", "line": "forged"}]},
        {"type": "TaskResult", **ref, "result": {"forged": True}, "error": None},
        {"type": "TaskResults", "results": [{**ref, "outcome": "succeeded"}]},
        {"type": "AgentDraining"},
        {"type": "Pong", "timestamp": "2030-01-01T00:00:00Z"},
    ]


@st.composite
def mutated(draw: st.DrawFn, task_id: str, attempt: int) -> dict[str, Any]:
    message = dict(draw(st.sampled_from(templates(task_id, attempt))))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        keys = sorted(message)
        action = draw(st.sampled_from(["drop", "replace", "add", "retype", "attempt", "id"]))
        if action == "drop" and keys:
            message.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            message[draw(st.sampled_from(keys))] = draw(JSON)
        elif action == "add":
            message[draw(st.text(max_size=12))] = draw(JSON)
        elif action == "retype":
            message["type"] = draw(st.sampled_from(MESSAGE_TYPES) | st.text(max_size=20))
        elif action == "attempt":
            message["attempt"] = draw(st.integers(min_value=-5, max_value=2**40))
        else:
            message["task_id"] = draw(st.uuids().map(str) | st.text(max_size=40))
    return message


def frames(task_id: str, attempt: int) -> st.SearchStrategy[str | bytes]:
    """A frame an agent might send: mutated messages, cut JSON, or noise."""
    as_text = mutated(task_id, attempt).map(lambda message: json.dumps(message, default=str))
    cut = st.tuples(as_text, st.integers(min_value=0, max_value=200)).map(
        lambda pair: pair[0][: pair[1]]
    )
    return st.one_of(
        as_text,
        as_text,
        as_text,
        cut,
        st.text(max_size=200),
        st.binary(max_size=200),
        JSON.map(lambda value: json.dumps(value, default=str)),
    )
