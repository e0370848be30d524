"""The DST decision for hour fields written ``*/n`` (elapsed time) against the same hours
written as a range (wall clock), with fixed instants in Europe/Berlin 2024.

Spring forward: 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC). Fall back: 2024-10-27
03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-02:59 local happens twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hetuflow.cron import parse

BERLIN = ZoneInfo("Europe/Berlin")


def at(month: int, day: int, hour: int) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


def local(fires: list[datetime]) -> list[str]:
    return [fire.astimezone(BERLIN).strftime("%d %H:%M%z") for fire in fires]


def test_every_two_hours_fall_back_fires_in_both_passes_of_the_repeated_hour() -> None:
    fires = parse("0 */2 * * *", "Europe/Berlin").fire_times(at(10, 26, 21), 3)
    assert local(fires) == ["27 00:00+0200", "27 02:00+0200", "27 02:00+0100"]


def test_every_two_hours_spring_forward_fires_at_the_end_of_the_gap() -> None:
    fires = parse("0 */2 * * *", "Europe/Berlin").fire_times(at(3, 30, 22), 3)
    assert local(fires) == ["31 00:00+0100", "31 03:00+0200", "31 04:00+0200"]


def test_the_same_hours_as_a_range_follow_the_wall_clock() -> None:
    # 0-23/2 names the same hours as */2 but not with '*': a repeated 02:00 fires once.
    fires = parse("0 0-23/2 * * *", "Europe/Berlin").fire_times(at(10, 26, 21), 3)
    assert local(fires) == ["27 00:00+0200", "27 02:00+0200", "27 04:00+0100"]
