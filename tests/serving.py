"""Run the real service in-process on loopback, and talk to it with real clients."""

from __future__ import annotations

import ftplib
import hashlib
import io
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORDS, USERNAMES
from sqlalchemy import select

from core.config import Config
from core.models import ImportJob
from lcsync.service import Service


@dataclass
class Running:
    service: Service
    host: str
    port: int

    @property
    def config(self) -> Config:
        return self.service.config

    def home(self, env: str, client: str = "acme") -> Path:
        return self.service.layout.home(env, client)

    def jobs(self, env: str, client: str | None = None) -> list[ImportJob]:
        with self.service.databases[env].session() as session:
            query = select(ImportJob).order_by(ImportJob.id)
            if client:
                query = query.where(ImportJob.client == client)
            return list(session.scalars(query))


@contextmanager
def running(
    config: Config, *, auth_failed_delay: float = 0.05, settle_seconds: float = 0.3, imports: bool = False
) -> Iterator[Running]:
    """The service on loopback; without its import workers unless ``imports`` (front-door tests see jobs queued)."""
    service = Service(config, auth_failed_delay=auth_failed_delay, settle_seconds=settle_seconds, imports=imports)
    service.start()
    try:
        host, port = service.ftp.addresses[0]
        yield Running(service, host, port)
    finally:
        service.stop()


def connect(
    server: Running,
    client: str = "acme",
    env: str = "sandbox",
    *,
    tls: bool = False,
    source: str | None = None,
    password: str | None = None,
) -> ftplib.FTP:
    """A logged-in ftplib client (FTP_TLS with PROT P when ``tls``)."""
    ftp: ftplib.FTP
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        ftp = ftplib.FTP_TLS(context=context, timeout=20, source_address=(source, 0) if source else None)
    else:
        ftp = ftplib.FTP(timeout=20, source_address=(source, 0) if source else None)
    ftp.connect(server.host, server.port)
    if tls:
        assert isinstance(ftp, ftplib.FTP_TLS)
        ftp.auth()
    ftp.login(USERNAMES[(client, env)], password if password is not None else PASSWORDS[(client, env)])
    if tls:
        assert isinstance(ftp, ftplib.FTP_TLS)
        ftp.prot_p()
    return ftp


def upload(ftp: ftplib.FTP, path: str, data: bytes) -> str:
    return ftp.storbinary(f"STOR {path}", io.BytesIO(data))


def download(ftp: ftplib.FTP, path: str) -> bytes:
    buffer = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", buffer.write)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def user_data(rows: int = 50, salt: str = "") -> bytes:
    lines = ["Employee ID,First Name,Last Name,Email,Status"]
    lines += [f"{i:06d},First{i}{salt},Last{i},user{i}@example.com,Active" for i in range(rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it with apt-get)")
    return path


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
