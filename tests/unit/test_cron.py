"""Unit tests for hetuflow.cron: parsing, macros, seconds, time zones and both DST transitions.

Every instant is fixed; nothing sleeps or reads the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hetuflow.cron import MACROS, CronSchedule, parse
from hetuflow.errors import CronExpressionInvalid, TimeZoneInvalid

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(zone: ZoneInfo, fires: list[datetime]) -> list[str]:
    return [fire.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S%z") for fire in fires]


# --- parsing ----------------------------------------------------------------------------------


def test_parse_keeps_expression_and_timezone() -> None:
    schedule = parse("0 2 * * *", "Europe/Berlin")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "0 2 * * *"
    assert schedule.timezone == "Europe/Berlin"
    assert parse("0 2 * * *").timezone == "UTC"


def test_schedule_is_frozen() -> None:
    schedule = parse("* * * * *")
    with pytest.raises(AttributeError):
        schedule.expression = "0 0 * * *"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "where", "why"),
    [
        ("61 * * * *", "minute field (field 1) '61'", "61 is outside 0-59"),
        ("0 24 * * *", "hour field (field 2) '24'", "24 is outside 0-23"),
        ("0 0 0 * *", "day-of-month field (field 3) '0'", "0 is outside 1-31"),
        ("0 0 * 13 *", "month field (field 4) '13'", "13 is outside 1-12"),
        ("0 0 * * 8", "day-of-week field (field 5) '8'", "8 is outside 0-7"),
        ("61 0 0 * * *", "second field (field 1) '61'", "61 is outside 0-59"),
        ("*/0 * * * *", "minute field (field 1) '*/0'", "a step of 0 never advances"),
        ("5-1 * * * *", "minute field (field 1) '5-1'", "range must go from low to high"),
        ("x * * * *", "minute field (field 1) 'x'", "expected 0-59"),
        ("0 0 * FOO *", "month field (field 4) 'FOO'", "JAN-DEC"),
    ],
)
def test_invalid_field_says_where_and_why(expression: str, where: str, why: str) -> None:
    with pytest.raises(CronExpressionInvalid) as caught:
        parse(expression)
    assert caught.value.field == "cron_expression"
    assert where in caught.value.message
    assert why in caught.value.message


@pytest.mark.parametrize("expression", ["", "   ", "* * * *", "* * * * * * *", "0 2 * *"])
def test_wrong_number_of_fields(expression: str) -> None:
    with pytest.raises(CronExpressionInvalid) as caught:
        parse(expression)
    assert caught.value.field == "cron_expression"
    assert "field" in caught.value.message or "empty" in caught.value.message


def test_unknown_macro_lists_the_known_ones() -> None:
    with pytest.raises(CronExpressionInvalid, match=r"unknown macro '@often'.*@hourly"):
        parse("@often")


def test_expression_that_never_fires_is_rejected() -> None:
    with pytest.raises(CronExpressionInvalid, match="day-of-month field never occurs"):
        parse("0 0 30 2 *")
    with pytest.raises(CronExpressionInvalid, match="day-of-month field never occurs"):
        parse("0 0 31 4,6 *")


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "", "../etc/passwd", " UTC", "utc+1"])
def test_invalid_timezone(timezone: str) -> None:
    with pytest.raises(TimeZoneInvalid) as caught:
        parse("* * * * *", timezone)
    assert caught.value.field == "timezone"
    assert "IANA" in caught.value.message


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        parse("* * * * *").next_after(datetime(2024, 1, 1))  # noqa: DTZ001


# --- fire times in UTC ------------------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    schedule = parse("0 2 * * *")
    assert schedule.next_after(at(2024, 5, 1, 2)) == at(2024, 5, 2, 2)
    assert schedule.next_after(at(2024, 5, 1, 1, 59, 59)) == at(2024, 5, 1, 2)
    assert schedule.next_after(at(2024, 5, 1, 1, 59, 59) + timedelta(microseconds=999_999)) == at(
        2024, 5, 1, 2
    )
    assert schedule.next_after(at(2024, 5, 1, 2) + timedelta(microseconds=1)) == at(2024, 5, 2, 2)


def test_results_are_aware_utc() -> None:
    fire = parse("0 9 * * *", "Asia/Tokyo").next_after(at(2024, 4, 30, 23))
    assert fire.tzinfo is UTC
    assert fire == at(2024, 5, 1, 0)  # 09:00 JST


def test_fire_times_counts() -> None:
    schedule = parse("*/15 * * * *")
    assert schedule.fire_times(at(2024, 1, 1, 10, 7), 3) == [
        at(2024, 1, 1, 10, 15),
        at(2024, 1, 1, 10, 30),
        at(2024, 1, 1, 10, 45),
    ]
    assert schedule.fire_times(at(2024, 1, 1), 0) == []


def test_seconds_field_leads() -> None:
    schedule = parse("*/10 * * * * *")
    assert schedule.fire_times(at(2024, 1, 1, 0, 0, 5), 3) == [
        at(2024, 1, 1, 0, 0, 10),
        at(2024, 1, 1, 0, 0, 20),
        at(2024, 1, 1, 0, 0, 30),
    ]
    every_second = parse("* * * * * *")
    assert every_second.fire_times(at(2024, 1, 1, 0, 0, 59), 2) == [
        at(2024, 1, 1, 0, 1, 0),
        at(2024, 1, 1, 0, 1, 1),
    ]
    assert parse("30 0 2 * * *").next_after(at(2024, 1, 1)) == at(2024, 1, 1, 2, 0, 30)


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", at(2024, 2, 10, 13)),
        ("@daily", at(2024, 2, 11)),
        ("@midnight", at(2024, 2, 11)),
        ("@weekly", at(2024, 2, 11)),  # 2024-02-11 is a Sunday
        ("@monthly", at(2024, 3, 1)),
        ("@yearly", at(2025, 1, 1)),
        ("@annually", at(2025, 1, 1)),
        ("@DAILY", at(2024, 2, 11)),
    ],
)
def test_macros(macro: str, expected: datetime) -> None:
    assert parse(macro).next_after(at(2024, 2, 10, 12, 30)) == expected


def test_every_macro_is_documented_in_the_table() -> None:
    assert set(MACROS) == {
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    }


def test_names_and_day_rules() -> None:
    # Monday to Friday at 08:00.
    assert parse("0 8 * * MON-FRI").fire_times(at(2024, 2, 9, 9), 2) == [
        at(2024, 2, 12, 8),
        at(2024, 2, 13, 8),
    ]
    # Day-of-month and day-of-week both restricted: either matches (Vixie cron).
    assert parse("0 0 13 * FRI").fire_times(at(2024, 9, 1), 3) == [
        at(2024, 9, 6),
        at(2024, 9, 13),
        at(2024, 9, 20),
    ]
    # Last day of the month; 7 is Sunday.
    assert parse("0 0 L * *").next_after(at(2024, 2, 1)) == at(2024, 2, 29)
    assert parse("0 0 * * 7").next_after(at(2024, 2, 10)) == at(2024, 2, 11)
    # Leap day only.
    assert parse("0 0 29 2 *").next_after(at(2024, 3, 1)) == at(2028, 2, 29)


def test_ticks_between_start_exclusive_end_inclusive() -> None:
    schedule = parse("0 * * * *")
    assert schedule.ticks_between(at(2024, 1, 1, 1), at(2024, 1, 1, 4), 10) == [
        at(2024, 1, 1, 2),
        at(2024, 1, 1, 3),
        at(2024, 1, 1, 4),
    ]
    assert schedule.ticks_between(at(2024, 1, 1, 1), at(2024, 1, 1, 4), 2) == [
        at(2024, 1, 1, 2),
        at(2024, 1, 1, 3),
    ]
    assert schedule.ticks_between(at(2024, 1, 1, 1), at(2024, 1, 1, 1, 59), 10) == []
    assert schedule.ticks_between(at(2024, 1, 1, 4), at(2024, 1, 1, 1), 10) == []
    assert schedule.ticks_between(at(2024, 1, 1, 1), at(2024, 1, 1, 4), 0) == []


# --- time zones -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        ("UTC", at(2024, 7, 1, 9)),
        ("Europe/Berlin", at(2024, 7, 1, 7)),  # CEST, UTC+2
        ("America/New_York", at(2024, 7, 1, 13)),  # EDT, UTC-4
        ("Asia/Kolkata", at(2024, 7, 1, 3, 30)),  # IST, UTC+5:30
        ("Australia/Sydney", at(2024, 7, 1, 23)),  # AEST, UTC+10, the evening before
        ("Pacific/Chatham", at(2024, 7, 1, 20, 15)),  # UTC+12:45, the evening before
    ],
)
def test_nine_oclock_in_several_zones(timezone: str, expected: datetime) -> None:
    fires = parse("0 9 * * *", timezone).fire_times(expected - timedelta(seconds=1), 2)
    assert fires == [expected, expected + timedelta(days=1)]


def test_half_hour_zone_matches_local_minutes() -> None:
    # Every 6 local hours in India (UTC+5:30) is at :30 past the UTC hour.
    schedule = parse("0 */6 * * *", "Asia/Kolkata")
    assert schedule.fire_times(at(2024, 1, 1), 2) == [at(2024, 1, 1, 0, 30), at(2024, 1, 1, 6, 30)]


# --- DST: Europe/Berlin 2024 ------------------------------------------------------------------
# Spring forward: 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC); 02:00-02:59 does not exist.
# Fall back:      2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-02:59 happens twice.


def test_berlin_daily_0230_spring_forward_fires_once_at_end_of_gap() -> None:
    schedule = parse("30 2 * * *", "Europe/Berlin")
    fires = schedule.fire_times(at(2024, 3, 29, 12), 4)
    assert local(BERLIN, fires) == [
        "2024-03-30 02:30:00+0100",
        "2024-03-31 03:00:00+0200",  # 02:30 does not exist: the first valid instant after
        "2024-04-01 02:30:00+0200",
        "2024-04-02 02:30:00+0200",
    ]
    assert fires[1] == at(2024, 3, 31, 1)


def test_berlin_daily_0230_fall_back_fires_once_at_first_occurrence() -> None:
    schedule = parse("30 2 * * *", "Europe/Berlin")
    fires = schedule.fire_times(at(2024, 10, 25, 12), 4)
    assert local(BERLIN, fires) == [
        "2024-10-26 02:30:00+0200",
        "2024-10-27 02:30:00+0200",  # the first 02:30; the second one (CET) does not fire
        "2024-10-28 02:30:00+0100",
        "2024-10-29 02:30:00+0100",
    ]
    # Asked from inside the repeated hour, after the first 02:30: the second is not a fire.
    inside = at(2024, 10, 27, 1, 15)  # 02:15 CET, the second pass
    assert schedule.next_after(inside) == at(2024, 10, 28, 1, 30)


def test_berlin_six_field_expression_follows_the_same_rules() -> None:
    schedule = parse("0 30 2 * * *", "Europe/Berlin")
    assert local(BERLIN, schedule.fire_times(at(2024, 3, 30, 12), 2)) == [
        "2024-03-31 03:00:00+0200",
        "2024-04-01 02:30:00+0200",
    ]
    assert local(BERLIN, schedule.fire_times(at(2024, 10, 26, 12), 2)) == [
        "2024-10-27 02:30:00+0200",
        "2024-10-28 02:30:00+0100",
    ]


def test_berlin_hourly_spring_forward_loses_no_real_hour() -> None:
    fires = parse("0 * * * *", "Europe/Berlin").fire_times(at(2024, 3, 30, 23, 30), 4)
    assert fires == [at(2024, 3, 31, 0), at(2024, 3, 31, 1), at(2024, 3, 31, 2), at(2024, 3, 31, 3)]
    assert local(BERLIN, fires) == [
        "2024-03-31 01:00:00+0100",
        "2024-03-31 03:00:00+0200",
        "2024-03-31 04:00:00+0200",
        "2024-03-31 05:00:00+0200",
    ]


def test_berlin_hourly_fall_back_fires_every_real_hour() -> None:
    schedule = parse("0 * * * *", "Europe/Berlin")
    fires = schedule.fire_times(at(2024, 10, 26, 23, 30), 4)
    assert fires == [
        at(2024, 10, 27, 0),
        at(2024, 10, 27, 1),
        at(2024, 10, 27, 2),
        at(2024, 10, 27, 3),
    ]
    assert local(BERLIN, fires) == [
        "2024-10-27 02:00:00+0200",
        "2024-10-27 02:00:00+0100",
        "2024-10-27 03:00:00+0100",
        "2024-10-27 04:00:00+0100",
    ]
    # 25 real hours on that day, 25 fires.
    day = schedule.ticks_between(at(2024, 10, 26, 21, 59), at(2024, 10, 27, 22, 59), 100)
    assert len(day) == 25


def test_berlin_sub_hourly_fall_back_from_inside_the_first_pass() -> None:
    schedule = parse("*/20 * * * *", "Europe/Berlin")
    fires = schedule.fire_times(at(2024, 10, 27, 0, 30), 5)  # 02:30 CEST, first pass
    assert fires == [
        at(2024, 10, 27, 0, 40),
        at(2024, 10, 27, 1, 0),
        at(2024, 10, 27, 1, 20),
        at(2024, 10, 27, 1, 40),
        at(2024, 10, 27, 2, 0),
    ]


def test_berlin_per_second_job_never_pauses() -> None:
    schedule = parse("* * * * * *", "Europe/Berlin")
    fall = schedule.ticks_between(at(2024, 10, 27, 0, 59, 58), at(2024, 10, 27, 1, 0, 2), 10)
    assert fall == [at(2024, 10, 27, 0, 59, 59)] + [
        at(2024, 10, 27, 1, 0, second) for second in range(3)
    ]
    spring = schedule.ticks_between(at(2024, 3, 31, 0, 59, 58), at(2024, 3, 31, 1, 0, 2), 10)
    assert spring == [at(2024, 3, 31, 0, 59, 59)] + [
        at(2024, 3, 31, 1, 0, second) for second in range(3)
    ]


# --- DST: America/New_York 2024 ---------------------------------------------------------------
# Spring forward: 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC); 02:00-02:59 does not exist.
# Fall back:      2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC); 01:00-01:59 happens twice.


def test_new_york_daily_0230_spring_forward() -> None:
    fires = parse("30 2 * * *", "America/New_York").fire_times(at(2024, 3, 9, 12), 2)
    assert local(NEW_YORK, fires) == ["2024-03-10 03:00:00-0400", "2024-03-11 02:30:00-0400"]
    assert fires[0] == at(2024, 3, 10, 7)


def test_new_york_daily_0230_fall_back_is_an_ordinary_day() -> None:
    fires = parse("30 2 * * *", "America/New_York").fire_times(at(2024, 11, 2, 12), 2)
    assert local(NEW_YORK, fires) == ["2024-11-03 02:30:00-0500", "2024-11-04 02:30:00-0500"]


def test_new_york_daily_0130_fall_back_fires_once() -> None:
    schedule = parse("30 1 * * *", "America/New_York")
    fires = schedule.fire_times(at(2024, 11, 2, 12), 2)
    assert local(NEW_YORK, fires) == ["2024-11-03 01:30:00-0400", "2024-11-04 01:30:00-0500"]
    assert schedule.ticks_between(at(2024, 11, 3, 4), at(2024, 11, 3, 8), 10) == [
        at(2024, 11, 3, 5, 30)
    ]


def test_new_york_many_times_in_the_gap_fire_once() -> None:
    schedule = parse("*/15 2 * * *", "America/New_York")
    fires = schedule.fire_times(at(2024, 3, 9, 12), 3)
    assert local(NEW_YORK, fires) == [
        "2024-03-10 03:00:00-0400",
        "2024-03-11 02:00:00-0400",
        "2024-03-11 02:15:00-0400",
    ]


def test_new_york_hourly_across_both_transitions() -> None:
    schedule = parse("@hourly", "America/New_York")
    spring = schedule.ticks_between(at(2024, 3, 10, 5, 30), at(2024, 3, 10, 8, 30), 10)
    assert local(NEW_YORK, spring) == [
        "2024-03-10 01:00:00-0500",
        "2024-03-10 03:00:00-0400",
        "2024-03-10 04:00:00-0400",
    ]
    fall = schedule.ticks_between(at(2024, 11, 3, 4, 30), at(2024, 11, 3, 7, 30), 10)
    assert local(NEW_YORK, fall) == [
        "2024-11-03 01:00:00-0400",
        "2024-11-03 01:00:00-0500",
        "2024-11-03 02:00:00-0500",
    ]


def test_half_hour_dst_zone_fires_at_end_of_gap() -> None:
    # Lord Howe Island moves from +10:30 to +11:00: 02:00-02:29 does not exist.
    zone = ZoneInfo("Australia/Lord_Howe")
    fires = parse("0 * * * *", "Australia/Lord_Howe").fire_times(at(2024, 10, 5, 14), 3)
    assert local(zone, fires) == [
        "2024-10-06 01:00:00+1030",
        "2024-10-06 02:30:00+1100",
        "2024-10-06 03:00:00+1100",
    ]
