"""The durable import queue: spooling by hard link, one job per completed file, and a database that is down."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import Config
from core.db import Database
from core.errors import DatabaseUnavailable, QueueError
from core.layout import Layout
from core.models import ImportJob, JobStatus
from core.queue import Arrival, enqueue, is_queued, release_upload_entry, source_key

ENV, CLIENT = "sandbox", "acme"


@pytest.fixture
def layout(config: Config) -> Layout:
    layout = Layout(config.data_dir)
    layout.ensure(ENV, CLIENT)
    return layout


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(ENV, database_url)
    database.upgrade()
    yield database
    database.dispose()


def jobs(db: Database) -> list[ImportJob]:
    with db.session() as session:
        return list(session.scalars(select(ImportJob).order_by(ImportJob.id)))


def upload(layout: Layout, name: str, content: bytes) -> Path:
    """A completed upload, as the FTP server leaves it: written elsewhere, renamed into upload/."""
    incoming = layout.incoming_dir(ENV, CLIENT) / f".{name}.in-flight"
    incoming.write_bytes(content)
    target = layout.upload_dir(ENV, CLIENT) / name
    os.replace(incoming, target)
    return target


def arrival(path: Path, via: str = "ftp") -> Arrival:
    return Arrival(env=ENV, client=CLIENT, path=path, via=via, username="acme-sandbox", remote_ip="127.0.0.1")


def spooled_files(layout: Layout) -> list[Path]:
    return sorted(layout.spool_dir(ENV, CLIENT).iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_enqueue_spools_by_hard_link_and_records_the_job(layout: Layout, db: Database) -> None:
    path = upload(layout, "acme_users.csv", b"Employee ID,First Name\n1,Ann\n")

    job = enqueue(layout, db, arrival(path))

    assert job is not None
    spooled = layout.absolute(job.spool_path)
    assert spooled.read_bytes() == path.read_bytes()
    assert os.path.samefile(spooled, path)  # a hard link: nothing was copied
    assert stat.S_IMODE(path.stat().st_mode) == 0o444  # listed read-only while it waits
    [row] = jobs(db)
    assert (row.id, row.client, row.filename, row.size) == (job.id, CLIENT, "acme_users.csv", len(path.read_bytes()))
    assert (row.status, row.received_via, row.username, row.remote_ip) == (
        JobStatus.QUEUED,
        "ftp",
        "acme-sandbox",
        "127.0.0.1",
    )
    assert row.source_key == source_key(CLIENT, "acme_users.csv", path.stat())
    assert is_queued(db, CLIENT, path)


def test_second_enqueue_of_the_same_file_makes_no_second_job(layout: Layout, db: Database) -> None:
    path = upload(layout, "acme_users.csv", b"a,b\n1,2\n")
    assert enqueue(layout, db, arrival(path)) is not None

    assert enqueue(layout, db, arrival(path, via="watcher")) is None

    assert len(jobs(db)) == 1
    assert len(spooled_files(layout)) == 1  # the second attempt's spool link was undone


def test_reupload_of_the_same_name_is_a_second_job_and_never_alters_the_first_copy(
    layout: Layout, db: Database
) -> None:
    first = enqueue(layout, db, arrival(upload(layout, "acme_users.csv", b"first version\n")))
    path = upload(layout, "acme_users.csv", b"second, longer version\n")

    second = enqueue(layout, db, arrival(path))

    assert first is not None and second is not None
    assert first.source_key != second.source_key
    assert layout.absolute(first.spool_path).read_bytes() == b"first version\n"
    assert layout.absolute(second.spool_path).read_bytes() == b"second, longer version\n"
    assert [job.id for job in jobs(db)] == [first.id, second.id]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_database_down_raises_and_leaves_the_upload_untouched(layout: Layout, tmp_path: Path, kind: str) -> None:
    if kind == "sqlite":
        unopenable = tmp_path / "a-directory-not-a-database"
        unopenable.mkdir()
        url = f"sqlite:///{unopenable}"
    else:  # nothing listens on this port
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lcsync?connect_timeout=5"
    down = Database(ENV, url)
    path = upload(layout, "acme_users.csv", b"a,b\n1,2\n")
    before = path.stat()

    try:
        with pytest.raises(DatabaseUnavailable, match="stays in upload/"):
            enqueue(layout, down, arrival(path))
        with pytest.raises(DatabaseUnavailable):
            is_queued(down, CLIENT, path)
    finally:
        down.dispose()

    after = path.stat()
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert (after.st_ino, after.st_mode, after.st_nlink, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        1,
        before.st_mtime_ns,
    )
    assert spooled_files(layout) == []


def test_concurrent_enqueue_of_one_file_makes_one_job(layout: Layout, db: Database) -> None:
    path = upload(layout, "acme_users.csv", b"a,b\n1,2\n")
    threads = 8
    barrier = threading.Barrier(threads)

    def race(index: int) -> ImportJob | None:
        barrier.wait()
        return enqueue(layout, db, arrival(path, via="ftp" if index % 2 else "watcher"))

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(race, range(threads)))

    assert sum(result is not None for result in results) == 1
    assert len(jobs(db)) == 1
    assert len(spooled_files(layout)) == 1


def test_jobs_survive_a_restart(layout: Layout, database_url: str) -> None:
    before = Database(ENV, database_url)
    before.upgrade()
    job = enqueue(layout, before, arrival(upload(layout, "acme_users.csv", b"a,b\n1,2\n")))
    before.dispose()

    after = Database(ENV, database_url)
    try:
        [row] = jobs(after)
        assert job is not None and row.id == job.id and row.status == JobStatus.QUEUED
        assert layout.absolute(row.spool_path).read_bytes() == b"a,b\n1,2\n"
    finally:
        after.dispose()


def test_release_upload_entry_removes_the_entry_only_if_it_is_the_same_file(layout: Layout, db: Database) -> None:
    first = enqueue(layout, db, arrival(upload(layout, "acme_users.csv", b"one\n")))
    assert first is not None
    release_upload_entry(layout, first, ENV)
    assert not (layout.upload_dir(ENV, CLIENT) / "acme_users.csv").exists()

    second = enqueue(layout, db, arrival(upload(layout, "acme_users.csv", b"two\n")))
    newer = upload(layout, "acme_users.csv", b"three\n")  # replaced while job two waits
    assert second is not None
    release_upload_entry(layout, second, ENV)
    assert newer.read_bytes() == b"three\n"
    release_upload_entry(layout, first, ENV)  # an entry that is already gone is fine
    assert newer.exists()


def test_a_symlink_is_never_spooled(layout: Layout, db: Database, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"secret\n")
    link = layout.upload_dir(ENV, CLIENT) / "acme_users.csv"
    link.symlink_to(outside)

    with pytest.raises(QueueError, match="not a regular file"):
        enqueue(layout, db, arrival(link, via="watcher"))

    assert jobs(db) == []
    assert spooled_files(layout) == []
    assert outside.stat().st_nlink == 1
    assert stat.S_IMODE(outside.stat().st_mode) != 0o444


def test_a_vanished_file_is_a_queue_error(layout: Layout, db: Database) -> None:
    with pytest.raises(QueueError, match="vanished"):
        enqueue(layout, db, arrival(layout.upload_dir(ENV, CLIENT) / "acme_users.csv"))
    assert jobs(db) == []
