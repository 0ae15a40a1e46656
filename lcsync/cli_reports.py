"""The report and schedule commands (SPEC 7), registered on the ``lcsync`` group of lcsync.cli:

    lcsync report run CLIENT/NAME --env E      generate now; staged for the next delivery; prints the outbox file
    lcsync report deliver [--env E]            deliver staged reports now; prints what moved; exit 1 if any failed
    lcsync schedule [--from DATE] [--days N]   when each job fires, local time and UTC

Thin: the work is export.generate, export.deliver and lcsync.schedule; errors become exit statuses in lcsync.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from core.config import Config
from core.cron import is_on_arrival
from core.db import Database
from core.errors import UsageError
from core.layout import Layout
from export.deliver import deliver_staged
from export.generate import find_report, generate_report
from export.writers import Progress
from lcsync.cli import _echo_table, _environments, _load, cli, config_option
from lcsync.schedule import describe, firings


@cli.group("report")
def report() -> None:
    """Saved reports: generate one now, deliver staged reports now."""


@report.command("run")
@click.argument("target", metavar="CLIENT/NAME")
@click.option("--env", required=True, help="Environment whose database the report reads.")
@config_option
def report_run(target: str, env: str, config_file: Path | None) -> None:
    """Generate the report NAME of CLIENT now, into the outbox.

    The file is staged for the next delivery (00:05 by default, or `lcsync report deliver`); its path in the outbox
    is printed. A large report shows a progress bar on a terminal. Exit status 1 when it could not be generated.
    """
    client, sep, name = target.partition("/")
    if not sep or not client or not name:
        raise UsageError(f"{target!r}: give the report as CLIENT/NAME (e.g. acme/compliance_report)")
    config = _load(config_file)
    _environments(config, env)
    report_config = find_report(config, client, name)
    database = _open(config, env)
    try:
        with _progress(config, database, client, report_config) as progress:
            generated = generate_report(config, env, database, client, report_config, progress=progress)
    finally:
        database.dispose()
    assert generated.path is not None  # a manual run is never one another node made first
    click.echo(f"{client}/{name} ({env}): {generated.rows} rows, staged for the next delivery")
    click.echo(str(generated.path))


@report.command("deliver")
@click.option("--env", help="Only this environment. Default: every environment.")
@config_option
@click.pass_context
def report_deliver(ctx: click.Context, env: str | None, config_file: Path | None) -> None:
    """Deliver every staged report into its client's reports/ folder now.

    Prints each file moved (outbox -> reports/) and each one that could not be. Running it again delivers nothing
    twice. Exit status 1 when any report could not be delivered.
    """
    config = _load(config_file)
    layout = Layout(config.data_dir)
    failed = 0
    for name in _environments(config, env):
        database = _open(config, name)
        try:
            result = deliver_staged(layout, name, database)
        finally:
            database.dispose()
        for item in result.delivered:
            note = " (repaired: moved by an earlier run)" if item.repaired else ""
            click.echo(f"{name}: {item.client}/{item.report}: {item.source} -> {item.target}{note}")
        for missed in result.failed:
            click.echo(f"{name}: {missed.client}/{missed.report}: {missed.file_name} NOT delivered: {missed.reason}",
                       err=True)  # fmt: skip
        if not result.delivered and not result.failed:
            click.echo(f"{name}: nothing staged")
        failed += len(result.failed)
    ctx.exit(1 if failed else 0)


@cli.command("schedule")
@click.option(
    "--from", "start", metavar="YYYY-MM-DD", help="First day listed (local time). Default: today.",
)  # fmt: skip
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366), help="Days listed.")
@config_option
def schedule(start: str | None, days: int, config_file: Path | None) -> None:
    """When each scheduled job fires, in local time (the configured timezone) and UTC.

    Lists the cron import runs, report generations, deliveries and retention, day by day, the days the clocks change
    included. Environments that import on arrival have no import times.
    """
    config = _load(config_file)
    zone = config.zone
    if start is None:
        first = datetime.now(UTC).astimezone(zone).date()
    else:
        try:
            first = date.fromisoformat(start)
        except ValueError:
            raise UsageError(f"--from {start!r}: expected a date as YYYY-MM-DD") from None
    begin = datetime.combine(first, time(0), tzinfo=zone) - timedelta(microseconds=1)
    end = datetime.combine(first + timedelta(days=days), time(0), tzinfo=zone) - timedelta(microseconds=1)
    rows = [
        (
            moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
            moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            job.env,
            describe(job),
        )
        for moment, job in firings(config, begin, end)
    ]
    click.echo(f"timezone: {config.timezone}; {days} day{'s' if days != 1 else ''} from {first.isoformat()}")
    for env, environment in config.environments.items():
        if is_on_arrival(environment.import_schedule):
            click.echo(f"{env}: imports on arrival (within seconds of each upload)")
    _echo_table(("LOCAL", "UTC", "ENV", "JOB"), rows)


def _open(config: Config, env: str) -> Database:
    database = Database(env, config.database_url(env))
    try:
        database.upgrade()  # a database nobody has migrated yet simply has no report runs
    except Exception:
        database.dispose()
        raise
    return database


@contextmanager
def _progress(config: Config, database: Database, client: str, report_config: Any) -> Iterator[Progress | None]:
    """A progress bar of the rows written, on a terminal only (the rows are counted first)."""
    if not sys.stderr.isatty():
        yield None
        return
    from export.queries import report_statement

    today = datetime.now(UTC).astimezone(config.zone).date()
    with database.engine.connect() as connection:
        statement = report_statement(connection, client, report_config, today=today)
        total = connection.execute(select(func.count()).select_from(statement.subquery())).scalar_one()
    with click.progressbar(length=max(int(total), 1), label="writing", file=sys.stderr) as bar:

        def update(done: int) -> None:
            bar.update(done - bar.pos)

        yield update
