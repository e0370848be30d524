"""What the console shows about task types: per-type counts and durations over a recent
window; the timeline of finished tasks and their durations over a chosen window (the
dashboard's charts); and the tasks that wait because no agent could ever run them.

"Unserved" is the question operators ask first when work does not move: due pending tasks
whose task type no online, enabled agent supports, or whose required capabilities none of
those has. It is the same test as a task's ``pending_reason`` (``TaskQueue.explain``), made
for groups of tasks (one per task type and capability set) instead of one task at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hetuflow.clock import Clock
from hetuflow.models import (
    Agent,
    AgentStatus,
    PendingGroup,
    PendingReason,
    Percentiles,
    TaskTypeStats,
    TimelineBucket,
)
from hetuflow.store.base import Store

MAX_WINDOW_SECONDS = 7 * 24 * 3600
"""The longest window ``task_types`` looks back over."""
TYPE_STATS_SAMPLE = 50_000
"""At most this many of the newest tasks in the window are counted and measured."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PENDING_GROUPS_LIMIT = 200
"""At most this many (task type, capabilities) groups of pending tasks are examined."""


@dataclass(frozen=True, slots=True)
class TaskTypeWindow:
    since: datetime
    items: list[TaskTypeStats]
    sampled: int
    """Tasks counted; ``truncated`` when the window held more than ``TYPE_STATS_SAMPLE``."""
    truncated: bool


@dataclass(frozen=True, slots=True)
class ChartWindow:
    """A window the console's charts look back over, cut into a bounded number of buckets."""

    name: str
    seconds: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        return self.seconds // self.bucket_seconds


CHART_WINDOWS: dict[str, ChartWindow] = {
    window.name: window
    for window in (
        ChartWindow("15m", 15 * 60, 30),
        ChartWindow("1h", 3600, 60),
        ChartWindow("6h", 6 * 3600, 5 * 60),
        ChartWindow("24h", 24 * 3600, 20 * 60),
        ChartWindow("7d", 7 * 24 * 3600, 2 * 3600),
    )
}
"""The windows the timeline offers: 30 to 84 buckets each."""
TIMELINE_SAMPLE = 100_000
"""At most this many of the newest finished tasks in the window are counted and measured."""


@dataclass(frozen=True, slots=True)
class Timeline:
    window: ChartWindow
    since: datetime
    """The start of the first bucket (a multiple of the bucket size since the Unix epoch)."""
    buckets: list[TimelineBucket]
    """One per bucket, oldest first, empty ones included (index = position)."""
    sampled: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class Unserved:
    task_type: str
    required_capabilities: tuple[str, ...]
    count: int
    reason: PendingReason
    """``no_agent_for_task_type`` or ``no_agent_with_capabilities``."""


class TaskInsights:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def task_types(self, *, window_seconds: float) -> TaskTypeWindow:
        """Tasks created in the last ``window_seconds`` (at most ``MAX_WINDOW_SECONDS``),
        grouped by task type (one read)."""
        since = self.clock.now() - timedelta(seconds=min(window_seconds, MAX_WINDOW_SECONDS))
        items = await self.store.task_type_stats(since=since, limit=TYPE_STATS_SAMPLE)
        sampled = sum(sum(item.by_status.values()) for item in items)
        return TaskTypeWindow(since, items, sampled, sampled >= TYPE_STATS_SAMPLE)

    async def timeline(self, window: ChartWindow) -> Timeline:
        """Tasks finished in ``window`` by bucket: the last bucket holds now (one read)."""
        now = self.clock.now()
        width = timedelta(seconds=window.bucket_seconds)
        current = _EPOCH + (now - _EPOCH) // width * width
        since = current - width * (window.buckets - 1)
        found = {
            bucket.index: bucket
            for bucket in await self.store.task_timeline(
                since=since,
                bucket_seconds=window.bucket_seconds,
                buckets=window.buckets,
                limit=TIMELINE_SAMPLE,
            )
        }
        buckets = [
            found.get(index, TimelineBucket(index, {}, Percentiles(), Percentiles()))
            for index in range(window.buckets)
        ]
        sampled = sum(sum(bucket.by_status.values()) for bucket in buckets)
        return Timeline(window, since, buckets, sampled, sampled >= TIMELINE_SAMPLE)

    async def unserved(self) -> list[Unserved]:
        """Groups of due pending tasks that no online, enabled agent can run, largest first."""
        groups = await self.store.count_pending_groups(
            now=self.clock.now(), limit=PENDING_GROUPS_LIMIT
        )
        if not groups:
            return []
        agents = [
            agent
            for agent in await self.store.list_agents(statuses=[AgentStatus.ONLINE])
            if agent.enabled
        ]
        merged: dict[tuple[str, frozenset[str]], Unserved] = {}
        for group in groups:
            reason = unserved_reason(group, agents)
            if reason is None:
                continue
            key = (group.task_type, frozenset(group.required_capabilities))
            seen = merged.get(key)
            count = group.count + (seen.count if seen is not None else 0)
            capabilities = tuple(sorted(key[1]))
            merged[key] = Unserved(group.task_type, capabilities, count, reason)
        return sorted(merged.values(), key=lambda item: (-item.count, item.task_type))


def unserved_reason(group: PendingGroup, agents: Sequence[Agent]) -> PendingReason | None:
    """Why no agent in ``agents`` can run the group's tasks, or None if one can (busy or not)."""
    supporting = [agent for agent in agents if group.task_type in agent.supported_task_types]
    if not supporting:
        return PendingReason.NO_AGENT_FOR_TASK_TYPE
    if not any(agent.can_run(group.task_type, group.required_capabilities) for agent in supporting):
        return PendingReason.NO_AGENT_WITH_CAPABILITIES
    return None
