"""`lcsync report run`, `lcsync report deliver` and `lcsync schedule`, through click's runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from reporting import REPORT, open_database, seed_users

from core.config import load_config
from core.layout import Layout
from lcsync.cli import cli


def configure(write_config: Callable[..., Path], **extra: Any) -> Path:
    def edit(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["reports"] = [{**REPORT, **extra}]

    return write_config(edit)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_report_run_stages_the_file_and_prints_its_path(write_config: Callable[..., Path]) -> None:
    path = configure(write_config)
    config = load_config(path)
    database = open_database(config)
    seed_users(database, count=4)
    database.dispose()

    result = invoke("report", "run", "acme/staff_list", "--env", "production", "--config", str(path))

    assert result.exit_code == 0, result.output
    printed = Path(result.output.strip().splitlines()[-1])
    assert printed.parent == Layout(config.data_dir).outbox_dir("production", "acme")
    assert printed.name.startswith("staff_list_") and printed.exists()
    assert "4 rows" in result.output


def test_report_run_usage_errors_exit_2(write_config: Callable[..., Path]) -> None:
    path = str(configure(write_config))

    assert invoke("report", "run", "acme", "--env", "production", "--config", path).exit_code == 2
    missing = invoke("report", "run", "acme/nope", "--env", "production", "--config", path)
    assert missing.exit_code == 2 and "no report 'nope'" in missing.output
    assert invoke("report", "run", "acme/staff_list", "--env", "nowhere", "--config", path).exit_code == 2


def test_report_deliver_prints_what_moved_and_is_idempotent(write_config: Callable[..., Path]) -> None:
    path = str(configure(write_config))
    invoke("report", "run", "acme/staff_list", "--env", "production", "--config", path)

    first = invoke("report", "deliver", "--config", path)
    second = invoke("report", "deliver", "--env", "production", "--config", path)

    assert first.exit_code == 0 and second.exit_code == 0
    assert "production: acme/staff_list: outbox/production/acme/staff_list_" in first.output
    assert "-> production/acme/reports/staff_list_" in first.output
    assert second.output.strip() == "production: nothing staged"


def test_report_deliver_exits_1_when_a_report_cannot_be_delivered(write_config: Callable[..., Path]) -> None:
    path = str(configure(write_config))
    run = invoke("report", "run", "acme/staff_list", "--env", "production", "--config", path)
    Path(run.output.strip().splitlines()[-1]).unlink()

    result = CliRunner().invoke(cli, ["report", "deliver", "--config", path])

    assert result.exit_code == 1
    assert "NOT delivered: the generated file is missing from the outbox" in result.output


def test_schedule_lists_every_job_in_local_time_and_utc_across_the_dst_change(
    write_config: Callable[..., Path],
) -> None:
    path = str(configure(write_config, schedule="weekly:mon"))

    result = invoke("schedule", "--from", "2026-10-04", "--days", "2", "--config", path)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "sandbox: imports on arrival (within seconds of each upload)" in lines
    expected = [
        ("Sun 2026-10-04 00:00 AEST", "2026-10-03 14:00 UTC", "production", "import run (0 0 * * *)"),
        ("Sun 2026-10-04 00:05 AEST", "2026-10-03 14:05 UTC", "production", "deliver reports (5 0 * * *)"),
        ("Sun 2026-10-04 03:30 AEDT", "2026-10-03 16:30 UTC", "sandbox", "retention (30 3 * * *)"),
        ("Mon 2026-10-05 00:00 AEDT", "2026-10-04 13:00 UTC", "production", "generate acme/staff_list (0 0 * * mon)"),
        ("Mon 2026-10-05 00:05 AEDT", "2026-10-04 13:05 UTC", "production", "deliver reports (5 0 * * *)"),
    ]
    table = [tuple(part.strip() for part in line.split("  ") if part.strip()) for line in lines]
    for row in expected:
        assert row in table
    assert not any("Tue" in line for line in lines)


def test_schedule_refuses_a_bad_date(write_config: Callable[..., Path]) -> None:
    result = invoke("schedule", "--from", "5/10/2026", "--config", str(configure(write_config)))

    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
