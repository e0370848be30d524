"""The pure checks of the chaos suite's nodes scenario (``nodes_checks.py``), held against what the
real cron policy records and against made-up agent timelines: they must catch what they claim
to catch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hetuflow.cron import parse
from hetuflow.models import (
    CronJob,
    CronTick,
    MisfirePolicy,
    OverlapPolicy,
    Priority,
    RetryPolicy,
    TickOutcome,
)
from hetuflow.server.cron_policy import decide, fire_of

from .nodes_checks import NodeKill, NodesReport, covers, measure_reconnects

NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
EVERY_SECOND = parse("* * * * * *", "UTC")


@pytest.mark.parametrize(
    ("policy", "limit"),
    [(MisfirePolicy.SKIP, 3), (MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.CATCH_UP, 3)],
)
def test_a_misfire_record_covers_exactly_the_ticks_up_to_the_next_one(
    policy: MisfirePolicy, limit: int
) -> None:
    """The gap check: the next recorded tick is ``covers(tick)`` seconds after a misfire."""
    tick = NOW - timedelta(seconds=9)
    cron = CronJob(
        id=uuid.uuid4(),
        name="j",
        cron_expression="* * * * * *",
        timezone="UTC",
        task_type="chaos",
        payload={},
        priority=Priority.NORMAL,
        required_capabilities=(),
        timeout_seconds=None,
        retry=RetryPolicy(),
        enabled=True,
        misfire_policy=policy,
        catch_up_limit=limit,
        overlap_policy=OverlapPolicy.ALLOW,
        start_deadline_seconds=None,
        next_fire_at=tick,
        last_fire_at=None,
        last_task_id=None,
        created_at=tick,
        updated_at=tick,
    )
    fire = fire_of(cron, decide(cron, EVERY_SECOND, tick, NOW, None))
    recorded = CronTick(cron.id, fire.tick_at, fire.outcome, None, fire.reason, NOW)
    assert fire.next_fire_at is not None
    assert covers(recorded) > 1, fire.reason
    assert fire.next_fire_at - fire.tick_at == timedelta(seconds=covers(recorded))


def test_an_on_time_or_late_tick_covers_one() -> None:
    for reason in (None, "ran late (missed tick)", "caught up"):
        recorded = CronTick(uuid.uuid4(), NOW, TickOutcome.FIRED, None, reason, NOW)
        assert covers(recorded) == 1


def test_reconnects_are_measured_for_the_agents_of_the_killed_node_only() -> None:
    a, b = "ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws"
    report = NodesReport(kills=[NodeKill("node-1", a, 100.0, 3.0)])
    registrations = {
        "moved": [(10.0, a), (100.4, b)],
        "elsewhere": [(10.0, b)],
        "left-before": [(10.0, a), (50.0, b)],
        "never-back": [(20.0, a)],
    }
    faults = measure_reconnects(report, registrations)
    assert [fault.agent for fault in faults] == ["moved", "never-back"]
    assert report.reconnects == [pytest.approx(0.4)]
    assert len(report.not_reconnected) == 1
    assert report.violations == [f"not reconnected: {report.not_reconnected[0]}"]
