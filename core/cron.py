"""When a cron expression fires (import runs, report generation, delivery), in local wall-clock time, correctly
across daylight-saving changes.

APScheduler 3's ``CronTrigger`` is not used for the times themselves, because across Melbourne's clock changes it
gets days wrong (measured with APScheduler 3.11 and ``Australia/Melbourne``; see docs/design/import.md):

* ``0 0 * * *`` and ``5 0 * * *`` never fire on the Monday after daylight saving starts (Monday 5 October 2026 and
  Monday 4 October 2027): after Sunday 00:05 AEST the next fire time is Tuesday 00:05 AEDT, because it adds 24
  hours to find the next day and that day is 23 hours long;
* ``30 2 * * *`` fires twice on the day daylight saving ends (02:30 AEDT and, an hour later, 02:30 AEST again);
* in crontab weekday numbers 0 means Sunday, while APScheduler 3's ``from_crontab`` takes 0 as Monday.

``CronSchedule`` computes the next wall-clock time that matches the expression, day by day in the local calendar, and
only then turns it into an instant:

* a wall-clock time that does not exist (inside the hour skipped when clocks go forward) fires at the moment the
  clocks change (``30 2 * * *`` fires at 03:00 AEDT on 4 October 2026): every calendar day gets its run;
* a wall-clock time that happens twice (the hour repeated when clocks go back) fires at its first occurrence only.

``CronTrigger`` wraps it as an APScheduler trigger for anyone who schedules with APScheduler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_WEEKDAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELD = re.compile(r"^(?:(?P<all>\*)|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?$")
# How far a search looks ahead: "0 0 29 2 1" (a Monday 29 February) recurs within 28 years.
_SEARCH_DAYS = 366 * 29


def _parse_field(text: str, low: int, high: int, names: dict[str, int], what: str) -> tuple[frozenset[int], bool]:
    """The values one crontab field allows, and whether it is unrestricted (``*``)."""
    values: set[int] = set()
    unrestricted = text == "*"
    for part in text.split(","):
        match = _FIELD.match(part.strip().lower())
        if not match:
            raise ValueError(f"{what} field {text!r}: cannot read {part!r}")
        step = int(match.group("step") or 1)
        if step < 1:
            raise ValueError(f"{what} field {text!r}: a step must be at least 1")
        if match.group("all"):
            first, last = low, high
        else:
            first = _value(match.group("low"), names, what)
            last = _value(match.group("high"), names, what) if match.group("high") else first
            if match.group("step") and not match.group("high"):
                last = high  # "5/15" means 5, 20, 35, 50
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ValueError(f"{what} field {text!r}: values must lie within {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values), unrestricted


def _value(token: str, names: dict[str, int], what: str) -> int:
    if token.isdigit():
        return int(token)
    if token[:3] in names and len(token) >= 3:
        return names[token[:3]]
    raise ValueError(f"{what} field: {token!r} is not a number or a name")


@dataclass(frozen=True)
class CronSchedule:
    """A five-field crontab expression (minute hour day-of-month month day-of-week) in a time zone.

    Day of week: 0 or 7 is Sunday, names (mon, tue, ...) are accepted. As in cron, when both day of month and day of
    week are restricted, a day matching either one matches.
    """

    expression: str
    zone: tzinfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str, zone: tzinfo | str) -> CronSchedule:
        """Raises ValueError naming the field that cannot be read."""
        if isinstance(zone, str):
            zone = ZoneInfo(zone)
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"{expression!r}: a cron expression has five fields, not {len(fields)}")
        minutes, _ = _parse_field(fields[0], 0, 59, {}, "minute")
        hours, _ = _parse_field(fields[1], 0, 23, {}, "hour")
        days, any_day = _parse_field(fields[2], 1, 31, {}, "day-of-month")
        months, _ = _parse_field(fields[3], 1, 12, _MONTHS, "month")
        weekdays, any_weekday = _parse_field(fields[4], 0, 7, _WEEKDAYS, "day-of-week")
        weekdays = frozenset(day % 7 for day in weekdays)
        return cls(
            expression, zone, tuple(sorted(minutes)), tuple(sorted(hours)), days, months, weekdays, any_day,
            any_weekday,
        )  # fmt: skip

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        day_ok = day.day in self.days
        weekday_ok = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after the instant ``after`` (an aware datetime), in the schedule's zone."""
        if after.tzinfo is None:
            raise ValueError("after must be an aware datetime")
        # Start a little before the wall-clock time of ``after``: a skipped wall-clock time fires later than it reads.
        after = after.astimezone(UTC)  # compared in UTC: an aware time in a repeated hour never equals another zone's
        start = after.astimezone(self.zone).replace(tzinfo=None, fold=0) - timedelta(hours=3)
        day = start.date()
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        wall = datetime.combine(day, time(hour, minute))
                        if wall < start:
                            continue
                        moment = self.resolve(wall)
                        if moment.astimezone(UTC) > after:
                            return moment
            day += timedelta(days=1)
        raise ValueError(f"{self.expression!r} never fires")

    def fire_times(self, start: datetime, end: datetime) -> list[datetime]:
        """Every fire time in ``(start, end]``."""
        times: list[datetime] = []
        moment = self.next_after(start)
        while moment <= end:
            times.append(moment)
            moment = self.next_after(moment)
        return times

    def resolve(self, wall: datetime) -> datetime:
        """The instant a local wall-clock time names: its first occurrence when it happens twice, the moment the
        clocks change when it does not exist."""
        local = wall.replace(tzinfo=self.zone, fold=0)
        if local.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return local
        # Inside a gap. fold=0 reads the wall time with the offset before the change, fold=1 with the one after;
        # the change lies between the two instants.
        low = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        high = local.astimezone(UTC)
        if low > high:
            low, high = high, low
        offset = low.astimezone(self.zone).utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(self.zone).utcoffset() == offset:
                low = middle
            else:
                high = middle
        return high.replace(microsecond=0).astimezone(self.zone)


class CronTrigger(BaseTrigger):
    """An APScheduler 3 trigger that fires on a ``CronSchedule`` (every calendar day gets its run)."""

    def __init__(self, expression: str, zone: tzinfo | str) -> None:
        self.schedule = CronSchedule.parse(expression, zone)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None:
            return self.schedule.next_after(previous_fire_time)
        return self.schedule.next_after(now - timedelta(microseconds=1))

    def __str__(self) -> str:
        return f"cron[{self.schedule.expression}, {self.schedule.zone}]"


def is_on_arrival(import_schedule: str) -> bool:
    return import_schedule.strip() == "on_arrival"


def last_fire(schedule: CronSchedule, now: datetime) -> datetime | None:
    """The latest fire time at or before ``now`` (None when it has not fired within a year)."""
    for days in (2, 9, 33, 367):
        times = schedule.fire_times(now - timedelta(days=days), now)
        if times:
            return times[-1]
    return None
