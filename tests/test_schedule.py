"""Cron import schedules across Melbourne's daylight-saving changes: every calendar day gets exactly one run.

Fire times are computed, never waited for. The expected instants are written in UTC, so a wrong offset cannot hide.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.cron import CronSchedule, CronTrigger, last_fire

MELBOURNE = ZoneInfo("Australia/Melbourne")

# (first day, last day) of each week around a change: DST ends Sun 5 Apr 2026 and Sun 4 Apr 2027 (03:00 AEDT ->
# 02:00 AEST), starts Sun 4 Oct 2026 and Sun 3 Oct 2027 (02:00 AEST -> 03:00 AEDT).
WEEKS = [
    (date(2026, 4, 1), date(2026, 4, 8)),
    (date(2026, 10, 1), date(2026, 10, 8)),
    (date(2027, 4, 1), date(2027, 4, 7)),
    (date(2027, 9, 30), date(2027, 10, 7)),
]
CHANGE_DAYS = {date(2026, 4, 5), date(2026, 10, 4), date(2027, 4, 4), date(2027, 10, 3)}


def fires(expression: str, first: date, last: date) -> list[datetime]:
    schedule = CronSchedule.parse(expression, MELBOURNE)
    start = datetime(first.year, first.month, first.day, tzinfo=MELBOURNE) - timedelta(seconds=1)
    end = datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=MELBOURNE)
    return schedule.fire_times(start, end)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@pytest.mark.parametrize(("first", "last"), WEEKS)
@pytest.mark.parametrize(("expression", "hour", "minute"), [("0 0 * * *", 0, 0), ("5 0 * * *", 0, 5)])
def test_daily_run_after_midnight_fires_once_every_day_of_a_dst_week(
    expression: str, hour: int, minute: int, first: date, last: date
) -> None:
    times = fires(expression, first, last)

    local = [moment.astimezone(MELBOURNE) for moment in times]
    assert [moment.date() for moment in local] == days(first, last)
    assert all((moment.hour, moment.minute) == (hour, minute) for moment in local)
    # Each instant is that wall-clock time in the offset of its own day (AEDT +11 in summer, AEST +10 in winter).
    for moment in local:
        assert moment.utcoffset() == MELBOURNE.utcoffset(moment.replace(tzinfo=None))


def test_the_monday_after_dst_starts_gets_its_00_05_run() -> None:
    """APScheduler 3.11's CronTrigger goes from Sun 4 Oct 00:05 AEST straight to Tue 6 Oct 00:05 AEDT."""
    schedule = CronSchedule.parse("5 0 * * *", MELBOURNE)
    sunday = datetime(2026, 10, 4, 0, 5, tzinfo=MELBOURNE)

    monday = schedule.next_after(sunday)

    assert monday.astimezone(UTC) == datetime(2026, 10, 4, 13, 5, tzinfo=UTC)  # Mon 5 Oct 00:05 AEDT
    assert schedule.next_after(monday).astimezone(UTC) == datetime(2026, 10, 5, 13, 5, tzinfo=UTC)


@pytest.mark.parametrize(("first", "last"), WEEKS)
def test_a_time_inside_the_skipped_or_repeated_hour_fires_once_a_day(first: date, last: date) -> None:
    times = fires("30 2 * * *", first, last)

    local = [moment.astimezone(MELBOURNE) for moment in times]
    assert [moment.date() for moment in local] == days(first, last)
    for moment in local:
        if moment.date() in CHANGE_DAYS and moment.month == 10:
            # 02:30 does not exist: the run happens when the clocks jump, 03:00 AEDT.
            assert (moment.hour, moment.minute, moment.utcoffset()) == (3, 0, timedelta(hours=11))
        else:
            assert (moment.hour, moment.minute) == (2, 30)
        if moment.date() in CHANGE_DAYS and moment.month == 4:
            # 02:30 happens twice: only the first, still in daylight time.
            assert moment.utcoffset() == timedelta(hours=11)


def test_exact_instants_on_the_change_days() -> None:
    october = CronSchedule.parse("30 2 * * *", MELBOURNE).fire_times(
        datetime(2026, 10, 3, 12, tzinfo=UTC), datetime(2026, 10, 4, 12, tzinfo=UTC)
    )
    # 03:00 AEDT, the moment of the change
    assert [moment.astimezone(UTC) for moment in october] == [datetime(2026, 10, 3, 16, 0, tzinfo=UTC)]
    april = CronSchedule.parse("30 2 * * *", MELBOURNE).fire_times(
        datetime(2027, 4, 3, 12, tzinfo=UTC), datetime(2027, 4, 4, 12, tzinfo=UTC)
    )
    # 02:30 AEDT, not again at 02:30 AEST
    assert [moment.astimezone(UTC) for moment in april] == [datetime(2027, 4, 3, 15, 30, tzinfo=UTC)]


def test_a_run_started_within_the_repeated_hour_does_not_repeat() -> None:
    schedule = CronSchedule.parse("30 2 * * *", MELBOURNE)
    second_0230 = datetime(2026, 4, 5, 2, 30, fold=1, tzinfo=MELBOURNE)  # 02:30 AEST, the repeat

    assert schedule.next_after(second_0230).astimezone(MELBOURNE).date() == date(2026, 4, 6)


def test_every_20_minutes_through_the_change_keeps_order_and_never_repeats() -> None:
    for first, last in WEEKS:
        times = fires("*/20 * * * *", first, last)
        assert times == sorted(set(times))


def test_crontab_weekday_numbers_count_from_sunday() -> None:
    schedule = CronSchedule.parse("0 0 * * 1", MELBOURNE)  # Monday, as in crontab(5)
    moment = schedule.next_after(datetime(2026, 11, 28, tzinfo=MELBOURNE))  # a Saturday
    assert moment.astimezone(MELBOURNE).strftime("%a %Y-%m-%d %H:%M") == "Mon 2026-11-30 00:00"
    sunday = CronSchedule.parse("0 0 * * 7", MELBOURNE).next_after(datetime(2026, 11, 28, tzinfo=MELBOURNE))
    assert sunday.astimezone(MELBOURNE).strftime("%a") == "Sun"


def test_day_of_month_and_weekday_both_restricted_match_either() -> None:
    schedule = CronSchedule.parse("0 0 1 * mon", MELBOURNE)
    times = schedule.fire_times(datetime(2026, 11, 28, tzinfo=MELBOURNE), datetime(2026, 12, 8, tzinfo=MELBOURNE))
    assert [moment.astimezone(MELBOURNE).day for moment in times] == [30, 1, 7]


@pytest.mark.parametrize("expression", ["0 0 * *", "61 0 * * *", "0 0 * * funday", "a b c d e", "0 0 0 * *"])
def test_unreadable_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        CronSchedule.parse(expression, MELBOURNE)


def test_apscheduler_trigger_gives_the_same_times() -> None:
    trigger = CronTrigger("5 0 * * *", "Australia/Melbourne")
    now = datetime(2026, 10, 3, 12, tzinfo=MELBOURNE)
    first = trigger.get_next_fire_time(None, now)
    assert first is not None
    second = trigger.get_next_fire_time(first, first)
    assert second is not None
    third = trigger.get_next_fire_time(second, second)
    assert third is not None
    assert [moment.astimezone(MELBOURNE).day for moment in (first, second, third)] == [4, 5, 6]


def test_last_fire_is_the_latest_run_at_or_before_now() -> None:
    schedule = CronSchedule.parse("0 0 * * *", MELBOURNE)
    monday_morning = datetime(2026, 10, 5, 9, tzinfo=MELBOURNE)
    assert last_fire(schedule, monday_morning) == datetime(2026, 10, 5, 0, 0, tzinfo=MELBOURNE)
    assert last_fire(schedule, datetime(2026, 10, 5, 0, 0, tzinfo=MELBOURNE)) == datetime(
        2026, 10, 5, 0, 0, tzinfo=MELBOURNE
    )
