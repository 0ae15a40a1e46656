"""The import worker on real databases: claiming, ordering, heartbeats and requeues, the pipeline's outcomes, and a
kill -9 in the middle of an import (SQLite always, PostgreSQL when LCSYNC_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import config_dict
from sqlalchemy import func, select, text, update

from core.config import Config, load_config
from core.db import Database
from core.models import ImportJob, JobStatus
from core.queue import Arrival, enqueue
from ingest import jobs
from ingest.jobs import Environment, claim, release, requeue_stale
from ingest.worker import JobReport, run_queue

HEADER = "Employee ID,First Name,Last Name,Email,Status"


def users_csv(count: int, start: int = 0, salt: str = "") -> bytes:
    lines = [HEADER] + [
        f"{i:06d},First{i}{salt},Last{i},user{i}@example.com,Active" for i in range(start, start + count)
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def deadline_wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> Path:
    data = config_dict(tmp_path / "data")
    data["environments"]["sandbox"]["database"] = database_url
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file, {})


@pytest.fixture
def where(config: Config) -> Iterator[Environment]:
    database = Database("sandbox", config.database_url("sandbox"))
    database.upgrade()
    yield Environment(config, "sandbox", database)
    database.dispose()


def upload(where: Environment, content: bytes, name: str = "acme_users.csv", client: str = "acme") -> ImportJob:
    layout = where.layout
    layout.ensure(where.env, client)
    path = layout.upload_dir(where.env, client) / name
    if path.exists():
        path.chmod(0o644)
        path.unlink()
    path.write_bytes(content)
    job = enqueue(layout, where.database, Arrival(where.env, client, path, "ftp"))
    assert job is not None
    return job


def job_row(where: Environment, job_id: int) -> ImportJob:
    with where.database.session() as session:
        job = session.get(ImportJob, job_id)
        assert job is not None
        return job


def result_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))


def user_count(where: Environment, client: str = "acme", status: str | None = None) -> int:
    query = "SELECT count(*) FROM users WHERE client = :client" + (" AND status = :status" if status else "")
    with where.database.engine.connect() as connection:
        return int(connection.execute(text(query), {"client": client, "status": status}).scalar_one())


def run_all(where: Environment) -> list[JobReport]:
    return run_queue(where, jobs.node_id())


# --- claiming ----------------------------------------------------------------------------------------------------


def test_racing_workers_take_each_job_once_and_one_per_client(where: Environment) -> None:
    jobs = [upload(where, users_csv(1, salt=str(n)), f"{client}_users_{n}.csv", client)
            for n in range(12) for client in ("acme", "globex")]  # fmt: skip
    taken: list[int] = []
    overlaps: list[str] = []
    lock = threading.Lock()

    def work(node: str) -> None:
        while True:
            job = claim(where.database, node)
            if job is None:
                return
            with where.database.session() as session:
                running = session.scalar(
                    select(func.count()).where(ImportJob.client == job.client, ImportJob.status == "running")
                )
            if running != 1:
                overlaps.append(f"{job.client} had {running} running jobs")
            with lock:
                taken.append(job.id)
            with where.database.engine.begin() as connection:
                connection.execute(update(ImportJob).where(ImportJob.id == job.id).values(status="applied"))

    threads = [threading.Thread(target=work, args=(f"node{n}:1:x",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(taken) == sorted(job.id for job in jobs)
    assert overlaps == []


def test_oldest_first_and_a_client_with_a_running_job_is_skipped(where: Environment) -> None:
    first = upload(where, users_csv(1), "acme_users_1.csv", "acme")
    second = upload(where, users_csv(2), "acme_users_2.csv", "acme")
    third = upload(where, users_csv(3), "globex_users.csv", "globex")

    a = claim(where.database, "n:1:x")
    b = claim(where.database, "n:1:x")
    c = claim(where.database, "n:1:x")

    assert (a and a.id, b and b.id, c) == (first.id, third.id, None)  # acme's second waits for its first
    assert job_row(where, second.id).status == JobStatus.QUEUED
    assert job_row(where, first.id).attempts == 1 and job_row(where, first.id).claimed_by == "n:1:x"


def test_a_stale_or_orphaned_running_job_is_requeued_and_a_live_one_is_not(where: Environment) -> None:
    stale, orphan, live, worn = (upload(where, users_csv(n), f"acme_users_{n}.csv") for n in range(1, 5))
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = jobs.node_id()
    host = me.split(":")[0]
    states = {
        stale.id: {"claimed_by": "other-host:1:x", "heartbeat_at": long_ago},
        orphan.id: {"claimed_by": f"{host}:{dead.stdout.strip()}:x", "heartbeat_at": datetime.now(UTC)},
        live.id: {"claimed_by": "other-host:2:y", "heartbeat_at": datetime.now(UTC)},
        worn.id: {"claimed_by": "other-host:3:z", "heartbeat_at": long_ago, "attempts": jobs.MAX_ATTEMPTS},
    }
    with where.database.engine.begin() as connection:
        for job_id, values in states.items():
            connection.execute(update(ImportJob).where(ImportJob.id == job_id).values(status="running", **values))

    changed = requeue_stale(where.database, me)

    assert sorted(changed) == sorted([stale.id, orphan.id, worn.id])
    assert job_row(where, stale.id).status == JobStatus.QUEUED
    assert job_row(where, orphan.id).status == JobStatus.QUEUED
    assert job_row(where, live.id).status == JobStatus.RUNNING
    assert job_row(where, worn.id).status == JobStatus.FAILED


# --- the pipeline ------------------------------------------------------------------------------------------------


def test_an_applied_job_leaves_users_a_result_file_an_archive_and_no_upload_entry(where: Environment) -> None:
    job = upload(where, users_csv(50) + b"bad,,Nobody,nobody@,Active\r\n")

    [report] = run_all(where)

    stored = job_row(where, job.id)
    assert (report.status, stored.status) == ("applied", "applied")
    assert (stored.rows_total, stored.rows_created, stored.rows_error, stored.source_key) == (51, 50, 1, None)
    assert user_count(where) == 50
    rows = result_rows(where.layout.absolute(stored.result_path or ""))
    assert [row[2] for row in rows[1:-1]] == ["created"] * 50 + ["error"]
    assert rows[-2][:2] == ["52", "bad"] and "First Name" in rows[-2][3]
    assert rows[-1][:3] == ["summary", "", "applied"]
    assert (
        where.layout.absolute(stored.archive_path or "").read_bytes()
        == users_csv(50) + b"bad,,Nobody,nobody@,Active\r\n"
    )
    assert not where.layout.absolute(stored.spool_path).exists()
    assert list(where.layout.upload_dir("sandbox", "acme").iterdir()) == []
    assert stored.sha256 is not None and len(stored.sha256) == 64


def test_a_result_file_left_half_written_by_a_killed_importer_is_removed_by_the_next_job(where: Environment) -> None:
    spool = where.layout.spool_dir("sandbox", "acme")
    spool.mkdir(parents=True, exist_ok=True)
    stale = spool / "0123456789abcdef.results.tmp"  # what ResultWriter leaves when its process is killed
    stale.write_text("line,key,outcome,reason\r\n2,000001,created,\r\n", encoding="utf-8")
    other = where.layout.spool_dir("sandbox", "globex") / "fedcba9876543210.results.tmp"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text("another client's importer may be writing this", encoding="utf-8")
    upload(where, users_csv(3))

    [report] = run_all(where)

    assert report.status == "applied"
    assert not stale.exists()
    assert other.exists()  # only the client whose job runs (one job per client at a time)
    assert [p.name for p in spool.iterdir() if p.name.endswith(".results.tmp")] == []


def test_a_byte_identical_file_changes_nothing_and_says_so(where: Environment) -> None:
    upload(where, users_csv(10))
    run_all(where)
    again = upload(where, users_csv(10))

    [report] = run_all(where)

    assert report.status == "duplicate"
    stored = job_row(where, again.id)
    assert stored.status == "duplicate" and "identical" in (stored.message or "")
    rows = result_rows(where.layout.absolute(stored.result_path or ""))
    assert rows[1][:3] == ["summary", "", "duplicate"] and "byte-for-byte identical" in rows[1][3]


def test_a_file_that_is_not_csv_is_rejected_with_a_result_file(where: Environment) -> None:
    job = upload(where, b"PK\x03\x04" + os.urandom(2000))

    [report] = run_all(where)

    stored = job_row(where, job.id)
    assert report.status == stored.status == "rejected"
    rows = result_rows(where.layout.absolute(stored.result_path or ""))
    assert rows[-1][2] == "rejected" and rows[-1][3].startswith("nothing applied: ")
    assert user_count(where) == 0


def test_on_row_error_reject_applies_nothing_when_one_row_is_bad(tmp_path: Path, database_url: str) -> None:
    data = config_dict(tmp_path / "data")
    data["environments"]["sandbox"]["database"] = database_url
    data["clients"]["acme"]["import"]["template"]["on_row_error"] = "reject"
    path = tmp_path / "reject.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path, {})
    database = Database("sandbox", database_url)
    database.upgrade()
    try:
        where = Environment(config, "sandbox", database)
        job = upload(where, users_csv(20) + b"000777,Ann,Lee,not-an-email,Active\r\n")
        [report] = run_all(where)
        stored = job_row(where, job.id)
        assert report.status == stored.status == "rejected"
        assert "on_row_error: reject" in (stored.message or "")
        rows = result_rows(where.layout.absolute(stored.result_path or ""))
        assert [row[:3] for row in rows[1:]] == [["22", "000777", "error"], ["summary", "", "rejected"]]
        assert user_count(where) == 0
    finally:
        database.dispose()


def test_a_full_file_suspending_too_many_is_held_until_released(where: Environment) -> None:
    upload(where, users_csv(100))
    run_all(where)
    held = upload(where, users_csv(50, salt="x"))  # would suspend 50 of 100 active users

    [report] = run_all(where)

    assert report.status == "held" and report.failed
    stored = job_row(where, held.id)
    assert "would suspend 50 of 100 active users" in (stored.message or "")
    assert f"lcsync import release {held.id} --env sandbox" in (stored.message or "")
    assert user_count(where, status="active") == 100
    assert result_rows(where.layout.absolute(stored.result_path or ""))[-1][2] == "held"

    release(where.database, held.id)
    [after] = run_all(where)

    assert after.status == "applied"
    stored = job_row(where, held.id)
    assert (stored.status, stored.rows_updated, stored.rows_suspended) == ("applied", 50, 50)
    assert user_count(where, status="active") == 50
    with pytest.raises(Exception, match="only a held or failed job"):
        release(where.database, held.id)


def test_a_file_without_a_valid_row_is_held(where: Environment) -> None:
    job = upload(where, (HEADER + "\r\n,,,,\r\n000001,,,,Active\r\n").encode())

    [report] = run_all(where)

    assert report.status == "held"
    assert "no valid row" in (job_row(where, job.id).message or "")


def test_a_newer_upload_supersedes_a_held_job(where: Environment) -> None:
    upload(where, users_csv(100))
    run_all(where)
    held = upload(where, users_csv(10, salt="x"))
    run_all(where)
    corrected = upload(where, users_csv(100, salt="y"))

    [report] = run_all(where)

    assert report.status == "applied" and report.job_id == corrected.id
    old = job_row(where, held.id)
    assert (
        old.status == "rejected" and old.message == f"superseded by job {corrected.id} (a newer upload); never applied"
    )


def test_a_missing_spool_file_fails_the_job_with_a_result_file(where: Environment) -> None:
    job = upload(where, users_csv(5))
    where.layout.absolute(job.spool_path).unlink()

    [report] = run_all(where)

    assert report.status == "failed"
    assert result_rows(report.result_path or Path())[-1][2] == "failed"


def test_a_cron_environment_imports_only_jobs_queued_before_its_last_run(where: Environment) -> None:
    from core.cron import CronSchedule, last_fire

    upload(where, users_csv(5))
    fired = last_fire(CronSchedule.parse("0 0 * * *", where.config.zone), datetime.now(UTC))
    assert fired is not None
    assert run_queue(where, jobs.node_id(), due_before=fired.astimezone(UTC)) == []  # arrived after midnight
    assert [report.status for report in run_queue(where, jobs.node_id(), due_before=datetime.now(UTC))] == ["applied"]


def test_an_apply_committed_before_its_status_was_recorded_is_not_applied_twice(where: Environment) -> None:
    from ingest.apply import UserStore
    from ingest.reader import open_user_file
    from ingest.validate import validate

    upload(where, users_csv(10))
    run_all(where)
    job = upload(where, users_csv(15, salt="z"))  # 10 updated, 5 created
    template = where.import_config("acme").template
    validation = validate(open_user_file(where.layout.absolute(job.spool_path), template), {})
    UserStore(where.database).apply("acme", template, validation, job.id, lambda outcome: None)  # then "died"

    [report] = run_all(where)

    stored = job_row(where, job.id)
    assert (report.status, stored.rows_created, stored.rows_updated, stored.rows_unchanged) == ("applied", 5, 10, 0)
    rows = result_rows(where.layout.absolute(stored.result_path or ""))
    assert [row[2] for row in rows[1:-1]] == ["updated"] * 10 + ["created"] * 5
    assert user_count(where) == 15


# --- a crash in the middle of an import --------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_import_leaves_the_store_untouched_and_the_rerun_completes_once(
    where: Environment, config_file: Path, tmp_path: Path
) -> None:
    rows = 200_000
    job = upload(where, users_csv(rows))
    spool = where.layout.spool_dir("sandbox", "acme")
    env = {**os.environ, "LCSYNC_CONFIG": str(config_file)}
    command = [sys.executable, "-m", "lcsync", "import", "run", "--env", "sandbox"]
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The result rows stream into a temporary file while the applier's transaction is open: kill it then.
        deadline_wait(
            lambda: any(p.stat().st_size > 200_000 for p in spool.glob("*.results.tmp")) or victim.poll() is not None,
            120, "the import to be half way",
        )  # fmt: skip
        assert victim.poll() is None, "the import finished before it could be killed; make the file larger"
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    stored = job_row(where, job.id)
    assert stored.status == "running"
    assert user_count(where) == 0  # the transaction never committed
    assert where.layout.absolute(stored.spool_path).exists()  # the upload is never lost

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert again.returncode == 0, again.stderr
    with where.database.session() as session:
        jobs = list(session.scalars(select(ImportJob)))
    assert [(j.id, j.status, j.attempts) for j in jobs] == [(job.id, "applied", 2)]
    assert (jobs[0].rows_total, jobs[0].rows_created, jobs[0].rows_error) == (rows, rows, 0)
    assert user_count(where) == rows
    results = list(where.layout.results_dir("sandbox", "acme").iterdir())
    assert len(results) == 1
    assert where.layout.absolute(jobs[0].archive_path or "").stat().st_size == stored.size
