"""The command line (SPEC section 7): thin click commands over core/ and lcsync/.

Exit status: 0 success, 1 when the work failed, 2 on a usage or configuration error. lcsync's own errors are
translated into messages and exit statuses here and nowhere else (``_Lcsync.invoke``):

    ConfigError      every problem on its own line (file:line: key.path: message)   exit 2
    UsageError       "Error: ..."                                                   exit 2
    LcsyncError      "Error: ..."                                                   exit 1

A password is never printed, except the one that `accounts add` and `accounts passwd` generate, once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from sqlalchemy.engine import make_url

from core.config import Config, config_path, load_config
from core.db import Database
from core.errors import ConfigError, LcsyncError, UsageError
from core.log import setup_logging
from core.passwords import generate_password, hash_password
from lcsync import accounts_file

F = TypeVar("F", bound=Callable[..., Any])


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
    # Warnings from the work a command does (a rejected file, a database down) reach stderr as structured lines;
    # `lcsync serve` turns this up to every event.
    setup_logging(logging.WARNING)
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


# The import, report and schedule commands live in modules of their own; importing them registers them on `cli`.
# The completions and demo commands, likewise.
from lcsync import cli_export, cli_import, cli_reports  # noqa: E402, F401
