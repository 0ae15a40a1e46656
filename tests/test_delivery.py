"""Delivering staged reports: atomic, never overwriting, idempotent, repaired after a crash, once across processes."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from reporting import REPORT, open_database, report_config, report_runs, seed_users
from sqlalchemy import update

from core.config import Config
from core.db import Database
from core.layout import Layout
from core.metrics import METRICS
from core.runs import ReportRun
from export.deliver import deliver_staged
from export.generate import generate_report

T0 = datetime(2026, 4, 5, 13, 0, tzinfo=UTC)  # Sun 5 Apr 2026 23:00 AEST, the evening daylight saving ended


def staged(config: Config, database: Database, count: int = 1) -> list[Path]:
    seed_users(database, count=2)
    paths = []
    for index in range(count):
        generated = generate_report(config, "production", database, "acme", "staff_list",
                                    now=T0 + timedelta(seconds=index))  # fmt: skip
        assert generated.path is not None
        paths.append(generated.path)
    return paths


def reports_dir(config: Config) -> Path:
    return Layout(config.data_dir).reports_dir("production", "acme")


def listing(config: Config) -> list[str]:
    folder = reports_dir(config)
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def setup(write_config: Callable[..., Path]) -> Iterator[tuple[Config, Database]]:
    config = report_config(write_config)
    database = open_database(config)
    yield config, database
    database.dispose()


def test_staged_report_moves_into_reports_and_is_recorded(
    setup: tuple[Config, Database], caplog: pytest.LogCaptureFixture
) -> None:
    config, database = setup
    (path,) = staged(config, database)
    content = path.read_bytes()
    before = METRICS.value("lcsync_deliveries_total")

    with caplog.at_level(logging.INFO, logger="lcsync.export"):
        result = deliver_staged(Layout(config.data_dir), "production", database, now=T0 + timedelta(minutes=65))

    assert [item.target.name for item in result.delivered] == [path.name]
    assert not path.exists()
    assert (reports_dir(config) / path.name).read_bytes() == content
    (run,) = report_runs(database)
    assert run.status == "delivered"
    assert run.delivered_path == f"production/acme/reports/{path.name}"
    assert run.delivered_at is not None and run.delivered_at.replace(tzinfo=UTC) == T0 + timedelta(minutes=65)
    assert METRICS.value("lcsync_deliveries_total") == before + 1
    lines = [record for record in caplog.records if record.getMessage() == "report_delivered"]
    assert len(lines) == 1 and lines[0].fields["client"] == "acme"  # type: ignore[attr-defined]


def test_delivering_twice_delivers_nothing_twice(setup: tuple[Config, Database]) -> None:
    config, database = setup
    staged(config, database, count=2)
    layout = Layout(config.data_dir)

    first = deliver_staged(layout, "production", database)
    second = deliver_staged(layout, "production", database)

    assert len(first.delivered) == 2 and second.delivered == [] and second.failed == []
    assert len(listing(config)) == 2


def test_crash_between_move_and_record_is_repaired(setup: tuple[Config, Database]) -> None:
    """The name was claimed and the file moved, then the process died before recording the delivery."""
    config, database = setup
    (path,) = staged(config, database)
    target = reports_dir(config) / path.name
    target.parent.mkdir(parents=True)
    os.replace(path, target)
    with database.engine.begin() as connection:
        connection.execute(update(ReportRun).values(delivered_path=f"production/acme/reports/{path.name}"))

    result = deliver_staged(Layout(config.data_dir), "production", database)

    assert [(item.target.name, item.repaired) for item in result.delivered] == [(path.name, True)]
    assert listing(config) == [path.name]
    assert report_runs(database)[0].status == "delivered"


def test_crash_between_link_and_unlink_is_repaired(setup: tuple[Config, Database]) -> None:
    config, database = setup
    (path,) = staged(config, database)
    target = reports_dir(config) / path.name
    target.parent.mkdir(parents=True)
    os.link(path, target)
    with database.engine.begin() as connection:
        connection.execute(update(ReportRun).values(delivered_path=f"production/acme/reports/{path.name}"))

    result = deliver_staged(Layout(config.data_dir), "production", database)

    assert len(result.delivered) == 1
    assert not path.exists() and listing(config) == [path.name]


def test_a_file_already_in_reports_is_never_overwritten(setup: tuple[Config, Database]) -> None:
    config, database = setup
    (path,) = staged(config, database)
    reports = reports_dir(config)
    reports.mkdir(parents=True)
    # Appeared after generation (e.g. an operator copied a file in): delivery picks another name.
    (reports / path.name).write_text("someone else's file")

    result = deliver_staged(Layout(config.data_dir), "production", database)

    stem = path.name.removesuffix(".csv")
    assert [item.target.name for item in result.delivered] == [f"{stem}_2.csv"]
    assert (reports / path.name).read_text() == "someone else's file"


def test_a_missing_outbox_file_fails_with_a_reason(setup: tuple[Config, Database]) -> None:
    config, database = setup
    (path,) = staged(config, database)
    path.unlink()

    result = deliver_staged(Layout(config.data_dir), "production", database)

    assert result.delivered == [] and len(result.failed) == 1
    assert "missing from the outbox" in result.failed[0].reason
    run = report_runs(database)[0]
    assert (run.status, run.message) == ("failed", "the generated file is missing from the outbox")
    assert deliver_staged(Layout(config.data_dir), "production", database).failed == []  # reported once


def test_two_deliverers_racing_deliver_each_report_once(write_config: Callable[..., Path], database_url: str) -> None:
    config = report_config(write_config, database_url=database_url)
    first = open_database(config)
    second = Database("production", config.database_url("production"))
    try:
        paths = staged(config, first, count=12)
        before = METRICS.value("lcsync_deliveries_total")
        results = []
        barrier = threading.Barrier(2)

        def deliver(database: Database) -> None:
            barrier.wait()
            results.append(deliver_staged(Layout(config.data_dir), "production", database))

        threads = [threading.Thread(target=deliver, args=(database,)) for database in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        delivered = [item.run_id for result in results for item in result.delivered]
        assert sorted(delivered) == sorted(run.id for run in report_runs(first))
        assert all(not result.failed for result in results)
        assert listing(config) == sorted(path.name for path in paths)
        assert METRICS.value("lcsync_deliveries_total") == before + 12
        assert {run.status for run in report_runs(first)} == {"delivered"}
    finally:
        first.dispose()
        second.dispose()


def test_only_the_given_runs_are_delivered(setup: tuple[Config, Database]) -> None:
    config, database = setup
    paths = staged(config, database, count=2)
    runs = report_runs(database)

    result = deliver_staged(Layout(config.data_dir), "production", database, run_ids=[runs[1].id])

    assert [item.run_id for item in result.delivered] == [runs[1].id]
    assert listing(config) == [paths[1].name]


def test_manual_runs_of_other_reports_wait_for_delivery(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config, REPORT, {**REPORT, "name": "second", "format": "xlsx"})
    database = open_database(config)
    try:
        generate_report(config, "production", database, "acme", "second", now=T0)
        assert listing(config) == []
        deliver_staged(Layout(config.data_dir), "production", database)
        assert listing(config) == ["second_20260405_230000.xlsx"]
    finally:
        database.dispose()


def test_retention_removes_only_what_is_old_enough(
    setup: tuple[Config, Database], caplog: pytest.LogCaptureFixture
) -> None:
    from export.retention import remove_expired

    config, database = setup
    layout = Layout(config.data_dir)
    now = datetime(2026, 10, 5, 3, 30, tzinfo=UTC)
    day = 86400

    def file(path: Path, age_days: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        stamp = now.timestamp() - age_days * day
        os.utime(path, (stamp, stamp))
        return path

    old_report = file(layout.reports_dir("production", "acme") / "old.csv", 31)
    new_report = file(layout.reports_dir("production", "acme") / "new.csv", 29)
    old_result = file(layout.results_dir("production", "globex") / "old.results.csv", 40)
    other_env = file(layout.reports_dir("sandbox", "acme") / "old.csv", 99)
    old_upload = file(layout.archive_dir("production", "acme") / "1_acme_users.csv", 91)
    kept_upload = file(layout.archive_dir("production", "acme") / "2_acme_users.csv", 60)
    leftover = file(layout.outbox_dir("production", "acme") / ".abc.csv.tmp", 2)

    with caplog.at_level(logging.INFO, logger="lcsync.export"):
        removed = remove_expired(layout, "production", database, retention_days=30, archive_days=90, now=now)

    assert {item.path for item in removed} == {old_report, old_result, old_upload, leftover}
    assert new_report.exists() and other_env.exists() and kept_upload.exists()
    logged = [record for record in caplog.records if record.getMessage() == "retention_removed"]
    assert len(logged) == 4
