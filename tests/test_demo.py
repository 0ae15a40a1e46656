"""lcsync demo: seeds the sample configuration's demo client in each of its environments, idempotently, so that the
demo reports have rows at once."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from core.config import load_config
from core.db import Database
from core.models import CustomValue, Membership, User
from core.training import Completion, Course
from export.queries import report_rows
from lcsync.cli import cli

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {"LCSYNC_CONFIG": str(REPOSITORY / "accounts.yaml"), "LCSYNC_DATA_DIR": str(tmp_path / "var")}


def counts(url: str) -> tuple[int, ...]:
    database = Database("x", url)
    try:
        with database.session() as session:
            return tuple(
                session.scalar(select(func.count()).select_from(model)) or 0
                for model in (User, Membership, CustomValue, Course, Completion)
            )
    finally:
        database.dispose()


def test_demo_twice_seeds_every_environment_once(environ: dict[str, str]) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["demo"], env=environ)
    assert first.exit_code == 0, first.output
    assert re.findall(r"^(\w+): demo: 50 users, \d+ groups, 8 courses, \d+ completions$", first.output, re.M) == [
        "sandbox",
        "production",
    ]
    config = load_config(REPOSITORY / "accounts.yaml", environ)
    before = {env: counts(config.database_url(env)) for env in ("sandbox", "production")}
    assert before["sandbox"] == before["production"]
    users, memberships, custom_values, courses, completions = before["sandbox"]
    assert (users, memberships, courses) == (50, 150, 8)
    assert 0 < custom_values < 50 and 200 < completions < 400

    second = runner.invoke(cli, ["demo"], env=environ)
    assert second.exit_code == 0, second.output
    assert second.output == first.output
    assert {env: counts(config.database_url(env)) for env in ("sandbox", "production")} == before


def test_demo_reports_have_rows_after_seeding(environ: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["demo", "--env", "sandbox"], env=environ)
    assert result.exit_code == 0, result.output
    config = load_config(REPOSITORY / "accounts.yaml", environ)
    database = Database("sandbox", config.database_url("sandbox"))
    try:
        with database.engine.connect() as connection:
            for report in config.clients["demo"].reports:
                header, rows = report_rows(connection, "demo", report, today=date.today())
                found = list(rows)
                assert found, report.name
                assert all(len(row) == len(header) for row in found)
                if report.name == "compliance_report":
                    statuses = {row[header.index("completion_status")] for row in found}
                    assert statuses == {"completed", "in_progress", "not_started", "expired"}
                    recent = [row for row in found if (row[header.index("completed_at")] or date.min) >=
                              date.fromordinal(date.today().toordinal() - 30)]  # fmt: skip
                    assert recent
    finally:
        database.dispose()


def test_demo_for_an_unknown_client_or_environment_is_a_usage_error(environ: dict[str, str]) -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli, ["demo", "--client", "nobody"], env=environ)
    assert unknown.exit_code == 2
    assert "unknown client 'nobody'" in unknown.output
    no_account = runner.invoke(cli, ["demo", "--env", "staging"], env=environ)
    assert no_account.exit_code == 2
    assert "no account in environment 'staging'" in no_account.output


def test_completions_import_command_prints_row_errors_and_exits_1_for_a_rejected_file(
    environ: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["demo", "--env", "sandbox"], env=environ).exit_code == 0
    good = tmp_path / "completions.csv"
    good.write_text(
        "employee_id,course_code,course_name,completion_status,completed_at,expires_at,score\n"
        "D0001,NEW-1,New course,completed,2026-01-05,,75\n"
        "NOBODY,NEW-1,New course,completed,,,\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        cli, ["completions", "import", str(good), "--client", "demo", "--env", "sandbox"], env=environ
    )
    assert result.exit_code == 0, result.output
    assert "line 3, employee_id: no user with employee_id 'NOBODY'" in result.output
    assert "2 rows: 1 created, 0 updated, 0 unchanged, 1 errors; 1 courses created" in result.output

    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    rejected = runner.invoke(
        cli, ["completions", "import", str(empty), "--client", "demo", "--env", "sandbox"], env=environ
    )
    assert rejected.exit_code == 1
    assert rejected.output.startswith("Error: the file is empty")
