"""Generating a report into the outbox: the file name, never overwriting, once per scheduled fire time."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from reporting import REPORT, open_database, report_config, report_runs, seed_users

from core.errors import UsageError
from core.layout import Layout
from export.generate import generate_report, report_file_name

MELBOURNE = ZoneInfo("Australia/Melbourne")
# Mon 5 Oct 2026 00:00:03 AEDT, the first Monday of daylight saving time.
NOW = datetime(2026, 10, 5, 0, 0, 3, tzinfo=MELBOURNE)


def outbox_files(config: Any) -> list[str]:
    folder = Layout(config.data_dir).outbox_dir("production", "acme")
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_report_is_written_to_the_outbox_and_staged(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config)
    database = open_database(config)
    try:
        seed_users(database, count=3)

        generated = generate_report(config, "production", database, "acme", "staff_list", now=NOW)

        assert generated.path is not None
        assert generated.path.name == "staff_list_20261005_000003.csv"
        assert generated.path.parent == Layout(config.data_dir).outbox_dir("production", "acme")
        text = generated.path.read_bytes().decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == ["employee_id", "first_name", "last_name", "email", "start_date"]
        assert rows[1] == ["000000", "First0", "Last0", "user0@example.com", "2026-01-01"]
        assert len(rows) == 4
        (run,) = report_runs(database)
        assert (run.status, run.rows, run.file_name, run.scheduled_for) == ("staged", 3, generated.path.name, None)
        assert run.outbox_path == "outbox/production/acme/staff_list_20261005_000003.csv"
        assert outbox_files(config) == [generated.path.name]  # no temporary file left
    finally:
        database.dispose()


def test_xlsx_report_has_typed_cells(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config, {**REPORT, "format": "xlsx"})
    database = open_database(config)
    try:
        seed_users(database, count=2, first_name="=cmd|' /C calc'!A0 ")

        generated = generate_report(config, "production", database, "acme", "staff_list", now=NOW)

        assert generated.path is not None and generated.path.suffix == ".xlsx"
        workbook = openpyxl.load_workbook(generated.path)
        sheet = workbook.worksheets[0]
        assert sheet["A1"].value == "employee_id"
        assert sheet["B2"].value.startswith("'=cmd")
        assert sheet["E2"].is_date
        workbook.close()
    finally:
        database.dispose()


def test_empty_report_is_a_header_only_file(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config, {**REPORT, "bom": False})
    database = open_database(config)
    try:
        generated = generate_report(config, "production", database, "acme", "staff_list", now=NOW)

        assert generated.path is not None and generated.rows == 0
        assert generated.path.read_bytes() == b"employee_id,first_name,last_name,email,start_date\r\n"
    finally:
        database.dispose()


def test_report_name_is_made_safe_for_file_systems() -> None:
    when = datetime(2027, 4, 4, 2, 30, 0)

    assert (
        report_file_name("Compliance Report (AU)/2027", when, "xlsx")
        == "Compliance_Report_AU_2027_20270404_023000.xlsx"
    )
    assert report_file_name("../..", when, "csv") == "report_20270404_023000.csv"
    assert report_file_name("x", when, "csv", attempt=2) == "x_20270404_023000_2.csv"


def test_a_second_file_in_the_same_second_never_overwrites_the_first(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config, {**REPORT, "bom": False})
    database = open_database(config)
    try:
        seed_users(database, count=1)
        layout = Layout(config.data_dir)
        reports = layout.reports_dir("production", "acme")
        reports.mkdir(parents=True)
        (reports / "staff_list_20261005_000003_3.csv").write_text("delivered earlier")

        paths = [generate_report(config, "production", database, "acme", "staff_list", now=NOW).path for _ in range(3)]

        assert [path.name for path in paths if path] == [
            "staff_list_20261005_000003.csv",
            "staff_list_20261005_000003_2.csv",
            "staff_list_20261005_000003_4.csv",  # _3 is taken in the client's reports/ folder
        ]
        assert (reports / "staff_list_20261005_000003_3.csv").read_text() == "delivered earlier"
        assert len(report_runs(database)) == 3
    finally:
        database.dispose()


def test_a_scheduled_run_is_generated_once_per_fire_time(write_config: Callable[..., Path], database_url: str) -> None:
    config = report_config(write_config, database_url=database_url)
    fire = datetime(2026, 10, 4, 13, 0, tzinfo=UTC)  # Mon 5 Oct 00:00 AEDT
    databases = [open_database(config), open_database(config)]
    try:
        seed_users(databases[0], count=50)
        results: list[Any] = []
        barrier = threading.Barrier(2)

        def node(index: int) -> None:
            barrier.wait()
            results.append(generate_report(config, "production", databases[index], "acme", "staff_list", now=NOW,
                                           scheduled_for=fire))  # fmt: skip

        threads = [threading.Thread(target=node, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        again = generate_report(config, "production", databases[0], "acme", "staff_list", now=NOW, scheduled_for=fire)

        assert again.run_id is None
        assert sorted(result.run_id is None for result in results) == [False, True]
        (run,) = report_runs(databases[0])
        assert run.scheduled_for is not None
        assert run.scheduled_for.replace(tzinfo=UTC) == fire
        assert outbox_files(config) == [run.file_name]
    finally:
        for database in databases:
            database.dispose()


def test_a_failing_query_leaves_no_file(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config)
    database = open_database(config)

    def broken(_connection: Any, _client: str, _report: Any, *, today: Any) -> tuple[list[str], Iterator[tuple[Any]]]:
        def rows() -> Iterator[tuple[Any]]:
            yield ("1",)
            raise RuntimeError("the database went away")

        return ["a"], rows()

    try:
        with pytest.raises(RuntimeError):
            generate_report(config, "production", database, "acme", "staff_list", now=NOW, rows_source=broken)

        assert outbox_files(config) == []
        assert report_runs(database) == []
    finally:
        database.dispose()


def test_a_report_is_only_generated_in_its_environments(write_config: Callable[..., Path]) -> None:
    config = report_config(write_config)
    database = open_database(config, "sandbox")
    try:
        with pytest.raises(UsageError, match="not generated in 'sandbox'"):
            generate_report(config, "sandbox", database, "acme", "staff_list", now=NOW)
        with pytest.raises(UsageError, match="no report 'nope'"):
            generate_report(config, "sandbox", database, "acme", "nope", now=NOW)
    finally:
        database.dispose()
