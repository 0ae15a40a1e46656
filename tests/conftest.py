"""Shared fixtures: configurations written to disk, databases (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.config import Config, load_config
from core.db import Database
from core.passwords import hash_password

PASSWORDS = {
    ("acme", "sandbox"): "acme-sandbox-secret",
    ("acme", "production"): "acme-production-secret",
    ("globex", "sandbox"): "globex-sandbox-secret",
    ("globex", "production"): "globex-production-secret",
}
USERNAMES = {
    ("acme", "sandbox"): "acme-sandbox",
    ("acme", "production"): "acme",
    ("globex", "sandbox"): "globex-sandbox",
    ("globex", "production"): "globex",
}
_HASHES: dict[str, str] = {}


def password_hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


def template() -> dict[str, Any]:
    return {
        "key": "employee_id",
        "columns": {
            "Employee ID": "employee_id",
            "First Name": "first_name",
            "Last Name": "last_name",
            "Email": "email",
            "Status": "status",
            "Manager ID": "manager_id",
            "Start Date": "start_date",
        },
        "group_types": ["Department", "Location", "Position"],
        "custom_fields": ["Cost Centre"],
        "required": ["employee_id", "first_name", "last_name", "email"],
    }


def config_dict(data_dir: Path, **server: Any) -> dict[str, Any]:
    """Two clients (acme, globex), each with a sandbox and a production account, loopback only."""
    clients: dict[str, Any] = {}
    for client in ("acme", "globex"):
        clients[client] = {
            "name": f"{client.title()} Pty Ltd",
            "allowed_ips": ["127.0.0.1", "::1"],
            "accounts": {
                env: {"username": USERNAMES[(client, env)], "password_hash": password_hash(PASSWORDS[(client, env)])}
                for env in ("sandbox", "production")
            },
            "import": {"file_pattern": f"{client}_users*.csv", "template": template()},
        }
    return {
        "data_dir": str(data_dir),
        "server": {"listen": ["127.0.0.1:0"], "passive_ports": "61000-61999", "http": None, **server},
        "environments": {
            "sandbox": {"database": "sqlite:///{data_dir}/sandbox.db", "require_tls": False},
            "production": {
                "database": "sqlite:///{data_dir}/production.db",
                "require_tls": True,
                "import_schedule": "0 0 * * *",
            },
        },
        "clients": clients,
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write an accounts.yaml built from ``config_dict`` (optionally edited by ``edit``) and return its path."""

    def write(edit: Callable[[dict[str, Any]], None] | None = None, **server: Any) -> Path:
        data = config_dict(tmp_path / "data", **server)
        if edit:
            edit(data)
        path = tmp_path / "accounts.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Config:
    return load_config(write_config())


# --- the command line ----------------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner) -> Callable[..., Result]:
    """Run lcsync with ``args``; the environment holds no LCSYNC_* variable unless given."""
    from lcsync.cli import cli

    def invoke(*args: str | Path, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        environment = {"LCSYNC_CONFIG": None, "LCSYNC_DATA_DIR": None, **(env or {})}
        return runner.invoke(cli, [str(arg) for arg in args], input=input, env=environment, catch_exceptions=False)

    return invoke


@pytest.fixture
def config_file(write_config: Callable[..., Path]) -> Path:
    """accounts.yaml with acme and globex, each with a sandbox and a production account, data under tmp."""
    return write_config()


# --- databases ---------------------------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("LCSYNC_TEST_POSTGRES_URL")


def _postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need LCSYNC_TEST_POSTGRES_URL (CI sets it)")
    base = make_url(POSTGRES_URL)
    name = f"lcsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite always, PostgreSQL when LCSYNC_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated Database on ``database_url`` (SQLite, and PostgreSQL when configured)."""
    db = Database("test", database_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database; the test is skipped with a reason when none is configured."""
    yield from _postgres_database()


# --- hygiene -----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (servers not stopped, observers not joined)."""
    before = set(threading.enumerate())
    yield
    deadline = 5.0
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked by the test: {[t.name for t in leaked]}")
