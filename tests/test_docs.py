"""Docs that cannot drift: the client guide's commands run against the real server, every command is documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from serving import Running, need, running

from core.config import ListenAddress, load_config
from lcsync.cli import cli

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "client-guide.md"
BLOCK = re.compile(r"<!-- test: (?P<name>[\w-]+) -->\s*```(?:sh|bash)\n(?P<code>.*?)```", re.S)


def guide_commands() -> list[tuple[str, str]]:
    return [(match["name"], match["code"].strip()) for match in BLOCK.finditer(GUIDE.read_text())]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    """The sample accounts.yaml, served from a data folder of its own on a free port."""
    data = tmp_path_factory.mktemp("demo-data")
    config = load_config(ROOT / "accounts.yaml", environ={"LCSYNC_DATA_DIR": str(data)})
    server = config.server.model_copy(update={"listen": [ListenAddress(host="127.0.0.1", port=0)], "http": None})
    workdir = tmp_path_factory.mktemp("client")
    for example in (ROOT / "examples").iterdir():
        shutil.copy(example, workdir / example.name)
    with running(config.model_copy(update={"server": server})) as live:
        yield live, workdir


def test_the_guide_has_runnable_commands() -> None:
    names = [name for name, _ in guide_commands()]
    assert {"curl-upload", "curl-download", "curl-delete", "lftp-upload", "python-upload"} <= set(names)


@pytest.mark.parametrize("name,command", guide_commands(), ids=[name for name, _ in guide_commands()])
def test_client_guide_command_works_against_the_demo_server(
    demo: tuple[Running, Path], name: str, command: str
) -> None:
    server, workdir = demo
    need("curl")
    need("lftp")
    report = server.home("production", "demo") / "reports" / "compliance_report_20260101_000000.csv"
    if name in ("curl-download", "curl-delete") and not report.exists():
        report.write_text("employee_id,course_code\r\n000123,FIRE-01\r\n")
    command = command.replace("127.0.0.1:2121", f"127.0.0.1:{server.port}").replace(
        "--port 2121", f"--port {server.port}"
    )
    command = re.sub(r"^(LCSYNC_PASSWORD=\S+ )?python3 ", lambda m: f"{m.group(1) or ''}{sys.executable} ", command)
    done = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{name}: {command}\n{done.stdout}\n{done.stderr}"
    if name == "curl-download":
        assert (workdir / "compliance_report_20260101_000000.csv").read_text().startswith("employee_id")
    if name == "curl-delete":
        assert not report.exists()


def _commands(group: click.Group, prefix: str = "lcsync") -> Iterator[str]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}"


def test_every_command_is_documented_in_the_operations_guide() -> None:
    assert isinstance(cli, click.Group)
    text = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "README.md").read_text()
    missing = [command for command in _commands(cli) if command not in text]
    assert missing == [], f"undocumented commands: {missing}"
