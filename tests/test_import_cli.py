"""The import verbs of the command line and their exit statuses: 0 done, 1 the work failed, 2 usage or config."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from core.config import Config, load_config
from core.db import Database
from core.layout import Layout
from core.models import ImportJob
from core.queue import Arrival, enqueue
from lcsync.cli import cli

HEADER = "Employee ID,First Name,Last Name,Email,Status"


def users_csv(count: int, salt: str = "") -> bytes:
    lines = [HEADER] + [f"{i:06d},First{i}{salt},Last{i},user{i}@example.com,Active" for i in range(count)]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture
def invoke() -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str | Path) -> Result:
        environment = {"LCSYNC_CONFIG": None, "LCSYNC_DATA_DIR": None}
        return runner.invoke(cli, [str(arg) for arg in args], env=environment, catch_exceptions=False)

    return invoke


@pytest.fixture
def config_file(write_config: Callable[..., Path]) -> Path:
    return write_config()


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file, {})


@pytest.fixture
def sandbox(config: Config) -> Iterator[Database]:
    database = Database("sandbox", config.database_url("sandbox"))
    database.upgrade()
    yield database
    database.dispose()


def queue(config: Config, env: str, content: bytes, name: str = "acme_users.csv") -> int:
    database = Database(env, config.database_url(env))
    database.upgrade()
    try:
        layout = Layout(config.data_dir)
        layout.ensure(env, "acme")
        path = layout.upload_dir(env, "acme") / name
        path.write_bytes(content)
        job = enqueue(layout, database, Arrival(env, "acme", path, "ftp"))
        assert job is not None
        return job.id
    finally:
        database.dispose()


def count_users(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM users")).scalar_one())


def results(config: Config, env: str = "sandbox") -> list[Path]:
    folder = Layout(config.data_dir).results_dir(env, "acme")
    return sorted(folder.iterdir()) if folder.exists() else []


def test_import_file_applies_now_and_prints_the_result_file(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database, tmp_path: Path
) -> None:
    source = tmp_path / "anything.csv"
    source.write_bytes(users_csv(30))

    result = invoke("import", "file", source, "--client", "acme", "--env", "sandbox", "--config", config_file)

    assert result.exit_code == 0, result.output
    assert re.match(r"job \d+: anything\.csv for acme in sandbox: applied\n", result.stdout)
    assert "30 rows read: 30 created" in result.stdout
    [path] = results(config)
    assert f"result file: {path}" in result.stdout
    assert count_users(sandbox) == 30
    assert source.read_bytes() == users_csv(30)  # the file given is left as it was
    assert not Layout(config.data_dir).upload_dir("sandbox", "acme").exists()  # upload/ untouched


def test_import_file_dry_run_changes_nothing(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database, tmp_path: Path
) -> None:
    source = tmp_path / "acme_users.csv"
    source.write_bytes(users_csv(12))

    result = invoke("import", "file", source, "--client", "acme", "--env", "sandbox", "--dry-run",
                    "--config", config_file)  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "dry run: acme_users.csv for acme in sandbox would be applied" in result.stdout
    assert "12 rows read: 12 created" in result.stdout
    match = re.search(r"nothing in results/\): (\S+)", result.stdout)
    assert match and Path(match.group(1)).exists()
    assert count_users(sandbox) == 0
    assert results(config) == []
    with sandbox.session() as session:
        assert session.query(ImportJob).count() == 0


def test_import_file_of_a_rejected_file_exits_1(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database, tmp_path: Path
) -> None:
    source = tmp_path / "acme_users.csv"
    source.write_bytes(b"")

    result = invoke("import", "file", source, "--client", "acme", "--env", "sandbox", "--config", config_file)

    assert result.exit_code == 1
    assert ": rejected" in result.stdout and "nothing applied" in result.stdout
    assert len(results(config)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--client", "initech", "--env", "sandbox"), "Error: unknown client 'initech' (known: acme, globex)"),
        (("--client", "acme", "--env", "staging"), "Error: unknown environment 'staging' (known: sandbox, production)"),
    ],
)
def test_import_file_usage_errors_exit_2(
    invoke: Callable[..., Result], config_file: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    source = tmp_path / "acme_users.csv"
    source.write_bytes(users_csv(1))
    result = invoke("import", "file", source, *args, "--config", config_file)
    assert result.exit_code == 2
    assert result.stderr.strip() == message


def test_import_run_processes_every_environment_including_cron_ones(
    invoke: Callable[..., Result], config_file: Path, config: Config
) -> None:
    sandbox_job = queue(config, "sandbox", users_csv(5))
    production_job = queue(config, "production", users_csv(7))

    result = invoke("import", "run", "--config", config_file)

    assert result.exit_code == 0, result.output
    assert f"job {sandbox_job}: acme_users.csv for acme in sandbox: applied" in result.stdout
    assert f"job {production_job}: acme_users.csv for acme in production: applied" in result.stdout
    again = invoke("import", "run", "--env", "sandbox", "--config", config_file)
    assert again.exit_code == 0 and again.stdout == "sandbox: no queued jobs\n"


def test_held_job_status_history_and_release(
    invoke: Callable[..., Result], config_file: Path, config: Config, sandbox: Database
) -> None:
    queue(config, "sandbox", users_csv(100))
    assert invoke("import", "run", "--env", "sandbox", "--config", config_file).exit_code == 0
    held = queue(config, "sandbox", users_csv(10, salt="x"), "acme_users_2.csv")

    run = invoke("import", "run", "--env", "sandbox", "--config", config_file)

    assert run.exit_code == 1
    assert f"job {held}: acme_users_2.csv for acme in sandbox: held" in run.stdout
    status = invoke("import", "status", "--env", "sandbox", "--config", config_file)
    assert "held, waiting for `lcsync import release JOB --env sandbox` or a corrected upload:" in status.stdout
    assert re.search(rf"#{held}\s+acme\s+.*would suspend 90 of 100 active users", status.stdout)
    history = invoke("import", "history", "--env", "sandbox", "--client", "acme", "--config", config_file)
    assert history.exit_code == 0
    lines = history.stdout.splitlines()
    assert lines[1].split()[:12] == ["JOB", "CLIENT", "FILE", "STATUS", "FINISHED", "ROWS", "NEW", "UPD", "SAME",
                                     "REACT", "SUSP", "ERR"]  # fmt: skip
    assert lines[2].split()[:4] == [f"#{held}", "acme", "acme_users_2.csv", "held"]
    assert re.search(r"applied .* 100\s+100\s+0\s+0\s+0\s+0\s+0\s+acme_users_\d{8}_\d{6}\.results\.csv", lines[3])

    released = invoke("import", "release", str(held), "--env", "sandbox", "--config", config_file)

    assert released.exit_code == 0, released.output
    assert f"job {held} (acme, acme_users_2.csv) released" in released.stdout
    after = invoke("import", "run", "--env", "sandbox", "--config", config_file)
    assert after.exit_code == 0 and f"job {held}: acme_users_2.csv for acme in sandbox: applied" in after.stdout
    refused = invoke("import", "release", str(held), "--env", "sandbox", "--config", config_file)
    assert refused.exit_code == 2
    assert refused.stderr == f"Error: job {held} is applied; only a held or failed job can be released\n"
    unknown = invoke("import", "release", "999", "--env", "sandbox", "--config", config_file)
    assert unknown.exit_code == 2 and "no job 999 in the sandbox environment" in unknown.stderr


def test_import_history_without_jobs(invoke: Callable[..., Result], config_file: Path) -> None:
    result = invoke("import", "history", "--config", config_file)
    assert result.exit_code == 0
    assert result.stdout == "sandbox:\n  no finished jobs\n\nproduction:\n  no finished jobs\n"


@pytest.mark.skipif(importlib.util.find_spec("ingest.template_check") is None, reason="template check not built yet")
def test_template_check_exit_status(invoke: Callable[..., Result], config_file: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(users_csv(3))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"Employee ID,Surname\r\n1,Smith\r\n")

    ok = invoke("template", "check", good, "--client", "acme", "--config", config_file)
    wrong = invoke("template", "check", bad, "--client", "acme", "--config", config_file)

    assert ok.exit_code == 0, ok.output
    assert wrong.exit_code == 1 and wrong.stdout.strip()


def test_template_check_of_a_client_without_import_exits_2(
    invoke: Callable[..., Result], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_config(lambda data: data["clients"]["globex"].pop("import"))
    source = tmp_path / "x.csv"
    source.write_bytes(users_csv(1))
    result = invoke("template", "check", source, "--client", "globex", "--config", path)
    assert result.exit_code == 2
    assert result.stderr == "Error: client 'globex' has no import section in the configuration\n"
