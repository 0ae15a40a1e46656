"""The service's job schedule with a controlled clock: generation at 00:00, delivery at 00:05, every calendar day
of Melbourne's daylight-saving weeks, catch-up after downtime, and each firing once across nodes.

Fire times are never waited for: ``run_due(now)`` is called at instants the test chooses (every 5 minutes of UTC
through whole weeks). Expected instants are written in UTC, so a wrong offset cannot hide.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger as ApschedulerCronTrigger
from reporting import REPORT, open_database, report_config, report_runs, schedule_runs, seed_users
from serving import wait_for

from core.config import Config
from core.cron import CronTrigger
from core.db import Database
from core.layout import Layout
from lcsync.schedule import JobSchedule, claim_firing

MELBOURNE = ZoneInfo("Australia/Melbourne")
# (first day, last day) of each week: DST ends Sun 5 Apr 2026 and Sun 4 Apr 2027, starts Sun 4 Oct 2026 and
# Sun 3 Oct 2027.
WEEKS = [
    (date(2026, 4, 1), date(2026, 4, 8)),
    (date(2026, 10, 1), date(2026, 10, 8)),
    (date(2027, 4, 1), date(2027, 4, 7)),
    (date(2027, 9, 30), date(2027, 10, 7)),
]
# The 00:05 deliveries and 00:00 generations around each change, as UTC instants (AEDT is UTC+11, AEST UTC+10).
EXPECTED_DELIVERIES = {
    date(2026, 4, 5): datetime(2026, 4, 4, 13, 5, tzinfo=UTC),  # Sun 00:05 AEDT, before the change
    date(2026, 4, 6): datetime(2026, 4, 5, 14, 5, tzinfo=UTC),  # Mon 00:05 AEST
    date(2026, 10, 4): datetime(2026, 10, 3, 14, 5, tzinfo=UTC),  # Sun 00:05 AEST, before the change
    date(2026, 10, 5): datetime(2026, 10, 4, 13, 5, tzinfo=UTC),  # Mon 00:05 AEDT: APScheduler's trigger skips it
    date(2027, 4, 4): datetime(2027, 4, 3, 13, 5, tzinfo=UTC),
    date(2027, 4, 5): datetime(2027, 4, 4, 14, 5, tzinfo=UTC),
    date(2027, 10, 3): datetime(2027, 10, 2, 14, 5, tzinfo=UTC),
    date(2027, 10, 4): datetime(2027, 10, 3, 13, 5, tzinfo=UTC),
}


def local_day(moment: datetime | None) -> date:
    assert moment is not None
    return moment.replace(tzinfo=UTC).astimezone(MELBOURNE).date()


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def steps(first: date, last: date, minutes: int = 5) -> Iterator[datetime]:
    """Every ``minutes`` of UTC from local midnight before ``first`` to the end of ``last``."""
    moment = datetime(first.year, first.month, first.day, tzinfo=MELBOURNE).astimezone(UTC)
    end = datetime(last.year, last.month, last.day, 23, 59, tzinfo=MELBOURNE).astimezone(UTC)
    while moment <= end:
        yield moment
        moment += timedelta(minutes=minutes)


@pytest.fixture
def weekly_config(write_config: Callable[..., Path]) -> Config:
    weekly = {**REPORT, "name": "weekly_list", "schedule": "weekly:mon", "format": "xlsx"}
    return report_config(write_config, REPORT, weekly)


def fired(database: Database, job: str) -> list[datetime]:
    return [run.fire_time.replace(tzinfo=UTC) for run in schedule_runs(database) if run.job == job]


def test_generation_at_midnight_then_delivery_at_00_05(weekly_config: Config) -> None:
    database = open_database(weekly_config)
    schedule = JobSchedule(weekly_config, {"production": database}, node="node-a")
    try:
        seed_users(database, count=3)
        midnight = datetime(2026, 10, 4, 13, 0, tzinfo=UTC)  # Mon 5 Oct 2026 00:00 AEDT
        schedule.run_due(midnight - timedelta(minutes=10))  # Sunday's firings: catch-up of the latest ones
        reports = Layout(weekly_config.data_dir).reports_dir("production", "acme")
        before = set(reports.iterdir())

        ran = schedule.run_due(midnight + timedelta(seconds=2))
        assert sorted(job.name for job, _, _ in ran) == ["generate:acme/staff_list", "generate:acme/weekly_list"]
        assert set(reports.iterdir()) == before  # staged, not delivered yet

        ran = schedule.run_due(midnight + timedelta(minutes=5, seconds=1))
        assert [(job.name, fire, status) for job, fire, status in ran] == [
            ("deliver", midnight + timedelta(minutes=5), "done")
        ]
        names = {path.name for path in set(reports.iterdir()) - before}
        assert names == {"staff_list_20261005_000002.csv", "weekly_list_20261005_000002.xlsx"}
        assert schedule.run_due(midnight + timedelta(minutes=6)) == []
    finally:
        database.dispose()


def test_missed_firings_are_caught_up_at_start_in_order(weekly_config: Config) -> None:
    database = open_database(weekly_config)
    schedule = JobSchedule(weekly_config, {"production": database}, node="node-a")
    try:
        seed_users(database, count=1)
        # Down from Saturday evening until Tuesday 09:00 AEDT: Sunday's, Monday's and Tuesday's nights were missed.
        back = datetime(2026, 10, 5, 22, 0, tzinfo=UTC)

        ran = schedule.run_due(back)

        assert [(job.name, fire) for job, fire, _ in ran] == [
            ("generate:acme/weekly_list", datetime(2026, 10, 4, 13, 0, tzinfo=UTC)),  # Monday's weekly
            ("generate:acme/staff_list", datetime(2026, 10, 5, 13, 0, tzinfo=UTC)),  # Tuesday's daily
            ("deliver", datetime(2026, 10, 5, 13, 5, tzinfo=UTC)),
            ("retention", datetime(2026, 10, 5, 16, 30, tzinfo=UTC)),
        ]
        assert {run.status for run in report_runs(database)} == {"delivered"}
        assert schedule.run_due(back + timedelta(minutes=5)) == []
    finally:
        database.dispose()


@pytest.mark.parametrize(("first", "last"), WEEKS)
def test_every_day_of_a_dst_week_gets_one_generation_and_one_00_05_delivery(
    write_config: Callable[..., Path], first: date, last: date
) -> None:
    config = report_config(write_config)
    database = open_database(config)
    schedule = JobSchedule(config, {"production": database}, node="node-a")
    try:
        seed_users(database, count=2)
        for moment in steps(first, last):
            schedule.run_due(moment)

        generations = [moment for moment in fired(database, "generate:acme/staff_list") if local_day(moment) >= first]
        deliveries = [moment for moment in fired(database, "deliver") if local_day(moment) >= first]
        assert [local_day(moment) for moment in generations] == days(first, last)
        assert [local_day(moment) for moment in deliveries] == days(first, last)
        for moment in generations:
            local = moment.astimezone(MELBOURNE)
            assert (local.hour, local.minute) == (0, 0)
        for moment in deliveries:
            local = moment.astimezone(MELBOURNE)
            assert (local.hour, local.minute) == (0, 5)
            if local.date() in EXPECTED_DELIVERIES:
                assert moment == EXPECTED_DELIVERIES[local.date()]
        # Each day's report was generated for its own day and delivered at that day's 00:05.
        runs = [run for run in report_runs(database) if local_day(run.scheduled_for) >= first]
        assert [local_day(run.scheduled_for) for run in runs] == days(first, last)
        for run in runs:
            assert run.status == "delivered"
            assert run.delivered_at is not None
            delivered = run.delivered_at.replace(tzinfo=UTC).astimezone(MELBOURNE)
            assert delivered.date() == local_day(run.scheduled_for) and (delivered.hour, delivered.minute) == (0, 5)
            assert run.file_name.startswith(f"staff_list_{local_day(run.scheduled_for):%Y%m%d}_0000")
    finally:
        database.dispose()


@pytest.mark.parametrize(("first", "last"), WEEKS)
def test_the_trigger_apscheduler_runs_fires_every_day_where_its_own_cron_trigger_skips(first: date, last: date) -> None:
    start = datetime(first.year, first.month, first.day, tzinfo=MELBOURNE) - timedelta(seconds=1)
    end = datetime(last.year, last.month, last.day, 23, 59, tzinfo=MELBOURNE)

    def chain(trigger: object) -> list[date]:
        seen: list[date] = []
        previous, now = None, start
        while True:
            moment = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
            if moment is None or moment > end:
                return seen
            seen.append(moment.astimezone(MELBOURNE).date())
            previous = now = moment

    ours = chain(CronTrigger("5 0 * * *", MELBOURNE))
    theirs = chain(ApschedulerCronTrigger.from_crontab("5 0 * * *", timezone=MELBOURNE))

    assert ours == days(first, last)
    if last.month == 10:  # daylight saving starts: APScheduler 3's own trigger loses the Monday
        assert len(theirs) == len(ours) - 1
        assert set(ours) - set(theirs) == {d for d in days(first, last) if d.weekday() == 0 and d.day <= 7}
    else:
        assert theirs == ours


def test_two_nodes_sharing_a_database_run_each_firing_once(
    write_config: Callable[..., Path], database_url: str
) -> None:
    config = report_config(write_config, database_url=database_url)
    first = open_database(config)
    second = Database("production", config.database_url("production"))
    nodes = [
        JobSchedule(config, {"production": first}, node="host-a:1:a"),
        JobSchedule(config, {"production": second}, node="host-b:1:b"),
    ]
    try:
        seed_users(first, count=20)
        week_first, week_last = date(2026, 10, 3), date(2026, 10, 6)
        for moment in steps(week_first, week_last, minutes=5):
            barrier = threading.Barrier(2)

            def tick(node: JobSchedule, at: datetime = moment, gate: threading.Barrier = barrier) -> None:
                gate.wait()
                node.run_due(at)

            threads = [threading.Thread(target=tick, args=(node,)) for node in nodes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        counts = Counter((run.job, run.fire_time) for run in schedule_runs(first))
        assert set(counts.values()) == {1}
        assert {run.status for run in schedule_runs(first)} == {"done"}
        runs = [run for run in report_runs(first) if local_day(run.scheduled_for) >= week_first]
        assert [local_day(run.scheduled_for) for run in runs] == days(week_first, week_last)
        delivered = list(Layout(config.data_dir).reports_dir("production", "acme").iterdir())
        assert len(delivered) == len(report_runs(first))
        assert {run.status for run in report_runs(first)} == {"delivered"}
    finally:
        first.dispose()
        second.dispose()


def test_a_claim_left_running_by_a_dead_process_is_taken_over(weekly_config: Config) -> None:
    import socket

    database = open_database(weekly_config)
    try:
        fire = datetime(2026, 10, 4, 13, 5, tzinfo=UTC)
        dead = f"{socket.gethostname()}:999999999:gone"
        assert claim_firing(database, "deliver", fire, dead, now=fire) is not None
        # Another host's claim: alive as far as anyone can tell, until it is older than STALE_AFTER.
        assert claim_firing(database, "deliver", fire, "other-host:1:x", now=fire) is None

        taken = claim_firing(database, "deliver", fire, f"{socket.gethostname()}:1:me", now=fire)

        assert taken is not None
        assert claim_firing(database, "deliver", fire, "other-host:1:x", now=fire + timedelta(hours=7)) is not None
    finally:
        database.dispose()


def test_a_generation_that_ends_after_its_delivery_time_is_delivered_at_once(weekly_config: Config) -> None:
    database = open_database(weekly_config)
    schedule = JobSchedule(weekly_config, {"production": database}, node="node-a")
    try:
        seed_users(database, count=1)
        midnight = datetime(2026, 4, 5, 14, 0, tzinfo=UTC)  # Mon 6 Apr 2026 00:00 AEST
        # Another node delivered at 00:05 while this one had not generated the weekly report yet.
        assert claim_firing(database, "deliver", midnight + timedelta(minutes=5), "host-b:1:b") is not None
        (job,) = [job for job in __import__("lcsync.schedule").schedule.scheduled_jobs(weekly_config)
                  if job.name == "generate:acme/weekly_list"]  # fmt: skip

        assert schedule.fire(job, midnight, now=midnight + timedelta(minutes=9)) == "done"

        (run,) = [run for run in report_runs(database) if run.report == "weekly_list"]
        assert run.status == "delivered"
    finally:
        database.dispose()


def test_started_schedule_catches_up_at_once_and_stops_cleanly(weekly_config: Config) -> None:
    database = open_database(weekly_config)
    schedule = JobSchedule(weekly_config, {"production": database}, node="node-a")
    try:
        seed_users(database, count=1)
        schedule.start()
        try:
            wait_for(
                lambda: {run.job for run in schedule_runs(database)} >= {"generate:acme/staff_list", "deliver"},
                what="the start-up catch-up",
            )
            schedule.update_config(weekly_config)
        finally:
            schedule.stop()
        schedule.stop()  # idempotent
        assert {run.status for run in schedule_runs(database)} == {"done"}
    finally:
        database.dispose()
