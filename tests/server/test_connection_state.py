"""``AgentConnection`` owns its state: connecting -> registered -> draining -> closing, and the
slots it offers in each."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import cast

from fastapi import WebSocket

from hetuflow.models import Agent, AgentStatus
from hetuflow.server.registry import AgentConnection, ConnectionState

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def agent(*, session: int = 1, slots: int = 3, enabled: bool = True) -> Agent:
    return Agent(
        id=uuid.UUID(int=7),
        name="a",
        capabilities=("gpu",),
        supported_task_types=("t",),
        max_concurrent_tasks=slots,
        status=AgentStatus.ONLINE,
        enabled=enabled,
        drained=False,
        node_id="n",
        session=session,
        running=0,
        connected_at=T0,
        last_heartbeat_at=None,
        created_at=T0,
    )


def shared(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def connection() -> AgentConnection:
    return AgentConnection(cast(WebSocket, object()), 0.0)


def test_a_connection_offers_slots_only_while_registered() -> None:
    conn = connection()
    assert (conn.state, conn.registered, conn.free_slots) == (ConnectionState.CONNECTING, False, 0)
    task_id = uuid.uuid4()
    conn.register(agent(), {task_id: (1, "t")}, shared=shared)
    assert (conn.state, conn.registered, conn.free_slots) == (ConnectionState.REGISTERED, True, 2)
    assert (conn.agent_id, conn.name, conn.session) == (uuid.UUID(int=7), "a", 1)
    assert (conn.task_types, conn.capabilities) == (frozenset({"t"}), frozenset({"gpu"}))
    conn.redeclare(agent(session=2, slots=5), shared=shared)
    assert (conn.session, conn.free_slots) == (2, 4)
    conn.drain()
    assert (conn.state, conn.draining, conn.free_slots) == (ConnectionState.DRAINING, True, 0)
    conn.redeclare(agent(session=3), shared=shared)
    assert conn.state is ConnectionState.DRAINING  # a repeated registration does not undrain
    conn.close(4000, "x")
    assert (conn.state, conn.closing, conn.registered) == (ConnectionState.CLOSING, True, True)
    assert conn.give_back() == [(task_id, 1)]
    assert conn.held == {}


def test_operator_flags_and_closing_take_the_slots() -> None:
    conn = connection()
    conn.register(agent(), {}, shared=shared)
    conn.set_operator_drained(True)
    assert conn.free_slots == 0
    conn.set_operator_drained(False)
    conn.set_enabled(False)
    assert conn.free_slots == 0
    conn.set_enabled(True)
    assert conn.free_slots == 3
    conn.close(1001, "bye")
    assert conn.free_slots == 0


def test_a_connection_closed_before_it_registers_stays_closing() -> None:
    conn = connection()
    conn.close(4008, "late")
    conn.register(agent(), {}, shared=shared)
    conn.drain()
    assert (conn.state, conn.free_slots) == (ConnectionState.CLOSING, 0)


def test_bad_frames_count_within_the_window() -> None:
    conn = connection()
    assert [conn.bad_frame(t, 10.0) for t in (0.0, 1.0, 5.0, 12.0)] == [1, 2, 3, 2]
