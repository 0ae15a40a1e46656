"""The command line (SPEC section 7): thin click commands over core/ and lcsync/.

Exit status: 0 success, 1 when the work failed, 2 on a usage or configuration error. lcsync's own errors are
translated into messages and exit statuses here and nowhere else (``_Lcsync.invoke``):

    ConfigError      every problem on its own line (file:line: key.path: message)   exit 2
    UsageError       "Error: ..."                                                   exit 2
    LcsyncError      "Error: ..."                                                   exit 1

A password is never printed, except the one that `accounts add` and `accounts passwd` generate, once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from core.config import Config, ImportConfig, config_path, load_config
from core.db import Database
from core.errors import ConfigError, DatabaseUnavailable, LcsyncError, UsageError
from core.models import ImportJob, JobStatus
from core.passwords import generate_password, hash_password
from ingest import worker
from lcsync import accounts_file

F = TypeVar("F", bound=Callable[..., Any])

WAITING = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.HELD)
FINISHED = (JobStatus.APPLIED, JobStatus.REJECTED, JobStatus.FAILED, JobStatus.DUPLICATE)
HISTORY_HEADER = ("JOB", "CLIENT", "FILE", "STATUS", "FINISHED", "ROWS", "NEW", "UPD", "SAME", "REACT", "SUSP", "ERR",
                  "RESULT", "MESSAGE")  # fmt: skip


class _Lcsync(click.Group):
    """The top-level group: the one place where lcsync's errors become messages and exit statuses."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(problem, err=True)
            ctx.exit(2)
        except UsageError as exc:
            click.echo(f"Error: {_one_line(exc)}", err=True)
            ctx.exit(2)
        except LcsyncError as exc:
            click.echo(f"Error: {_one_line(exc)}", err=True)
            ctx.exit(1)


def _one_line(exc: Exception) -> str:
    """The message on one line (a database driver's message may span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def config_option(command: F) -> F:
    """``--config FILE`` on a command that reads accounts.yaml."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="Configuration file. Default: $LCSYNC_CONFIG, else ./accounts.yaml.",
    )(command)


def _load(config_file: Path | None) -> Config:
    return load_config(config_path(config_file))


def _environments(config: Config, env: str | None) -> list[str]:
    """The environments a command works on: the one given, else all of them."""
    if env is None:
        return list(config.environments)
    if env not in config.environments:
        raise UsageError(f"unknown environment {env!r} (known: {', '.join(config.environments)})")
    return [env]


@click.group(name="lcsync", cls=_Lcsync, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lcsync", prog_name="lcsync")
def cli() -> None:
    """lcsync: the FTP/FTPS bridge between the LMS and each client's HR or payroll system.

    Exit status: 0 success, 1 the work failed, 2 usage or configuration error.
    """


def main() -> None:
    """The `lcsync` console script and `python -m lcsync`."""
    cli(prog_name="lcsync")


# --- service and configuration -----------------------------------------------------------------------------------


@cli.command()
@config_option
@click.pass_context
def serve(ctx: click.Context, config_file: Path | None) -> None:
    """Run the FTP server, import worker, scheduler and watcher in one process.

    The configuration is checked first; an invalid one is refused (exit 2) and nothing starts.
    """
    config = _load(config_file)
    from lcsync import service  # imported here so that every other command works without the service's modules

    ctx.exit(service.serve(config))


@cli.command("check-config")
@config_option
def check_config(config_file: Path | None) -> None:
    """Validate the configuration without starting anything.

    Prints a summary and "ok", or every problem with its file, line and key path (exit 2).
    """
    path = config_path(config_file)
    config = load_config(path)
    accounts = sum(len(client.accounts) for client in config.clients.values())
    click.echo(f"environments: {', '.join(config.environments)}")
    click.echo(f"clients: {len(config.clients)}")
    click.echo(f"accounts: {accounts}")
    click.echo(f"data_dir: {config.data_dir}")
    click.echo(f"{path}: ok")


@cli.command("hash-password")
def hash_password_command() -> None:
    """Print the argon2id hash of a password, for password_hash in accounts.yaml.

    The password is read from standard input when that is not a terminal (one line; the line break is not part of
    it), else prompted for twice without echo. An empty password is refused (exit 2).
    """
    stdin = sys.stdin  # CliRunner replaces it, so tests feed it like a pipe
    if stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UsageError("empty password: nothing to hash")
    click.echo(hash_password(password))


# --- accounts ----------------------------------------------------------------------------------------------------


@cli.group()
def accounts() -> None:
    """List client accounts; add one or give one a new password (accounts.yaml is edited in place)."""


@accounts.command("list")
@config_option
def accounts_list(config_file: Path | None) -> None:
    """Every account: client, environment, username, allowed IPs (the account's own, else the client's) and whether
    the environment requires TLS."""
    config = _load(config_file)
    rows = []
    for client, env, account in config.accounts():
        networks = config.allowed_networks(client, env)
        ips = ", ".join(_network(network) for network in networks) or "(none: no login accepted)"
        tls = "required" if config.environments[env].require_tls else "optional"
        rows.append((client, env, account.username, ips, tls))
    _echo_table(("CLIENT", "ENVIRONMENT", "USERNAME", "ALLOWED IPS", "TLS"), rows)


@accounts.command("add")
@click.argument("client")
@click.option("--env", required=True, help="Environment of the account (e.g. sandbox, production).")
@click.option("--username", help="Login name. Default: CLIENT for production, CLIENT-ENV for other environments.")
@click.option(
    "--allow-ip",
    "allow_ips",
    multiple=True,
    metavar="IP",
    help="An address or network (IPv4 or IPv6) logins are accepted from; repeat for more. For a new client these "
    "become the client's allowed_ips, shared by its accounts in every environment; for an existing client they "
    "become this account's own allowed_ips, which replace the client's list for this account.",
)
@config_option
def accounts_add(
    client: str, env: str, username: str | None, allow_ips: tuple[str, ...], config_file: Path | None
) -> None:
    """Add CLIENT's account for an environment, with a generated password printed once.

    The client is created when it does not exist yet (without an import section: it accepts uploads once
    clients.CLIENT.import is configured). Only the password's hash is written into the configuration file, whose
    comments, order and formatting are kept; the file is checked before it is replaced. A running `lcsync serve`
    picks up the change.
    """
    path = config_path(config_file)
    password = generate_password()
    added = accounts_file.add_account(path, client, env, hash_password(password), username, allow_ips)
    what = "client and account" if added.new_client else "account"
    click.echo(f"Added {what} {client}/{env} to {path}.")
    _echo_credentials(added.username, password)
    config = added.config
    if not config.allowed_networks(client, env):
        click.echo(
            f"Warning: {client}/{env} has no allowed IP address, so no login is accepted yet: set allowed_ips.",
            err=True,
        )
    if added.new_client:
        click.echo(f"{client} accepts no uploads until clients.{client}.import is set in {path}.")


@accounts.command("passwd")
@click.argument("client")
@click.option("--env", required=True, help="Environment of the account.")
@config_option
def accounts_passwd(client: str, env: str, config_file: Path | None) -> None:
    """Give CLIENT's account for an environment a new generated password, printed once.

    The old password stops working as soon as the running service picks up the changed file.
    """
    path = config_path(config_file)
    password = generate_password()
    config = accounts_file.set_password_hash(path, client, env, hash_password(password))
    click.echo(f"New password for {client}/{env} written to {path}.")
    _echo_credentials(config.clients[client].accounts[env].username, password)


def _echo_credentials(username: str, password: str) -> None:
    click.echo(f"username: {username}")
    click.echo(f"password: {password}")
    click.echo("This password is not stored anywhere (the file holds only its hash): pass it to the client now.")


# --- database ----------------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The environments' databases."""


@db.command("upgrade")
@config_option
@click.option("--env", help="Only this environment. Default: every environment.")
def db_upgrade(config_file: Path | None, env: str | None) -> None:
    """Apply the database migrations (idempotent: an up-to-date database is left as it is)."""
    config = _load(config_file)
    for name in _environments(config, env):
        url = config.database_url(name)
        database = Database(name, url)
        try:
            database.upgrade()
        finally:
            database.dispose()
        click.echo(f"{name}: {_safe_url(url)} is up to date")


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
            job = worker.spool_file(where, client, file)
            node = worker.node_id()
            worker.requeue_stale(where.database, node)
            claimed = worker.claim(where.database, node, job_id=job.id)
            if claimed is None:
                click.echo(f"waiting for the running import of {client} in {env} to finish...", err=True)
            while claimed is None:
                time.sleep(1.0)
                claimed = worker.claim(where.database, node, job_id=job.id)
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
            node = worker.node_id()
            worker.requeue_stale(where.database, node)
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
        job = worker.release(where.database, job_id)
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
def _environment(config: Config, env: str) -> Iterator[worker.Environment]:
    """An environment with its database migrated, disposed of afterwards."""
    _environments(config, env)
    database = Database(env, config.database_url(env))
    try:
        database.upgrade()
        yield worker.Environment(config, env, database)
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


# --- output helpers ----------------------------------------------------------------------------------------------


def _echo_table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> None:
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    for row in table:
        click.echo(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _network(network: Any) -> str:
    """203.0.113.10 for a single address, 198.51.100.0/28 for a network."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    if moment.tzinfo is None:  # SQLite hands back the stored UTC time without its zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    unit = "B"
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007 - the unit reached is the one printed
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


# The report and schedule commands live in a module of their own; importing it registers them on `cli`.
from lcsync import cli_reports  # noqa: E402, F401

# The completions and demo commands, likewise.
from lcsync import cli_export  # noqa: E402, F401
