"""The command line, run with click's CliRunner on real files and databases, and as a real process."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import Result
from sqlalchemy import create_engine, inspect

from core.config import Config, load_config
from core.db import Database
from core.layout import Layout
from core.models import ImportJob, JobStatus
from core.passwords import verify_password
from core.queue import Arrival, enqueue
from lcsync.cli import cli

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
