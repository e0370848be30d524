"""AgentSvc: the agents connected to this node, their slots and the attempts they hold.

One ``AgentConnection`` per WebSocket. Connections are keyed by agent id, but a connection is
identified by the object itself (never by the agent id alone): when an agent connects twice,
the newer connection replaces the older one in the registry, and the older one's teardown can
no longer remove or mark offline the newer one (the original's registry bug).

The registry is in memory and local to the node. Its ``lock`` serialises the few operations
that must not interleave on this node: a dispatch round (claim + route), a registration (read
+ release + attach), a cancel being routed, and the release at the end of a reconnect grace.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Any
from uuid import UUID

from fastapi import WebSocket

from hetuflow.models import Agent, ClaimGroup, SlotOffer
from hetuflow.protocol import (
    DispatchedTaskFrame,
    ServerFrame,
    encode_frame,
    error_frame,
    task_cancel_frame,
)
from hetuflow.server.metrics import Metrics

Shared = Callable[[Iterable[str]], frozenset[str]]
"""``AgentSvc.shared``: one frozenset object per distinct set of task types or capabilities."""


class ConnectionState(StrEnum):
    """Where a connection is: ``connecting`` (accepted, no registration yet) -> ``registered``
    (``AgentCapabilities`` recorded) -> ``draining`` (the agent said ``AgentDraining``: no new
    tasks) -> ``closing`` (a close was asked for: nothing more is queued). ``closing`` may
    follow any state; none comes back."""

    CONNECTING = "connecting"
    REGISTERED = "registered"
    DRAINING = "draining"
    CLOSING = "closing"


class AgentConnection:
    """One agent's WebSocket on this node: identity, slots, held attempts and the outbox.

    Only this module writes its fields: the gateway, the reconciler, the reports, the
    dispatcher and the lifecycle loops read them and change them through its methods
    (``register``, ``redeclare``, ``drain``, ``close``, ``dispatched``, ...).

    Frames are queued with ``send`` (never awaited by the caller) and written by the
    connection's writer coroutine, which drains everything pending back to back and merges
    adjacent dispatches into one ``TaskDispatch`` frame.
    """

    __slots__ = (
        "_outbox",
        "_wakeup",
        "agent_id",
        "bad_frames",
        "bound_agent_id",
        "bound_name",
        "capabilities",
        "close_code",
        "close_reason",
        "disconnect_code",
        "drained_by_operator",
        "enabled",
        "held",
        "last_seen",
        "max_slots",
        "name",
        "next_reconcile",
        "recently_finished",
        "seen",
        "session",
        "state",
        "superseded_sent",
        "task_types",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, now_monotonic: float) -> None:
        self.websocket = websocket
        self.agent_id: UUID | None = None
        self.name = ""
        self.bound_agent_id: UUID | None = None
        """The agent the handshake's token belongs to (None: any, or auth off)."""
        self.bound_name: str | None = None
        self.session = 0
        self.state = ConnectionState.CONNECTING
        self.task_types: frozenset[str] = frozenset()
        self.capabilities: frozenset[str] = frozenset()
        self.max_slots = 0
        self.enabled = True
        self.drained_by_operator = False
        """``POST /api/agents/{id}/drain``, until resumed (kept in the store: a reconnect
        registers drained)."""
        self.held: dict[UUID, tuple[int, str]] = {}
        """task id -> (attempt, task type) of every attempt dispatched to (or kept by) this
        agent and not reported finished: one waiting for ``start_at`` takes a slot too."""
        self.last_seen = now_monotonic
        self.seen = True  # heard from since the last heartbeat flush
        self.bad_frames: deque[float] | None = None  # created at the first bad frame
        self.superseded_sent: set[tuple[UUID, int]] | None = None  # created when first needed
        self.close_code: int | None = None
        self.close_reason = ""
        self._outbox: list[tuple[str, Any]] = []  # (type, frame; task dicts if dispatch)
        self.recently_finished: dict[tuple[UUID, int], None] = {}
        """Attempts this connection reported finished lately: late log lines are still kept."""
        self.disconnect_code: int | None = None
        self.next_reconcile = now_monotonic
        self._wakeup: asyncio.Future[None] | None = None
        """What the writer awaits while the outbox is empty (an Event costs a deque more:
        idle connections are many, so every object per connection counts)."""

    # --- slots --------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        if (
            self.state is not ConnectionState.REGISTERED
            or self.drained_by_operator
            or not self.enabled
        ):
            return 0
        return max(self.max_slots - len(self.held), 0)

    # --- state --------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Registered at some point (it may be draining or closing since)."""
        return self.agent_id is not None

    @property
    def draining(self) -> bool:
        """The agent said it drains (``AgentDraining``: it is shutting down)."""
        return self.state is ConnectionState.DRAINING

    def bind(self, agent_id: UUID | None, name: str | None) -> None:
        """The agent the handshake's token belongs to (None: any, or auth off)."""
        self.bound_agent_id, self.bound_name = agent_id, name

    def register(self, agent: Agent, held: dict[UUID, tuple[int, str]], *, shared: Shared) -> None:
        """The store recorded this connection as ``agent``; it holds ``held`` (the attempts
        kept from what the agent reported)."""
        self.agent_id = agent.id
        self.name = agent.name
        self.redeclare(agent, shared=shared)
        self.held = held
        if self.state is ConnectionState.CONNECTING:
            self.state = ConnectionState.REGISTERED

    def redeclare(self, agent: Agent, *, shared: Shared) -> None:
        """A (repeated) ``AgentCapabilities`` was recorded: what the agent declares now."""
        self.session = agent.session
        self.task_types = shared(agent.supported_task_types)
        self.capabilities = shared(agent.capabilities)
        self.max_slots = agent.max_concurrent_tasks
        self.enabled = agent.enabled
        self.drained_by_operator = agent.drained

    def drain(self) -> None:
        """The agent drains: it takes no new task; what it holds finishes."""
        if self.state is ConnectionState.REGISTERED:
            self.state = ConnectionState.DRAINING

    def set_operator_drained(self, drained: bool) -> None:
        """``POST /api/agents/{id}/drain`` or ``resume`` (told by the notifier)."""
        self.drained_by_operator = drained

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def heard(self, now_monotonic: float) -> None:
        """A frame arrived: the agent is alive."""
        self.last_seen = now_monotonic
        self.seen = True

    def take_seen(self) -> bool:
        """Whether heard from since the last call (the heartbeat flush), and reset it."""
        seen, self.seen = self.seen, False
        return seen

    def unsee(self) -> None:
        """The heartbeat flush failed: count this connection as heard again."""
        self.seen = True

    def disconnected(self, code: int) -> None:
        """The peer went away with ``code`` (1005: no code, 1006: no close frame)."""
        self.disconnect_code = code

    def bad_frame(self, now_monotonic: float, window_seconds: float) -> int:
        """Count one bad frame; return how many arrived in the last ``window_seconds``."""
        frames = self.bad_frames
        if frames is None:
            frames = self.bad_frames = deque()
        frames.append(now_monotonic)
        while frames and frames[0] < now_monotonic - window_seconds:
            frames.popleft()
        return len(frames)

    def reconcile_at(self, when_monotonic: float) -> None:
        self.next_reconcile = when_monotonic

    def dispatched(self, task_id: UUID, attempt: int, task_type: str) -> None:
        """An attempt was claimed for this agent: it holds it (and a slot) from now."""
        self.held[task_id] = (attempt, task_type)

    def give_back(self) -> list[tuple[UUID, int]]:
        """Forget every held attempt (they are released in the store); return them."""
        held = [(task_id, attempt) for task_id, (attempt, _) in self.held.items()]
        self.held.clear()
        return held

    # --- outbox -------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.state is ConnectionState.CLOSING

    def send(self, frame: str, message_type: str) -> None:
        """Queue one encoded frame; dropped once the connection is closing."""
        if self.close_code is None:
            self._outbox.append((message_type, frame))
            self._wake()

    def send_message(self, message: ServerFrame) -> None:
        self.send(encode_frame(message), message["type"])

    def send_dispatch(self, tasks: list[DispatchedTaskFrame]) -> None:
        """Queue dispatched tasks; adjacent ones still pending share one ``TaskDispatch``."""
        if self.close_code is None:
            if self._outbox and self._outbox[-1][0] == "TaskDispatch":
                self._outbox[-1][1].extend(tasks)
            else:
                self._outbox.append(("TaskDispatch", tasks))
            self._wake()

    def holds(self, task_id: UUID, attempt: int) -> bool:
        entry = self.held.get(task_id)
        return entry is not None and entry[0] == attempt

    def send_cancel(self, task_id: UUID, attempt: int, reason: str) -> None:
        if reason == "superseded":
            key = (task_id, attempt)
            sent = self.superseded_sent
            if sent is None:
                sent = self.superseded_sent = set()
            if key in sent:
                return
            if len(sent) > 10_000:
                sent.clear()
            sent.add(key)
        self.send_message(task_cancel_frame(task_id, attempt, reason))

    def send_error(
        self,
        code: str,
        message: str,
        *,
        message_type: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self.send_message(error_frame(code, message, message_type=message_type, task_id=task_id))

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to send what is queued, then close with ``code``. First call wins."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason[:120]
            self.state = ConnectionState.CLOSING
            self._wake()

    def finished(self, task_id: UUID, attempt: int) -> None:
        """The agent reported this attempt finished: its slot is free.

        Only an attempt this connection held counts as recently finished (its late log lines
        and progress are still accepted); a result for anything else earns nothing here, so an
        agent cannot open another agent's attempt to its log lines by reporting it finished.
        """
        entry = self.held.get(task_id)
        if entry is None or entry[0] != attempt:
            return
        del self.held[task_id]
        recent = self.recently_finished
        recent[(task_id, attempt)] = None
        if len(recent) > 1024:
            del recent[next(iter(recent))]

    async def next_frames(self) -> list[tuple[str, Any]]:
        """Wait for queued frames (or a close request) and take them all."""
        while not self._outbox and self.close_code is None:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        frames, self._outbox = self._outbox, []
        return frames

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AgentSvc:
    """The registry of this node's connected agents."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._by_agent: dict[UUID, AgentConnection] = {}
        self._shared: dict[frozenset[str], frozenset[str]] = {}
        self.lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._by_agent)

    def shared(self, values: Iterable[str]) -> frozenset[str]:
        """One frozenset object for every connection declaring the same task types (or
        capabilities): thousands of agents usually declare a handful of distinct sets."""
        key = frozenset(values)
        found = self._shared.get(key)
        if found is None:
            if len(self._shared) > 10_000:
                self._shared.clear()
            found = self._shared[key] = key
        return found

    def __iter__(self) -> Iterator[AgentConnection]:
        return iter(list(self._by_agent.values()))

    def current(self, agent_id: UUID) -> AgentConnection | None:
        return self._by_agent.get(agent_id)

    def is_current(self, connection: AgentConnection) -> bool:
        return (
            connection.agent_id is not None
            and self._by_agent.get(connection.agent_id) is connection
        )

    def attach(self, connection: AgentConnection) -> AgentConnection | None:
        """Make ``connection`` its agent's current one; return the one it replaces.

        The caller closes the replaced connection. If the registry already holds a newer
        session of the agent, ``connection`` is the stale one: it is not attached and is
        returned itself.
        """
        assert connection.agent_id is not None
        previous = self._by_agent.get(connection.agent_id)
        if previous is not None and previous.session > connection.session:
            return connection
        self._by_agent[connection.agent_id] = connection
        if previous is None:
            self._metrics.agent_connected()
        return previous

    def detach(self, connection: AgentConnection) -> bool:
        """Remove ``connection`` if it is still its agent's current one; return whether."""
        if self.is_current(connection):
            assert connection.agent_id is not None
            del self._by_agent[connection.agent_id]
            self._metrics.agent_disconnected()
            return True
        return False

    def held_count(self) -> int:
        """Attempts held by the agents connected here."""
        return sum(len(connection.held) for connection in self._by_agent.values())

    def has_free_slots(self) -> bool:
        """Whether an agent connected here has a free slot (for any of its task types)."""
        return any(c.free_slots > 0 and c.task_types for c in self._by_agent.values())

    def can_start(self, task_type: str, required_capabilities: Iterable[str]) -> bool:
        """Whether an agent connected here has a free slot for a task of this type that
        needs these capabilities."""
        for connection in self._by_agent.values():
            if (
                task_type in connection.task_types
                and connection.free_slots > 0
                and connection.capabilities.issuperset(required_capabilities)
            ):
                return True
        return False

    def claim_groups(self) -> list[ClaimGroup]:
        """Agents with free slots grouped by (task types, capabilities), least loaded first."""
        grouped: dict[tuple[frozenset[str], frozenset[str]], list[SlotOffer]] = {}
        for connection in self._by_agent.values():
            free = connection.free_slots
            if free <= 0 or not connection.task_types:
                continue
            assert connection.agent_id is not None
            offer = SlotOffer(connection.agent_id, free, len(connection.held))
            grouped.setdefault((connection.task_types, connection.capabilities), []).append(offer)
        return [
            ClaimGroup(
                task_types=task_types,
                capabilities=capabilities,
                offers=tuple(sorted(offers, key=lambda offer: offer.running)),
            )
            for (task_types, capabilities), offers in grouped.items()
        ]
