"""``lcsync serve`` as systemd runs it: a process of its own, readiness, reload on SIGHUP, a clean stop on SIGTERM."""

from __future__ import annotations

import ftplib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PASSWORDS, config_dict
from serving import user_data, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    notify: socket.socket
    port: int
    config: Path
    stderr: Path

    def messages(self, timeout: float = 0.0) -> list[str]:
        self.notify.settimeout(timeout)
        got = []
        try:
            while True:
                got.append(self.notify.recv(4096).decode())
                self.notify.settimeout(0.05)
        except (TimeoutError, BlockingIOError):
            return got

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.read_text().splitlines() if line.strip()]

    def events(self) -> list[str]:
        return [line.get("event", "") for line in self.log()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | None], Served]]:
    started: list[Served] = []

    def start(data: dict[str, Any] | None = None) -> Served:
        port = _free_port()
        data = data or config_dict(tmp_path / "data")
        data["server"]["listen"] = [f"127.0.0.1:{port}"]
        config = tmp_path / "accounts.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        notify_path = tmp_path / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        stderr = tmp_path / "stderr.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        process = subprocess.Popen(
            [sys.executable, "-m", "lcsync", "serve", "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"),
        )  # fmt: skip
        server = Served(process, notify, port, config, stderr)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        server.notify.close()


def _ready(server: Served) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "READY=1" in server.messages(timeout=0.5):
            return
        assert server.process.poll() is None, server.stderr.read_text()
    pytest.fail("no READY=1 from lcsync serve within 30 s")


def _login(server: Served, user: str = "acme-sandbox", password: str = PASSWORDS[("acme", "sandbox")]) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=20)
    ftp.connect("127.0.0.1", server.port)
    ftp.login(user, password)
    return ftp


def test_ready_only_when_listening_and_logs_are_json_without_passwords(served: Callable[..., Served]) -> None:
    server = served()
    _ready(server)
    ftp = _login(server)  # READY=1 came only after the port was bound: this connect cannot be refused
    ftp.quit()
    log = server.log()  # every line is JSON (stderr is not a terminal)
    events = [line.get("event") for line in log]
    assert "ready" in events and "login" in events
    assert PASSWORDS[("acme", "sandbox")] not in server.stderr.read_text()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0


def test_sighup_reloads_accounts_without_dropping_connections(served: Callable[..., Served], tmp_path: Path) -> None:
    data = config_dict(tmp_path / "data")
    server = served(data)
    _ready(server)
    kept = _login(server)
    data["clients"]["acme"]["accounts"]["sandbox"]["allowed_ips"] = ["192.0.2.1"]
    server.config.write_text(yaml.safe_dump(data, sort_keys=False))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in server.events(), timeout=15, what="the reload")
    with pytest.raises(ftplib.error_perm, match="530"):
        _login(server)
    assert sorted(kept.nlst()) == ["reports", "results", "upload"]  # the open session was not dropped
    kept.quit()


def test_an_invalid_file_is_refused_and_the_running_configuration_stays(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    server = served()
    _ready(server)
    server.config.write_text("clients:\n  acme:\n    accounts: {sandbox: {username: x, password_hash: plain}}\n")
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_refused" in server.events(), timeout=15, what="the refusal")
    refusal = next(line for line in server.log() if line.get("event") == "reload_refused")
    assert any("password_hash" in problem for problem in refusal["problems"])
    _login(server).quit()  # still serving with the old accounts
    assert server.process.poll() is None


def test_sigterm_lets_a_running_upload_finish_then_exits(served: Callable[..., Served]) -> None:
    server = served()
    _ready(server)
    ftp = _login(server)
    ftp.voidcmd("TYPE I")
    data = user_data(20000)
    conn = ftp.transfercmd("STOR upload/acme_users.csv")
    conn.sendall(data[: len(data) // 2])
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "listeners_closed" in server.events(), timeout=15, what="the listeners to close")
    refused = socket.socket()
    assert refused.connect_ex(("127.0.0.1", server.port)) != 0 or refused.recv(100) == b""  # no new sessions
    refused.close()
    conn.sendall(data[len(data) // 2 :])
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert server.process.wait(timeout=40) == 0
    events = server.events()
    assert "upload_complete" in events and "upload_queued" in events
