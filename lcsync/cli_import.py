"""``lcsync import ...`` and ``lcsync template check``: the command line of the import (logic in ingest/)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from core.config import Config, ImportConfig
from core.db import Database
from core.errors import DatabaseUnavailable, UsageError
from core.models import ImportJob, JobStatus
from ingest import jobs, worker
from lcsync.cli import (
    _echo_table,
    _environments,
    _load,
    _local,
    _size,
    cli,
    config_option,
)

WAITING = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.HELD)
FINISHED = (JobStatus.APPLIED, JobStatus.REJECTED, JobStatus.FAILED, JobStatus.DUPLICATE)
HISTORY_HEADER = ("JOB", "CLIENT", "FILE", "STATUS", "FINISHED", "ROWS", "NEW", "UPD", "SAME", "REACT", "SUSP", "ERR",
                  "RESULT", "MESSAGE")  # fmt: skip


# --- import ------------------------------------------------------------------------------------------------------


@cli.group("import")
def import_() -> None:
    """User Data file imports."""


@import_.command("status")
@config_option
@click.option("--env", help="Only this environment. Default: every environment.")
@click.option("--client", help="Only this client.")
def import_status(config_file: Path | None, env: str | None, client: str | None) -> None:
    """Jobs that are queued, running or held, and each client's last finished job, per environment.

    Times are in the configured time zone.
    """
    config = _load(config_file)
    environments = _environments(config, env)
    if client is not None and client not in config.clients:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients)})")
    clients = [client] if client else list(config.clients)
    for index, env_name in enumerate(environments):
        if index:
            click.echo()
        database = Database(env_name, config.database_url(env_name))
        try:
            database.upgrade()  # a database nobody has migrated yet simply has no jobs
            waiting, last = _job_status(database, clients)
        finally:
            database.dispose()
        click.echo(f"{env_name}:")
        if waiting:
            header = ("JOB", "CLIENT", "FILE", "SIZE", "STATUS", "RECEIVED", "VIA", "USER", "IP")
            _echo_table(header, [_waiting_row(job, config.zone) for job in waiting], indent="  ")
        else:
            click.echo("  no queued, running or held jobs")
        held = [job for job in waiting if job.status == JobStatus.HELD]
        if held:
            click.echo(f"  held, waiting for `lcsync import release JOB --env {env_name}` or a corrected upload:")
            _echo_table(
                ("JOB", "CLIENT", "WHY"), [(f"#{job.id}", job.client, job.message or "") for job in held], indent="    "
            )
        click.echo("  last finished:")
        rows = [_last_row(name, last.get(name), config.zone) for name in clients]
        _echo_table(("CLIENT", "JOB", "FILE", "STATUS", "FINISHED", "MESSAGE"), rows, indent="    ")


@import_.command("file")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--client", required=True, help="The client whose users the file describes.")
@click.option("--env", required=True, help="Environment whose user store receives the file.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing, write nothing to results/.")
@config_option
@click.pass_context
def import_file(ctx: click.Context, file: Path, client: str, env: str, dry_run: bool, config_file: Path | None) -> None:
    """Import FILE for a client now, bypassing FTP (upload/ is left alone).

    The file is copied into the queue as a job and imported at once, exactly as an upload would be: its result file
    goes to the client's results/ folder and its path is printed. With --dry-run the file is read, validated and
    applied inside a transaction that is rolled back: nothing changes, no job is recorded, and the would-be result
    file is written to a temporary folder instead (its path is printed). Exit status 1 when the file is (or would
    be) rejected, held or failed.
    """
    config = _load(config_file)
    _import_config(config, client)
    with _environment(config, env) as where, _progress() as progress:
        if dry_run:
            report = worker.dry_run(where, client, file, progress=progress)
        else:
            job = jobs.spool_file(where, client, file)
            node = jobs.node_id()
            jobs.requeue_stale(where.database, node)
            claimed = jobs.claim(where.database, node, job_id=job.id)
            if claimed is None:
                click.echo(f"waiting for the running import of {client} in {env} to finish...", err=True)
            while claimed is None:
                time.sleep(1.0)
                claimed = jobs.claim(where.database, node, job_id=job.id)
            report = worker.process(where, claimed, node, progress=progress)
    _echo_report(report, env, dry_run=dry_run)
    ctx.exit(1 if report.failed else 0)


@import_.command("run")
@click.option("--env", help="Only this environment. Default: every environment.")
@config_option
@click.pass_context
def import_run(ctx: click.Context, env: str | None, config_file: Path | None) -> None:
    """Process the queue now: every queued job, oldest first, whatever the environment's import_schedule.

    Jobs left running by an import that stopped (a crash, kill -9) on this host are put back in the queue first.
    Exit status 1 when a job was rejected, held or failed.
    """
    config = _load(config_file)
    failed = False
    for env_name in _environments(config, env):
        with _environment(config, env_name) as where:
            node = jobs.node_id()
            jobs.requeue_stale(where.database, node)
            reports = worker.run_queue(where, node)
        if not reports:
            click.echo(f"{env_name}: no queued jobs")
        for report in reports:
            _echo_report(report, env_name)
            failed = failed or report.failed
    ctx.exit(1 if failed else 0)


@import_.command("history")
@click.option("--env", help="Only this environment. Default: every environment.")
@click.option("--client", help="Only this client.")
@click.option("--limit", default=20, show_default=True, help="Jobs shown per environment, newest first.")
@config_option
def import_history(env: str | None, client: str | None, limit: int, config_file: Path | None) -> None:
    """Processed jobs (held ones included), newest first: status, row counts (new, updated, unchanged,
    reactivated, suspended, errors), the result file and the reason. Times are in the configured time zone."""
    config = _load(config_file)
    if client is not None and client not in config.clients:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients)})")
    for index, env_name in enumerate(_environments(config, env)):
        if index:
            click.echo()
        with (
            _environment(config, env_name) as where,
            _database_errors(where.database),
            where.database.session() as session,
        ):
            done = [str(status) for status in (*FINISHED, JobStatus.HELD)]
            query = select(ImportJob).where(ImportJob.status.in_(done))
            if client is not None:
                query = query.where(ImportJob.client == client)
            jobs = list(session.scalars(query.order_by(ImportJob.id.desc()).limit(limit)))
        click.echo(f"{env_name}:")
        if not jobs:
            click.echo("  no finished jobs")
            continue
        _echo_table(HISTORY_HEADER, [_history_row(job, config.zone) for job in jobs], indent="  ")


@import_.command("release")
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--env", required=True, help="Environment of the job.")
@config_option
def import_release(job_id: int, env: str, config_file: Path | None) -> None:
    """Release a held job (or retry a failed one): back to the queue, allowed past the safety hold once.

    A running `lcsync serve` imports it within seconds (whatever the import_schedule); else `lcsync import run`.
    """
    config = _load(config_file)
    with _environment(config, env) as where:
        job = jobs.release(where.database, job_id)
    click.echo(f"job {job.id} ({job.client}, {job.filename}) released: queued again, past the safety hold once.")
    click.echo(f"A running `lcsync serve` imports it within seconds; or run `lcsync import run --env {env}`.")


# --- templates ---------------------------------------------------------------------------------------------------


@cli.group()
def template() -> None:
    """User Data templates."""


@template.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--client", required=True, help="The client whose template FILE is checked against.")
@config_option
@click.pass_context
def template_check(ctx: click.Context, file: Path, client: str, config_file: Path | None) -> None:
    """Is FILE (a client's sample or template) complete for its template? What is missing or wrong?

    Prints the report; exit status 1 when the file could not be imported as it is. Nothing is written.
    """
    config = _load(config_file)
    template = _import_config(config, client).template
    from ingest.template_check import check_template  # written alongside; imported only when used

    report = check_template(file, template)
    click.echo(report.render())
    ctx.exit(0 if report.ok else 1)


# --- import helpers ----------------------------------------------------------------------------------------------


def _import_config(config: Config, client: str) -> ImportConfig:
    if client not in config.clients:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients)})")
    found = config.clients[client].import_
    if found is None:
        raise UsageError(f"client {client!r} has no import section in the configuration")
    return found


@contextmanager
def _environment(config: Config, env: str) -> Iterator[jobs.Environment]:
    """An environment with its database migrated, disposed of afterwards."""
    _environments(config, env)
    database = Database(env, config.database_url(env))
    try:
        database.upgrade()
        yield jobs.Environment(config, env, database)
    finally:
        database.dispose()


@contextmanager
def _database_errors(database: Database) -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}") from exc


@contextmanager
def _progress() -> Iterator[worker.Progress | None]:
    """A progress bar of the rows applied, on a terminal only."""
    if not sys.stderr.isatty():
        yield None
        return
    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(click.progressbar(length=max(total, 1), label="applying", file=sys.stderr))
            bars[0].__enter__()
        bars[0].update(done - bars[0].pos)

    try:
        yield update
    finally:
        if bars:
            bars[0].__exit__(None, None, None)


def _echo_report(report: worker.JobReport, env: str, *, dry_run: bool = False) -> None:
    summary = report.summary
    if dry_run:
        click.echo(f"dry run: {report.filename} for {report.client} in {env} would be {summary.status}")
    else:
        click.echo(f"job {report.job_id}: {report.filename} for {report.client} in {env}: {summary.status}")
    if summary.text():
        click.echo(f"  {summary.text()}")
    if report.result_path is not None:
        where = "result file (a temporary copy; nothing in results/)" if dry_run else "result file"
        click.echo(f"  {where}: {report.result_path}")


def _history_row(job: ImportJob, zone: ZoneInfo) -> tuple[str, ...]:
    counts = (
        job.rows_total,
        job.rows_created,
        job.rows_updated,
        job.rows_unchanged,
        job.rows_reactivated,
        job.rows_suspended,
        job.rows_error,
    )
    finished = _local(job.finished_at or job.received_at, zone)
    result = Path(job.result_path).name if job.result_path else "-"
    message = (job.message or "").replace("\n", " ")
    return (
        f"#{job.id}",
        job.client,
        job.filename,
        job.status,
        finished,
        *("-" if count is None else str(count) for count in counts),
        result,
        message,
    )


def _waiting_row(job: ImportJob, zone: ZoneInfo) -> tuple[str, ...]:
    return (
        str(job.id), job.client, job.filename, _size(job.size), job.status, _local(job.received_at, zone),
        job.received_via, job.username or "-", job.remote_ip or "-",
    )  # fmt: skip


def _last_row(client: str, job: ImportJob | None, zone: ZoneInfo) -> tuple[str, ...]:
    if job is None:
        return (client, "-", "none yet", "", "", "")
    finished = _local(job.finished_at or job.received_at, zone)
    message = job.message or ""
    if job.result_path:
        message = f"{message} (results/{Path(job.result_path).name})".strip()
    return (client, f"#{job.id}", job.filename, job.status, finished, message)


def _job_status(database: Database, clients: Sequence[str]) -> tuple[list[ImportJob], dict[str, ImportJob]]:
    """The waiting jobs of ``clients``, oldest first, and each client's last finished job."""
    try:
        with database.session() as session:
            waiting = list(
                session.scalars(
                    select(ImportJob)
                    .where(ImportJob.status.in_([str(status) for status in WAITING]))
                    .where(ImportJob.client.in_(clients))
                    .order_by(ImportJob.received_at, ImportJob.id)
                )
            )
            last: dict[str, ImportJob] = {}
            for client in clients:
                job = session.scalar(
                    select(ImportJob)
                    .where(ImportJob.client == client, ImportJob.status.in_([str(status) for status in FINISHED]))
                    .order_by(func.coalesce(ImportJob.finished_at, ImportJob.received_at).desc(), ImportJob.id.desc())
                    .limit(1)
                )
                if job is not None:
                    last[client] = job
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}") from exc
    return waiting, last
