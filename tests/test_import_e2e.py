"""End to end over FTP: a client uploads with curl, the sandbox (on_arrival) imports it, the client downloads the
result file with curl; production (cron) jobs wait for their schedule or `lcsync import run`."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import Running, need, run, running, wait_for
from sqlalchemy import text

from core.config import Config, load_config
from core.models import ImportJob

ROWS = [
    "Employee ID,First Name,Last Name,Email,Status,Manager ID,Department",
    "000001,Ada,Lovelace,ada@example.com,Active,,Engineering",
    "000002,Charles,Babbage,charles@example.com,Active,000001,Engineering",
    "000003,=cmd|' /C calc'!A0,Hacker,not-an-email,Active,,Sales",
    "000004,Grace,Hopper,grace@example.com,Inactive,000001,Navy",
]


@pytest.fixture
def server(config: Config) -> Iterator[Running]:
    with running(config, imports=True) as live:
        yield live


def curl(server: Running, user: str, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = run(["curl", "-sS", "--user", f"{user}:{password}", *args])
    assert done.returncode == 0, done.stderr
    return done


def users(server: Running, env: str) -> dict[str, tuple[str, str]]:
    with server.service.databases[env].engine.connect() as connection:
        rows = connection.execute(text("SELECT employee_id, first_name, status FROM users WHERE client = 'acme'"))
        return {key: (first, status) for key, first, status in rows}


def test_upload_with_curl_is_imported_and_the_client_downloads_what_happened_to_every_row(
    server: Running, tmp_path: Path
) -> None:
    need("curl")
    source = tmp_path / "acme_users.csv"
    source.write_bytes(("\r\n".join(ROWS) + "\r\n").encode())
    base = f"ftp://{server.host}:{server.port}"

    curl(server, "acme-sandbox", "acme-sandbox-secret", "-T", str(source), f"{base}/upload/")

    jobs: list[ImportJob] = wait_for(  # type: ignore[assignment]
        lambda: [j for j in server.jobs("sandbox") if j.status == "applied"], 20, "the import"
    )
    assert users(server, "sandbox") == {
        "000001": ("Ada", "active"),
        "000002": ("Charles", "active"),
        "000004": ("Grace", "suspended"),
    }
    listing = curl(server, "acme-sandbox", "acme-sandbox-secret", "--list-only", f"{base}/results/").stdout.split()
    assert listing == [Path(jobs[0].result_path or "").name]
    assert curl(server, "acme-sandbox", "acme-sandbox-secret", "--list-only", f"{base}/upload/").stdout == ""
    target = tmp_path / "result.csv"
    curl(server, "acme-sandbox", "acme-sandbox-secret", "-o", str(target), f"{base}/results/{listing[0]}")

    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["line", "key", "outcome", "reason"]
    assert [row[:3] for row in rows[1:5]] == [
        ["2", "000001", "created"],
        ["3", "000002", "created"],
        ["4", "000003", "error"],
        ["5", "000004", "created"],
    ]
    assert "Email" in rows[3][3]
    assert rows[5][:3] == ["summary", "", "applied"]
    assert rows[5][3].startswith("4 rows read: 3 created, 0 updated, 0 unchanged, 0 reactivated, 1 error")


def test_production_jobs_wait_for_the_schedule_or_import_run(server: Running, tmp_path: Path) -> None:
    need("curl")
    source = tmp_path / "acme_users.csv"
    source.write_bytes(("\r\n".join(ROWS) + "\r\n").encode())
    base = f"ftp://{server.host}:{server.port}"
    curl(server, "acme", "acme-production-secret", "--ssl-reqd", "-k", "-T", str(source), f"{base}/upload/")
    jobs: list[ImportJob] = wait_for(  # type: ignore[assignment]
        lambda: server.jobs("production"), what="the production upload to be queued"
    )
    # The worker looks at production at least every few seconds; the job is still queued until midnight.
    worker = server.service.workers["production"]
    worker.nudge()
    assert [job.status for job in server.jobs("production")] == ["queued"]
    assert users(server, "production") == {}
    config = server.config
    assert config.source is not None

    done = subprocess.run(
        [sys.executable, "-m", "lcsync", "import", "run", "--env", "production"],
        env={**os.environ, "LCSYNC_CONFIG": str(config.source)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"job {jobs[0].id}: acme_users.csv for acme in production: applied" in done.stdout
    assert [job.status for job in server.jobs("production")] == ["applied"]
    assert len(users(server, "production")) == 3


def test_a_job_queued_while_stopped_is_imported_at_start(config: Config) -> None:
    with running(config) as stopped:  # front door only, as if the worker were down
        layout = stopped.service.layout
        path = layout.upload_dir("sandbox", "acme") / "acme_users.csv"
        path.write_bytes(("\r\n".join(ROWS) + "\r\n").encode())
        wait_for(lambda: stopped.jobs("sandbox"), what="the watcher to queue the file")
    with running(load_config(config.source or Path()), imports=True) as live:
        wait_for(lambda: [j for j in live.jobs("sandbox") if j.status == "applied"], 20, "the import at start-up")
