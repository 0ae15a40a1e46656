"""The completions and demo commands (SPEC 7), registered on the ``lcsync`` group of lcsync.cli:

    lcsync completions import FILE --client C --env E   load training records; exit 1 if the file is rejected
    lcsync demo [--client C] [--env E]                   seed the demo client's users, groups, courses, completions

Thin: the work is ingest.completions and lcsync.demo; errors become exit statuses in lcsync.cli.
"""

from __future__ import annotations

from pathlib import Path

import click

from core.db import Database
from core.errors import UsageError
from ingest.completions import import_completions
from lcsync.cli import _environments, _load, cli, config_option
from lcsync.demo import DEMO_CLIENT, seed_demo


@cli.group("completions")
def completions() -> None:
    """Training records: courses and completions that reports of source completions read."""


@completions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--client", required=True, help="The client whose users the completions belong to.")
@click.option("--env", required=True, help="Environment whose database receives them.")
@config_option
@click.pass_context
def completions_import(ctx: click.Context, file: Path, client: str, env: str, config_file: Path | None) -> None:
    """Load FILE: a CSV with the header
    employee_id,course_code,course_name,completion_status,completed_at,expires_at,score.

    Courses are created on first use; one completion per user and course is created or updated. Bad rows are
    printed (line, column, reason) and skipped; the rest is applied in one transaction. Exit status 1 when the file
    is rejected as a whole or no row could be applied.
    """
    config = _load(config_file)
    if client not in config.clients:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients)})")
    _environments(config, env)
    database = Database(env, config.database_url(env))
    try:
        database.upgrade()
        with database.session() as session:
            result = import_completions(session, client, file)
    finally:
        database.dispose()
    for error in result.errors:
        where = f"line {error.line}" + (f", {error.column}" if error.column else "")
        click.echo(f"{where}: {error.reason}", err=True)
    click.echo(f"{file.name} for {client} in {env}: {result.summary()}")
    ctx.exit(1 if result.failed else 0)


@cli.command("demo")
@click.option("--client", default=DEMO_CLIENT, show_default=True, help="The client to seed.")
@click.option("--env", help="Only this environment. Default: every environment the client has an account in.")
@config_option
def demo(client: str, env: str | None, config_file: Path | None) -> None:
    """Seed demo data: 50 users in groups, 8 courses and their completions (idempotent).

    Afterwards `lcsync report run demo/compliance_report --env sandbox` has rows to show.
    """
    config = _load(config_file)
    for name, counts in seed_demo(config, client, [env] if env else None).items():
        click.echo(
            f"{name}: {client}: {counts.users} users, {counts.groups} groups, {counts.courses} courses, "
            f"{counts.completions} completions"
        )
