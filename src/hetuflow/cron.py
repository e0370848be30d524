"""Pure schedule maths: parse a cron expression in a time zone and list its fire times.

No web framework, no database, no clock: every function takes the instants it works from.

Expressions
    Standard 5 fields (``minute hour day-of-month month day-of-week``), or 6 with a leading
    seconds field, or a macro (``@hourly @daily @midnight @weekly @monthly @yearly
    @annually``). Names (``MON``, ``JAN``), ranges, lists, steps, ``L``, ``LW`` and ``#n`` are
    accepted. Day-of-month and day-of-week combine as in Vixie/Debian cron: if either starts
    with ``*`` both must match, otherwise either may.

Library: ``cronsim``
    We use cronsim (the parser behind healthchecks.io) only to match *wall-clock* fields
    on naive local times, and do the time-zone mapping here. croniter was rejected: with a
    daily ``30 2 * * *`` job in Europe/Berlin it fires twice on the fall-back day, and its
    seconds field is trailing unless asked otherwise. cronsim gets the 5-field DST cases right
    (it mimics Debian cron) and takes a leading seconds field, but for 6-field expressions it
    skips the spring-forward day and fires twice on fall-back, so we do not use its own
    time-zone handling at all: one set of DST rules, written below and tested, for every form.

DST rules (see docs/cron.md)
    * A local time that does not exist (spring forward) fires once, at the first valid
      instant after the gap (``02:30`` on the Berlin spring-forward day fires at 03:00 CEST).
      Several matching times inside one gap still fire only once.
    * A local time that happens twice (fall back) fires once, at its first occurrence, when
      the hour field names specific hours (``30 1 * * *``, ``0 9-17 * * *``): "at 01:30 local"
      means once a day.
    * When the hour field is ``*`` or ``*/n`` (``@hourly``, ``*/5 * * * *``, per-second
      jobs) the job repeats within the day, so it follows elapsed time: the repeated hour is
      another real hour and fires again (an hourly job runs 25 times on the fall-back day, and
      a per-second job never pauses for an hour). This is the Debian cron behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from hetuflow.errors import CronExpressionInvalid, TimeZoneInvalid

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The accepted macros and the 5-field expression each stands for."""

_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_ACCEPTS = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 (0 and 7 are Sunday), SUN-SAT, 5L or MON#2",
}
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
_PROBE = datetime(2000, 1, 1)  # noqa: DTZ001 - cronsim matches naive wall-clock times
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression in an IANA time zone. Build it with :func:`parse`.

    Every method takes and returns aware datetimes; results are in UTC, strictly increasing.
    """

    expression: str
    timezone: str
    _fields: str = field(repr=False, compare=False)
    _zone: ZoneInfo = field(repr=False, compare=False)
    _wall_clock: bool = field(repr=False, compare=False)

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant`` (aware UTC)."""
        for fire in self._instants(instant):
            return fire
        raise CronExpressionInvalid(  # parse() refuses such expressions; kept for safety
            f"cron expression {self.expression!r} never fires after {instant.isoformat()}",
            field="cron_expression",
        )

    def fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after``."""
        fires: list[datetime] = []
        if count <= 0:
            return fires
        for fire in self._instants(after):
            fires.append(fire)
            if len(fires) >= count:
                break
        return fires

    def ticks_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Fire times in ``(start, end]``, earliest first, at most ``limit`` of them."""
        ticks: list[datetime] = []
        if limit <= 0 or end <= start:
            return ticks
        for fire in self._instants(start):
            if fire > end:
                break
            ticks.append(fire)
            if len(ticks) >= limit:
                break
        return ticks

    # --- the DST mapping ----------------------------------------------------------------

    def _instants(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after``, in order, with the DST rules applied.

        Naive local wall-clock matches come from cronsim in order; each maps to its instant:
        a time in a gap to the end of the gap, a repeated time to its first occurrence (and,
        for elapsed-time schedules, also to its second one, held back in ``later`` until
        every earlier instant has been yielded).
        """
        after = _aware_utc(after)
        zone = self._zone
        local = after.astimezone(zone)
        start = local.replace(tzinfo=None)
        if not self._wall_clock and local.fold == 0:
            first, second = _both_folds(start, zone)
            if first != second:
                # ``after`` is in the first pass of a repeated hour: times before it come
                # round again in the second pass, which is still ahead.
                start -= second - first
        last = after
        later: list[datetime] = []
        # cronsim stops (ends the loop) after 50 years without a match.
        for wall in CronSim(self._fields, start):
            primary, repeat = self._map(wall)
            while later and later[0] <= primary:
                held = later.pop(0)
                if held > last:
                    last = held
                    yield held
            if primary > last:
                last = primary
                yield primary
            if repeat is not None:
                later.append(repeat)
        for held in later:
            if held > last:
                last = held
                yield held

    def _map(self, wall: datetime) -> tuple[datetime, datetime | None]:
        """The instant a naive local match fires at, and a second one for a repeated time
        on an elapsed-time schedule."""
        first, second = _both_folds(wall, self._zone)
        if first == second:
            return first, None
        if first > second:  # a gap: first is past it, second before it
            return _gap_end(second, first, self._zone), None
        return first, (None if self._wall_clock else second)


def parse(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Parse ``expression`` in the IANA ``timezone``.

    Raises ``CronExpressionInvalid`` (``field="cron_expression"``) saying which field is
    wrong and why, or ``TimeZoneInvalid`` (``field="timezone"``).
    """
    zone = _zone(timezone)
    text = " ".join(expression.split())
    if not text:
        raise CronExpressionInvalid("cron expression is empty", field="cron_expression")
    if text.startswith("@"):
        fields = MACROS.get(text.lower())
        if fields is None:
            raise CronExpressionInvalid(
                f"unknown macro {text!r}: use one of {', '.join(MACROS)}",
                field="cron_expression",
            )
    else:
        fields = text
    parts = fields.split()
    if len(parts) not in (5, 6):
        raise CronExpressionInvalid(
            f"cron expression {expression!r} has {len(parts)} field(s): expected 5 "
            "(minute hour day-of-month month day-of-week), 6 with a leading seconds field, "
            "or a macro such as @daily",
            field="cron_expression",
        )
    names = _FIELDS if len(parts) == 6 else _FIELDS[1:]
    for index, (name, token) in enumerate(zip(names, parts, strict=True)):
        probe = ["*"] * len(parts)
        probe[index] = token
        try:
            CronSim(" ".join(probe), _PROBE)
        except CronSimError:
            raise CronExpressionInvalid(
                f"cron expression {expression!r}: {name} field (field {index + 1}) "
                f"{token!r} is invalid: {_why(name, token)}",
                field="cron_expression",
            ) from None
    try:
        CronSim(fields, _PROBE)
    except CronSimError:
        raise CronExpressionInvalid(
            f"cron expression {expression!r}: the day-of-month field never occurs in the "
            "months of the month field",
            field="cron_expression",
        ) from None
    hour = parts[2] if len(parts) == 6 else parts[1]
    schedule = CronSchedule(
        expression=expression,
        timezone=timezone,
        _fields=fields,
        _zone=zone,
        _wall_clock=not hour.startswith("*"),
    )
    if next(schedule._instants(_EPOCH), None) is None:
        raise CronExpressionInvalid(
            f"cron expression {expression!r} never fires", field="cron_expression"
        )
    return schedule


def validate_timezone(timezone: str) -> str:
    """Return ``timezone`` if it names an IANA time zone, else raise ``TimeZoneInvalid``."""
    _zone(timezone)
    return timezone


# --- helpers ------------------------------------------------------------------------------


def _zone(timezone: str) -> ZoneInfo:
    try:
        if not timezone or timezone != timezone.strip():
            raise ValueError(timezone)
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeZoneInvalid(
            f"unknown time zone {timezone!r}: use an IANA name such as UTC, Europe/Berlin "
            "or America/New_York",
            field="timezone",
        ) from None


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: hetuflow only handles aware UTC datetimes")
    return value.astimezone(UTC)


def _both_folds(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants of a naive local time read with ``fold=0`` and ``fold=1``.

    Equal for an ordinary time; ``fold=0`` earlier for a repeated time; ``fold=0`` later
    for a time in a gap (PEP 495).
    """
    return (
        wall.replace(tzinfo=zone, fold=0).astimezone(UTC),
        wall.replace(tzinfo=zone, fold=1).astimezone(UTC),
    )


def _gap_end(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant in ``(before, after]``: the first valid instant after a gap."""
    offset = after.astimezone(zone).utcoffset()
    low, high = before, after  # low has the old offset, high the new one
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            break
        if middle.astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return high


def _why(name: str, token: str) -> str:
    low, high = _RANGES[name]
    for piece in token.replace(",", " ").replace("-", " ").replace("/", " ").split():
        number = piece.split("#")[0].rstrip("LlWw")
        if number.isdigit() and "/" + piece not in token and not low <= int(number) <= high:
            return f"{number} is outside {low}-{high}"
    if "/0" in token and not token.split("/0")[1][:1].isdigit():
        return "a step of 0 never advances"
    if "-" in token:
        return f"a range must go from low to high within {_ACCEPTS[name]}"
    return f"expected {_ACCEPTS[name]}, '*', a range a-b, a list a,b or a step */n"
