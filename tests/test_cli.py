"""The command line, run with click's CliRunner on real files and databases, and as a real process."""

from __future__ import annotations

import difflib
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent
from typing import Any
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner, Result
from conftest import PASSWORDS, password_hash
from sqlalchemy import create_engine, inspect

from core.config import Config, load_config
from core.db import Database
from core.layout import Layout
from core.models import ImportJob, JobStatus
from core.passwords import verify_password
from core.queue import Arrival, enqueue
from lcsync.cli import cli

ACME_SANDBOX = password_hash(PASSWORDS[("acme", "sandbox")])
ACME_PRODUCTION = password_hash(PASSWORDS[("acme", "production")])

# An operator's file: comments everywhere, aligned values, quoting of every kind, an explicit null.
HAND_WRITTEN = dedent(
    """\
    # lcsync configuration for the test bench
    timezone: Australia/Melbourne   # schedules and file names
    data_dir: ./var
    server:
      listen: ['127.0.0.1:2121']
      http: null                    # no health listener here

    clients:
      # Acme: payroll exports nightly
      acme:
        name: "Acme Pty Ltd"
        allowed_ips: ["127.0.0.1", "::1"]
        accounts:
          sandbox:    {username: acme-sandbox, password_hash: "SANDBOX"}   # set up 2026-01-05
        # acme production comes later
        import:
          file_pattern: 'acme_users*.csv'
          template:
            key: employee_id
            columns: {"Employee ID": employee_id, "Email": email}
            required: [employee_id, email]

    # end of clients
    """
).replace("SANDBOX", ACME_SANDBOX)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable[..., Result]:
    """Run lcsync with ``args``; the environment holds no LCSYNC_* variable unless given."""

    def invoke(*args: str | Path, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        environment = {"LCSYNC_CONFIG": None, "LCSYNC_DATA_DIR": None, **(env or {})}
        return runner.invoke(cli, [str(arg) for arg in args], input=input, env=environment, catch_exceptions=False)

    return invoke


@pytest.fixture
def config_file(write_config: Callable[..., Path]) -> Path:
    """accounts.yaml with acme and globex, each with a sandbox and a production account, data under tmp."""
    return write_config()


@pytest.fixture
def hand_written(tmp_path: Path) -> Path:
    path = tmp_path / "operator" / "accounts.yaml"
    path.parent.mkdir()
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    return path


def printed_password(result: Result) -> str:
    match = re.search(r"^password: (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match.group(1)


def inserted_lines(before: str, after: str) -> list[tuple[int, list[str]]]:
    """Where ``after`` differs from ``before``: (position, lines) of each insertion; fails on any other change."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    insertions = []
    for tag, i1, _i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        assert tag in ("equal", "insert"), f"the file changed beyond insertions: {tag} {old[i1:_i2]} -> {new[j1:j2]}"
        if tag == "insert":
            insertions.append((i1, new[j1:j2]))
    return insertions


# --- accounts add ------------------------------------------------------------------------------------------------


def test_accounts_add_prints_the_password_once_and_stores_only_its_hash(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    password = printed_password(result)
    assert result.output.count(password) == 1
    assert "not stored anywhere" in result.stdout
    assert "username: acme\n" in result.stdout
    text = hand_written.read_text(encoding="utf-8")
    assert password not in text
    config = load_config(hand_written, {})
    account = config.clients["acme"].accounts["production"]
    assert account.username == "acme"
    assert verify_password(account.password_hash, password)
    assert account.allowed_ips is None  # it shares the client's list


def test_accounts_add_keeps_the_file_byte_for_byte_except_the_new_line(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    after = hand_written.read_text(encoding="utf-8")
    [(position, lines)] = inserted_lines(HAND_WRITTEN, after)
    # Right below the sandbox account, in its style (one flow mapping a line, double-quoted hash).
    assert HAND_WRITTEN.splitlines()[position - 1].lstrip().startswith("sandbox:")
    assert len(lines) == 1
    assert re.fullmatch(r'      production: \{username: acme, password_hash: "\$argon2id\$[^"]+"\}\n', lines[0])


def test_accounts_add_for_a_new_client_puts_the_addresses_on_the_client(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    args = ("--config", hand_written, "--allow-ip", "203.0.113.10", "--allow-ip", "2001:db8::/48")
    result = invoke("accounts", "add", "globex", "--env", "sandbox", *args)

    assert result.exit_code == 0, result.output
    assert "Added client and account globex/sandbox" in result.stdout
    assert "globex accepts no uploads until clients.globex.import is set" in result.stdout
    [(position, lines)] = inserted_lines(HAND_WRITTEN, hand_written.read_text(encoding="utf-8"))
    hashed = load_config(hand_written, {}).clients["globex"].accounts["sandbox"].password_hash
    assert "".join(lines) == (
        "  globex:\n"
        '    allowed_ips: ["203.0.113.10", "2001:db8::/48"]\n'
        "    accounts:\n"
        f'      sandbox: {{username: globex-sandbox, password_hash: "{hashed}"}}\n'
    )
    # After the last line of acme, before the blank line and the closing comment.
    assert HAND_WRITTEN.splitlines()[position - 1] == "        required: [employee_id, email]"

    # The production account added next shares the client's addresses.
    second = invoke("accounts", "add", "globex", "--env", "production", "--config", hand_written)
    assert second.exit_code == 0, second.output
    config = load_config(hand_written, {})
    assert config.clients["globex"].accounts["production"].username == "globex"
    assert [str(n) for n in config.allowed_networks("globex", "production")] == ["203.0.113.10/32", "2001:db8::/48"]


def test_accounts_add_for_an_existing_client_gives_the_account_its_own_addresses(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    args = ("--config", hand_written, "--allow-ip", "198.51.100.7", "--username", "acme-live")
    result = invoke("accounts", "add", "acme", "--env", "production", *args)

    assert result.exit_code == 0, result.output
    config = load_config(hand_written, {})
    assert config.clients["acme"].accounts["production"].username == "acme-live"
    assert [str(n) for n in config.allowed_networks("acme", "production")] == ["198.51.100.7/32"]
    assert [str(n) for n in config.allowed_networks("acme", "sandbox")] == ["127.0.0.1/32", "::1/128"]


def test_accounts_add_in_a_block_style_file_writes_block_style(
    invoke: Callable[..., Result], config_file: Path
) -> None:
    before = config_file.read_text(encoding="utf-8")
    result = invoke(
        "accounts", "add", "initech", "--env", "production", "--allow-ip", "192.0.2.1", "--config", config_file
    )

    assert result.exit_code == 0, result.output
    [(_, lines)] = inserted_lines(before, config_file.read_text(encoding="utf-8"))
    hashed = load_config(config_file, {}).clients["initech"].accounts["production"].password_hash
    assert "".join(lines) == (
        "  initech:\n"
        '    allowed_ips: ["192.0.2.1"]\n'
        "    accounts:\n"
        "      production:\n"
        "        username: initech\n"
        f"        password_hash: {hashed}\n"
    )


def test_accounts_add_keeps_the_file_mode_and_writes_through_a_symlink(
    invoke: Callable[..., Result], hand_written: Path, tmp_path: Path
) -> None:
    hand_written.chmod(0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(hand_written)

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", link)

    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert stat.S_IMODE(hand_written.stat().st_mode) == 0o640
    assert "production" in load_config(hand_written, {}).clients["acme"].accounts
    assert [p.name for p in hand_written.parent.iterdir()] == ["accounts.yaml"]  # no temporary file left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("acme", "--env", "staging"),
            "Error: unknown environment 'staging' (known: sandbox, production)\n",
        ),
        (
            ("acme", "--env", "sandbox"),
            "Error: acme already has a sandbox account (username acme-sandbox); to give it a new password use "
            "`lcsync accounts passwd acme --env sandbox`\n",
        ),
        (
            ("globex", "--env", "sandbox", "--username", "ACME-Sandbox"),
            "Error: username 'ACME-Sandbox' is already used by acme/sandbox; choose another with --username\n",
        ),
        (
            ("globex", "--env", "sandbox", "--allow-ip", "10.0.0.1", "--allow-ip", "10.0.0.256"),
            "Error: '10.0.0.256' is not an IP address or network\n",
        ),
        (
            ("Globex Corp", "--env", "sandbox"),
            "Error: 'Globex Corp' cannot name a client: a name must be 1 to 63 lower-case letters, digits, '_' or "
            "'-' (it names folders)\n",
        ),
    ],
)
def test_accounts_add_refuses_and_leaves_the_file_alone(
    invoke: Callable[..., Result], hand_written: Path, args: tuple[str, ...], message: str
) -> None:
    result = invoke("accounts", "add", *args, "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == message
    assert "password" not in result.stdout
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


def test_accounts_add_refuses_a_change_that_would_not_load(invoke: Callable[..., Result], hand_written: Path) -> None:
    result = invoke(
        "accounts", "add", "globex", "--env", "sandbox", "--username", "globex sandbox", "--config", hand_written
    )

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{hand_written}: nothing was written: the change would make the file invalid:"
    assert lines[1] == (
        f"{hand_written}:25: clients.globex.accounts.sandbox.username: 'globex sandbox': a username may hold letters, "
        "digits and . _ @ - only"
    )
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


def test_accounts_add_on_an_invalid_file_lists_its_problems(invoke: Callable[..., Result], hand_written: Path) -> None:
    hand_written.write_text(HAND_WRITTEN.replace("timezone: Australia/Melbourne", "timezone: Melbourne"))

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == (
        f"{hand_written}:2: timezone: 'Melbourne' is not a time zone name (example: Australia/Melbourne)\n"
    )


def test_accounts_add_of_a_client_without_addresses_warns_that_it_cannot_log_in(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "add", "initech", "--env", "sandbox", "--config", hand_written)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Warning: initech/sandbox has no allowed IP address, so no login is accepted yet: set allowed_ips.\n"
    )
    [(_, lines)] = inserted_lines(HAND_WRITTEN, hand_written.read_text(encoding="utf-8"))
    assert lines[1] == "    allowed_ips: []\n"
    assert load_config(hand_written, {}).allowed_networks("initech", "sandbox") == []


def test_accounts_add_keeps_windows_line_endings(invoke: Callable[..., Result], hand_written: Path) -> None:
    original = HAND_WRITTEN.replace("\n", "\r\n")
    hand_written.write_bytes(original.encode())

    result = invoke("accounts", "add", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 0, result.output
    after = hand_written.read_bytes().decode()
    assert after.count("\r\n") == after.count("\n") == original.count("\n") + 1
    [(_, lines)] = inserted_lines(original, after)
    assert lines[0].startswith("      production: {username: acme, ") and lines[0].endswith("}\r\n")


# --- accounts passwd ---------------------------------------------------------------------------------------------


def test_accounts_passwd_replaces_the_hash_in_place(invoke: Callable[..., Result], hand_written: Path) -> None:
    old_password = PASSWORDS[("acme", "sandbox")]
    result = invoke("accounts", "passwd", "acme", "--env", "sandbox", "--config", hand_written)

    assert result.exit_code == 0, result.output
    password = printed_password(result)
    assert result.output.count(password) == 1
    assert "not stored anywhere" in result.stdout
    account = load_config(hand_written, {}).clients["acme"].accounts["sandbox"]
    assert verify_password(account.password_hash, password)
    assert not verify_password(account.password_hash, old_password)
    after = hand_written.read_text(encoding="utf-8")
    assert after == HAND_WRITTEN.replace(ACME_SANDBOX, account.password_hash)
    assert password not in after


def test_accounts_passwd_in_a_block_style_file_changes_one_line(
    invoke: Callable[..., Result], config_file: Path
) -> None:
    before = config_file.read_text(encoding="utf-8")

    result = invoke("accounts", "passwd", "globex", "--env", "production", "--config", config_file)

    assert result.exit_code == 0, result.output
    after = config_file.read_text(encoding="utf-8")
    changed = [(old, new) for old, new in zip(before.splitlines(), after.splitlines(), strict=True) if old != new]
    new_hash = load_config(config_file, {}).clients["globex"].accounts["production"].password_hash
    assert changed == [
        (
            f"        password_hash: {password_hash(PASSWORDS[('globex', 'production')])}",
            f"        password_hash: {new_hash}",
        )
    ]
    assert verify_password(new_hash, printed_password(result))


def test_accounts_passwd_of_a_missing_account_is_a_usage_error(
    invoke: Callable[..., Result], hand_written: Path
) -> None:
    result = invoke("accounts", "passwd", "acme", "--env", "production", "--config", hand_written)

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: acme has no production account (add one with `lcsync accounts add acme --env production`)\n"
    )
    assert hand_written.read_text(encoding="utf-8") == HAND_WRITTEN


# --- accounts list -----------------------------------------------------------------------------------------------


def test_accounts_list_shows_effective_addresses_and_tls(
    invoke: Callable[..., Result], write_config: Callable[..., Path]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clients"]["globex"]["accounts"]["production"]["allowed_ips"] = ["203.0.113.0/24"]
        data["clients"]["globex"]["allowed_ips"] = []

    result = invoke("accounts", "list", "--config", write_config(edit))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "CLIENT  ENVIRONMENT  USERNAME        ALLOWED IPS                TLS",
        "acme    sandbox      acme-sandbox    127.0.0.1, ::1             optional",
        "acme    production   acme            127.0.0.1, ::1             required",
        "globex  sandbox      globex-sandbox  (none: no login accepted)  optional",
        "globex  production   globex          203.0.113.0/24             required",
    ]
    assert "$argon2id$" not in result.output


def test_config_comes_from_lcsync_config_then_the_current_folder(
    invoke: Callable[..., Result], config_file: Path, hand_written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_variable = invoke("accounts", "list", env={"LCSYNC_CONFIG": str(config_file)})
    assert "globex" in by_variable.stdout
    monkeypatch.chdir(hand_written.parent)
    by_folder = invoke("accounts", "list")
    assert by_folder.exit_code == 0
    assert "globex" not in by_folder.stdout and "acme-sandbox" in by_folder.stdout
    by_option = invoke("accounts", "list", "--config", config_file, env={"LCSYNC_CONFIG": "/nowhere.yaml"})
    assert "globex" in by_option.stdout


# --- hash-password -----------------------------------------------------------------------------------------------


def test_hash_password_reads_one_line_from_stdin(invoke: Callable[..., Result]) -> None:
    result = invoke("hash-password", input="correct horse \r\nsecond line\n")

    assert result.exit_code == 0, result.output
    hashed = result.stdout.strip()
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse ")  # only the line break is dropped
    assert not verify_password(hashed, "correct horse")
    assert "correct horse" not in result.output


def test_hash_password_refuses_an_empty_password(invoke: Callable[..., Result]) -> None:
    result = invoke("hash-password", input="\n")

    assert result.exit_code == 2
    assert result.stderr == "Error: empty password: nothing to hash\n"
    assert result.stdout == ""


def test_hash_password_prompts_twice_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "lcsync", "hash-password"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        start_new_session=True,  # no controlling terminal: getpass reads the pty given as stdin
        cwd=Path(__file__).resolve().parent.parent,
    )
    os.close(terminal)
    try:
        seen = _read_until(controller, "Password: ")
        os.write(controller, b"s3cret pass\n")
        seen += _read_until(controller, "Repeat for confirmation: ")
        os.write(controller, b"s3cret pass\n")
        stdout, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert process.returncode == 0
    assert verify_password(stdout.decode().strip(), "s3cret pass")
    assert "s3cret" not in seen  # not echoed


def _read_until(fd: int, wanted: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {wanted!r} on the terminal; saw {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            seen += os.read(fd, 1024).decode(errors="replace")
    return seen


# --- check-config ------------------------------------------------------------------------------------------------


def test_check_config_ok(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("check-config", "--config", config_file)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "environments: sandbox, production",
        "clients: 2",
        "accounts: 4",
        f"data_dir: {config_file.parent / 'data'}",
        f"{config_file}: ok",
    ]


def test_check_config_lists_every_problem_and_exits_2(
    invoke: Callable[..., Result], write_config: Callable[..., Path]
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clients"]["acme"]["allowed_ips"] = ["127.0.0.1", "300.1.2.3"]
        data["clients"]["globex"]["accounts"]["sandbox"]["password_hash"] = "globex-sandbox-secret"

    path = write_config(edit)
    result = invoke("check-config", "--config", path)

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        rf"{re.escape(str(path))}:\d+: clients\.acme\.allowed_ips\[1\]: '300\.1\.2\.3' is not .*", lines[0]
    )
    assert lines[1].startswith(f"{path}:")
    assert "clients.globex.accounts.sandbox.password_hash: looks like a plaintext password" in lines[1]
    assert "globex-sandbox-secret" not in result.output
    assert result.stdout == ""


def test_check_config_without_a_file_exits_2(invoke: Callable[..., Result], tmp_path: Path) -> None:
    result = invoke("check-config", "--config", tmp_path / "missing.yaml")

    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path / 'missing.yaml'}: no such file (set --config or LCSYNC_CONFIG)\n"


def test_serve_refuses_an_invalid_configuration(
    invoke: Callable[..., Result], write_config: Callable[..., Path]
) -> None:
    path = write_config(lambda data: data.update(timezone="Mars/Olympus"))

    result = invoke("serve", "--config", path)

    assert result.exit_code == 2
    assert "timezone: 'Mars/Olympus' is not a time zone name" in result.stderr


# --- db upgrade --------------------------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables_on_sqlite(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("db", "upgrade", "--config", config_file)

    assert result.exit_code == 0, result.output
    data = config_file.parent / "data"
    assert result.stdout.splitlines() == [
        f"sandbox: sqlite:///{data}/sandbox.db is up to date",
        f"production: sqlite:///{data}/production.db is up to date",
    ]
    for env in ("sandbox", "production"):
        engine = create_engine(f"sqlite:///{data}/{env}.db")
        try:
            assert {"import_jobs", "alembic_version"} <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    again = invoke("db", "upgrade", "--config", config_file, "--env", "sandbox")
    assert again.exit_code == 0
    assert again.stdout == f"sandbox: sqlite:///{data}/sandbox.db is up to date\n"


@pytest.mark.postgres
def test_db_upgrade_creates_the_tables_on_postgresql(
    invoke: Callable[..., Result], write_config: Callable[..., Path], postgres_url: str
) -> None:
    path = write_config(lambda data: data["environments"]["production"].update(database=postgres_url))

    result = invoke("db", "upgrade", "--config", path, "--env", "production")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("production: postgresql+psycopg://")
    engine = create_engine(postgres_url)
    try:
        assert {"import_jobs", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert not (path.parent / "data" / "sandbox.db").exists()  # --env limits the work to production


def test_db_upgrade_of_an_unreachable_database_exits_1_without_its_password(
    invoke: Callable[..., Result], write_config: Callable[..., Path]
) -> None:
    url = "postgresql+psycopg://lcsync:hunter2secret@127.0.0.1:1/lcsync?connect_timeout=5"
    path = write_config(lambda data: data["environments"]["production"].update(database=url))

    result = invoke("db", "upgrade", "--config", path, "--env", "production")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot migrate postgresql+psycopg://lcsync:***@127.0.0.1:1/lcsync")
    assert result.stderr.count("\n") == 1
    assert "hunter2secret" not in result.output


def test_db_upgrade_of_an_unknown_environment_exits_2(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("db", "upgrade", "--config", config_file, "--env", "staging")

    assert result.exit_code == 2
    assert result.stderr == "Error: unknown environment 'staging' (known: sandbox, production)\n"


# --- import status -----------------------------------------------------------------------------------------------


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file, {})


@pytest.fixture
def sandbox(config: Config) -> Iterator[Database]:
    database = Database("sandbox", config.database_url("sandbox"))
    database.upgrade()
    yield database
    database.dispose()


def upload(config: Config, database: Database, client: str, name: str, content: bytes) -> ImportJob:
    layout = Layout(config.data_dir)
    layout.ensure(database.env, client)
    path = layout.upload_dir(database.env, client) / name
    path.write_bytes(content)
    arrival = Arrival(database.env, client, path, "ftp", username=f"{client}-sandbox", remote_ip="127.0.0.1")
    job = enqueue(layout, database, arrival)
    assert job is not None
    return job


def local(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo("Australia/Melbourne")).strftime("%Y-%m-%d %H:%M:%S %Z")


def test_import_status_lists_a_queued_job(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database
) -> None:
    job = upload(config, sandbox, "acme", "acme_users_0001.csv", b"Employee ID,Email\n1,a@example.com\n" * 100)

    result = invoke("import", "status", "--config", config_file, "--env", "sandbox")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sandbox:"
    assert lines[1].split() == ["JOB", "CLIENT", "FILE", "SIZE", "STATUS", "RECEIVED", "VIA", "USER", "IP"]
    with sandbox.session() as session:
        stored = session.get(ImportJob, job.id)
        assert stored is not None
        received = local(stored.received_at)
    row = re.split(r"\s{2,}", lines[2].strip())
    assert row == [
        str(job.id),
        "acme",
        "acme_users_0001.csv",
        "3.3 KiB",
        "queued",
        received,
        "ftp",
        "acme-sandbox",
        "127.0.0.1",
    ]
    assert lines[3:] == [
        "  last finished:",
        "    CLIENT  JOB  FILE      STATUS  FINISHED  MESSAGE",
        "    acme    -    none yet",
        "    globex  -    none yet",
    ]


def test_import_status_shows_held_jobs_and_the_last_finished_one_per_client(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database
) -> None:
    now = datetime.now(UTC)
    with sandbox.session() as session, session.begin():
        for index, (status, finished) in enumerate(
            [
                (JobStatus.APPLIED, now - timedelta(days=2)),
                (JobStatus.REJECTED, now - timedelta(days=1)),
                (JobStatus.HELD, None),
            ]
        ):
            session.add(
                ImportJob(
                    client="acme", filename=f"acme_users_{index}.csv", spool_path=f"spool/{index}", size=10,
                    status=status, received_via="ftp", received_at=now - timedelta(days=3 - index),
                    finished_at=finished, message="no valid row" if status == JobStatus.REJECTED else None,
                )
            )  # fmt: skip
    queued = upload(config, sandbox, "globex", "globex_users.csv", b"x")

    result = invoke("import", "status", "--config", config_file, "--env", "sandbox")

    assert result.exit_code == 0, result.output
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    waiting = [row for row in rows[2:] if row[0].isdigit()]
    assert [(row[0], row[2], row[4]) for row in waiting] == [
        ("3", "acme_users_2.csv", "held"),
        (str(queued.id), "globex_users.csv", "queued"),
    ]
    last = {row[0]: row for row in rows if row[0] in ("acme", "globex") and row[1].startswith(("#", "-"))}
    assert last["acme"] == [
        "acme",
        "#2",
        "acme_users_1.csv",
        "rejected",
        local(now - timedelta(days=1)),
        "no valid row",
    ]
    assert last["globex"] == ["globex", "-", "none yet"]

    only_globex = invoke("import", "status", "--config", config_file, "--env", "sandbox", "--client", "globex")
    assert "acme" not in only_globex.stdout
    assert "globex_users.csv" in only_globex.stdout


def test_import_status_works_on_a_database_never_migrated(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("import", "status", "--config", config_file)

    assert result.exit_code == 0, result.output
    assert result.stdout.count("no queued, running or held jobs") == 2
    assert [line for line in result.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")] == [
        "sandbox:",
        "production:",
    ]
    assert (config_file.parent / "data" / "production.db").exists()


def test_import_status_of_an_unknown_client_exits_2(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("import", "status", "--config", config_file, "--client", "initech")

    assert result.exit_code == 2
    assert result.stderr == "Error: unknown client 'initech' (known: acme, globex)\n"


# --- the command line as a whole ---------------------------------------------------------------------------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help(invoke: Callable[..., Result]) -> None:
    commands = list(_commands(cli))
    assert {"serve", "check-config", "hash-password", "accounts list", "db upgrade", "import status"} <= {
        " ".join(command) for command in commands
    }
    for command in commands:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, command
        assert result.stdout.startswith(f"Usage: lcsync {' '.join(command)} "), result.stdout


def test_usage_errors_exit_2(invoke: Callable[..., Result], config_file: Path) -> None:
    assert invoke("frobnicate").exit_code == 2
    missing_env = invoke("accounts", "add", "acme", "--config", config_file)
    assert missing_env.exit_code == 2
    assert "Missing option '--env'" in missing_env.stderr


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LCSYNC_")}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=environment, timeout=60, check=False)


def test_python_dash_m_lcsync_runs_the_command_line(config_file: Path) -> None:
    help_text = _run(sys.executable, "-m", "lcsync", "--help", cwd=config_file.parent)
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith("Usage: lcsync [OPTIONS] COMMAND [ARGS]...")
    assert "check-config" in help_text.stdout

    ok = _run(sys.executable, "-m", "lcsync", "check-config", cwd=config_file.parent)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith("accounts.yaml: ok\n")

    config_file.write_text("clients: {}\nbogus: 1\n")
    bad = _run(sys.executable, "-m", "lcsync", "check-config", cwd=config_file.parent)
    assert bad.returncode == 2
    assert bad.stderr == "accounts.yaml:2: bogus: unknown key\n"


def test_the_lcsync_script_runs_the_command_line(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lcsync"
    if not script.exists():
        pytest.skip("the lcsync console script is not installed (pip install -e .)")
    result = _run(str(script), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: lcsync [OPTIONS] COMMAND [ARGS]...")
    missing = _run(str(script), "accounts", "list", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "accounts.yaml: no such file (set --config or LCSYNC_CONFIG)\n"
