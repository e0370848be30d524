"""Hostile frames: the decoder only ever raises ``ProtocolViolation``, and a live gateway fed
hundreds of random and mutated frames (some about another agent's attempt) stays up and
changes nothing it should not. Hypothesis, bounded and derandomized."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings

from hetuflow.config import DatabaseConfig, ServerConfig
from hetuflow.models import TaskStatus
from hetuflow.protocol import ProtocolViolation, decode_agent_message, encode

from .fuzz_frames import frames
from .harness import Server, agent, fast_config, serve

FUZZ = settings(max_examples=400, derandomize=True, database=None, deadline=None)


@FUZZ
@given(frame=frames(str(uuid.UUID(int=7)), 1))
def test_the_decoder_only_raises_protocol_violation(frame: str | bytes) -> None:
    try:
        message = decode_agent_message(frame)
    except ProtocolViolation as problem:
        assert problem.message  # noqa: PT017 - the property: this, and only this, is raised
        return
    encode(message)  # whatever it accepted is a well-formed message


def hostile_frames(task_id: str, attempt: int) -> list[str | bytes]:
    collected: list[str | bytes] = []

    @FUZZ
    @given(frame=frames(task_id, attempt))
    def collect(frame: str | bytes) -> None:
        collected.append(frame)

    collect()
    return collected


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    config = fast_config(database, heartbeat_interval_seconds=5).model_copy(
        update={"server": ServerConfig(max_bad_frames=100_000)}
    )
    async with serve(config) as running:
        yield running


async def test_the_live_gateway_survives_hostile_frames(server: Server) -> None:
    store = server.context.store
    async with agent(server, "echo", slots=1) as owner:
        task_id = await server.create_task(task_type="echo")
        [task] = await owner.dispatched(1)
        hostile = hostile_frames(task["task_id"], task["attempt"])
        assert len(hostile) >= 300
        async with agent(server, "fuzz", slots=2, name="fuzzer") as fuzzer:
            for frame in hostile:
                await fuzzer.ws.send(frame)
            await fuzzer.send({"type": "Pong"})
            # the connection is still served: a heartbeat with no report gets no error
            await fuzzer.quiet(0.2)
            assert not fuzzer.ws.close_code
        async with agent(server, register=False) as stranger:  # never registered
            for frame in hostile[:100]:
                await stranger.ws.send(frame)

        assert (await server.http.get("/healthz")).status_code == 200
        current = await server.task(task_id)
        assert (current.status, current.attempts, current.result) == (
            TaskStatus.DISPATCHED,
            1,
            None,
        )
        assert current.progress is None
        assert await store.list_logs(task_id) == []
        [attempt] = await store.list_attempts(task_id)
        assert (attempt.outcome, str(attempt.agent_id)) == (None, owner.agent_id)

        await owner.result(task, result={"real": True})
        done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert done.result == {"real": True}

    async with agent(server, "echo", slots=1, name="after") as later:  # still accepts agents
        second = await server.create_task(task_type="echo")
        [task] = await later.dispatched(1)
        await later.result(task)
        await server.wait_status(second, TaskStatus.SUCCEEDED)


async def test_hostile_reports_about_its_own_attempt_never_block_other_agents(
    server: Server,
) -> None:
    async with agent(server, "echo", slots=1) as owner, agent(server, "calm", slots=1) as calm:
        task_id = await server.create_task(task_type="echo")
        [task] = await owner.dispatched(1)
        for frame in hostile_frames(task["task_id"], task["attempt"]):
            await owner.ws.send(frame)
        other = await server.create_task(task_type="calm")
        [calm_task] = await calm.dispatched(1)
        await calm.result(calm_task, result={"fine": True})
        done = await server.wait_status(other, TaskStatus.SUCCEEDED)  # the writer is not stuck
        assert done.result == {"fine": True}
        shown = await server.http.get(f"/api/tasks/{task_id}")
        assert shown.status_code == 200, shown.text
        logs = await server.http.get(f"/api/tasks/{task_id}/logs")
        assert logs.status_code == 200, logs.text
