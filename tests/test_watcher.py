"""The upload watcher: files reaching upload/ without the FTP server are queued once, after they settle."""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from core.config import Config, load_config
from core.db import Database
from core.layout import Layout
from core.models import ImportJob
from core.queue import Arrival, enqueue
from ingest.watcher import UploadWatcher

ENV = "sandbox"
CONTENT = b"Employee ID,First Name,Last Name,Email\n1,Ann,Lee,ann@example.com\n"


# --- helpers -----------------------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def jobs(db: Database) -> list[ImportJob]:
    with db.session() as session:
        return list(session.scalars(select(ImportJob).order_by(ImportJob.id)))


def upload_dir(config: Config, client: str = "acme", env: str = ENV) -> Path:
    return Layout(config.data_dir).upload_dir(env, client)


def copy_in(config: Config, name: str, content: bytes = CONTENT, client: str = "acme", env: str = ENV) -> Path:
    """An operator's copy straight into upload/ (no temporary name, no rename)."""
    source = config.data_dir.parent / f"source-{name}"
    source.write_bytes(content)
    target = upload_dir(config, client, env) / name
    shutil.copyfile(source, target)
    return target


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [getattr(record, "fields", {}) for record in caplog.records if record.getMessage() == name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def layout(config: Config) -> Layout:
    layout = Layout(config.data_dir)
    for client in config.clients:
        for env in config.environments:
            layout.ensure(env, client)
    return layout


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(ENV, database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def make_watcher() -> Iterator[Callable[..., UploadWatcher]]:
    """Build watchers with test-sized timings; every one is stopped (and its threads joined) afterwards."""
    made: list[UploadWatcher] = []

    def make(config: Config, databases: dict[str, Database], **options: Any) -> UploadWatcher:
        options.setdefault("settle_seconds", 0.2)
        options.setdefault("sweep_seconds", 0.5)
        watcher = UploadWatcher(config, databases, **options)
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.stop()


class TcpProxy:
    """Forwards a loopback port to a PostgreSQL server: stopped, "the database is down"; started, it is back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="test-tcp-proxy")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                if key.fileobj is self._listener:
                    client, _address = self._listener.accept()
                    upstream = socket.create_connection(self.target)
                    self._selector.register(client, selectors.EVENT_READ, upstream)
                    self._selector.register(upstream, selectors.EVENT_READ, client)
                    continue
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                peer: socket.socket = key.data
                if source.fileno() == -1:  # closed with its peer earlier in this round
                    continue
                data = source.recv(65536)
                if data:
                    peer.sendall(data)
                else:
                    for sock in (source, peer):
                        self._selector.unregister(sock)
                        sock.close()


# --- tests -------------------------------------------------------------------------------------------------------


def test_copied_file_is_queued_once_after_settling(
    config: Config, layout: Layout, db: Database, make_watcher: Callable[..., UploadWatcher]
) -> None:
    watcher = make_watcher(config, {ENV: db}, sweep_seconds=30.0)  # only events can find it in time
    watcher.start()

    path = copy_in(config, "acme_users.csv")

    wait_for(lambda: len(jobs(db)) == 1, "the copied file to be queued")
    assert watcher.scan_once() == 0
    [job] = jobs(db)
    assert (job.client, job.filename, job.size, job.received_via) == ("acme", "acme_users.csv", len(CONTENT), "watcher")
    assert layout.absolute(job.spool_path).read_bytes() == CONTENT
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_file_still_growing_is_not_queued_until_it_stops(
    config: Config, layout: Layout, db: Database, make_watcher: Callable[..., UploadWatcher]
) -> None:
    watcher = make_watcher(config, {ENV: db}, settle_seconds=1.0, sweep_seconds=0.2)
    watcher.start()
    path = upload_dir(config) / "acme_users.csv"
    written = b""

    with open(path, "wb") as handle:
        for line in range(40):  # a slow writer: one line every 50 ms, never pausing for a settle period
            chunk = f"{line},First{line},Last{line},user{line}@example.com\n".encode()
            handle.write(chunk)
            handle.flush()
            written += chunk
            assert jobs(db) == [], f"queued while still being written (after {line + 1} lines)"
            time.sleep(0.05)  # paces the writer; not a wait for an outcome

    wait_for(lambda: len(jobs(db)) == 1, "the finished file to be queued")
    [job] = jobs(db)
    assert job.size == len(written)
    assert layout.absolute(job.spool_path).read_bytes() == written


def test_temporary_and_unmatched_names_are_never_queued(
    config: Config,
    layout: Layout,
    db: Database,
    make_watcher: Callable[..., UploadWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lcsync")
    for name in ("acme_users.csv.part", "acme_users.csv.filepart", "ACME_USERS.TMP", "payroll.csv", "globex_users.csv"):
        copy_in(config, name)
    copy_in(config, "ACME_Users_2024.CSV")  # matches acme_users*.csv, case-insensitively
    watcher = make_watcher(config, {ENV: db})

    assert watcher.scan_once() == 1
    assert watcher.scan_once() == 0

    assert [job.filename for job in jobs(db)] == ["ACME_Users_2024.CSV"]
    refused = events(caplog, "upload_name_not_allowed")
    assert sorted(fields["file"] for fields in refused) == ["globex_users.csv", "payroll.csv"]  # once per file
    assert {fields["expected"] for fields in refused} == {"acme_users*.csv"}
    assert (upload_dir(config) / "acme_users.csv.part").exists()


def test_startup_scan_queues_files_that_arrived_while_stopped(
    config: Config, layout: Layout, db: Database, tmp_path: Path, make_watcher: Callable[..., UploadWatcher]
) -> None:
    production = Database("production", f"sqlite:///{tmp_path / 'production.db'}")
    production.upgrade()
    try:
        copy_in(config, "acme_users_1.csv")
        copy_in(config, "acme_users_2.csv")
        copy_in(config, "globex_users.csv", client="globex")
        copy_in(config, "acme_users.csv", env="production")
        watcher = make_watcher(config, {ENV: db, "production": production}, sweep_seconds=30.0)

        watcher.start()

        wait_for(lambda: len(jobs(db)) == 3 and len(jobs(production)) == 1, "the start-up scan to queue all files")
        sandbox_jobs = {(job.client, job.filename, job.received_via) for job in jobs(db)}
        assert sandbox_jobs == {
            ("acme", "acme_users_1.csv", "scan"),
            ("acme", "acme_users_2.csv", "scan"),
            ("globex", "globex_users.csv", "scan"),
        }
        assert [(job.client, job.filename) for job in jobs(production)] == [("acme", "acme_users.csv")]
    finally:
        production.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def flaky_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A database URL that is down at first, and a function that brings it back."""
    if request.param == "sqlite":
        # data/ is a symbolic link, swapped atomically from a folder where the database file is a folder ("unable
        # to open database file") to one holding a migrated database: no moment where SQLite could create an empty one.
        (tmp_path / "down" / "sandbox.db").mkdir(parents=True)
        (tmp_path / "up").mkdir()
        ready = Database(ENV, f"sqlite:///{tmp_path / 'up' / 'sandbox.db'}")
        ready.upgrade()
        ready.dispose()
        (tmp_path / "db").symlink_to(tmp_path / "down")

        def back_sqlite() -> None:
            (tmp_path / "db.new").symlink_to(tmp_path / "up")
            os.replace(tmp_path / "db.new", tmp_path / "db")

        yield f"sqlite:///{tmp_path / 'db' / 'sandbox.db'}", back_sqlite
        return
    real_url = request.getfixturevalue("postgres_url")
    real = Database(ENV, real_url)
    real.upgrade()
    real.dispose()
    parsed = make_url(real_url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    try:
        yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy.start
    finally:
        proxy.stop()


def test_database_down_then_back_file_stays_and_is_queued_on_a_later_sweep(
    config: Config,
    layout: Layout,
    flaky_database: tuple[str, Callable[[], None]],
    make_watcher: Callable[..., UploadWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lcsync")
    url, bring_back = flaky_database
    db = Database(ENV, url)
    watcher = make_watcher(config, {ENV: db}, settle_seconds=0.1, sweep_seconds=0.5)
    try:
        path = copy_in(config, "acme_users.csv")
        mode = path.stat().st_mode
        watcher.start()

        wait_for(lambda: bool(events(caplog, "upload_queue_deferred")), "the watcher to find the database down")
        assert path.read_bytes() == CONTENT
        assert (path.stat().st_mode, path.stat().st_nlink) == (mode, 1)
        assert list(layout.spool_dir(ENV, "acme").iterdir()) == []

        bring_back()

        wait_for(lambda: len(jobs(db)) == 1, "the file to be queued once the database is back")
        assert events(caplog, "upload_queue_resumed") == [{"env": ENV}]
        assert [job.filename for job in jobs(db)] == ["acme_users.csv"]
        assert watcher.scan_once() == 0
    finally:
        watcher.stop()  # before the database goes (the proxy stops after this test)
        db.dispose()


@pytest.mark.parametrize("settle_seconds", [0.0, 0.2], ids=["watcher-races-ftp", "watcher-sees-ftp-job"])
def test_complete_ftp_upload_is_queued_exactly_once_when_the_watcher_sees_it_too(
    config: Config,
    layout: Layout,
    db: Database,
    make_watcher: Callable[..., UploadWatcher],
    settle_seconds: float,
) -> None:
    watcher = make_watcher(config, {ENV: db}, settle_seconds=settle_seconds, sweep_seconds=0.1)
    watcher.start()
    names = [f"acme_users_{index}.csv" for index in range(20)]
    ftp_jobs = 0

    for name in names:  # as the FTP server does: write in incoming/, rename into upload/, enqueue
        partial = layout.incoming_dir(ENV, "acme") / name
        partial.write_bytes(CONTENT + name.encode())
        target = upload_dir(config) / name
        os.replace(partial, target)
        arrival = Arrival(ENV, "acme", target, via="ftp", username="acme-sandbox", remote_ip="127.0.0.1")
        ftp_jobs += enqueue(layout, db, arrival) is not None

    wait_for(lambda: len(jobs(db)) == len(names), "every upload to be queued")
    assert watcher.scan_once() == 0
    queued = jobs(db)
    assert sorted(job.filename for job in queued) == sorted(names)
    assert sum(job.received_via == "ftp" for job in queued) == ftp_jobs
    assert len(list(layout.spool_dir(ENV, "acme").iterdir())) == len(names)
    if settle_seconds:  # the FTP hook always comes first here; the watcher only sees a queued file
        assert ftp_jobs == len(names)


def test_two_watchers_sharing_data_dir_and_database_make_one_job_per_file(
    config: Config, layout: Layout, database_url: str, make_watcher: Callable[..., UploadWatcher]
) -> None:
    node_a, node_b = Database(ENV, database_url), Database(ENV, database_url)
    node_a.upgrade()
    watchers = [make_watcher(config, {ENV: node}, settle_seconds=0.05, sweep_seconds=0.1) for node in (node_a, node_b)]
    try:
        names = [f"acme_users_{index}.csv" for index in range(30)]
        for name in names[:15]:
            copy_in(config, name)
        for watcher in watchers:
            watcher.start()
        for name in names[15:]:
            copy_in(config, name)

        wait_for(lambda: len(jobs(node_a)) == len(names), "every file to be queued")
        assert [watcher.scan_once() for watcher in watchers] == [0, 0]
        queued = jobs(node_b)
        assert sorted(job.filename for job in queued) == sorted(names)
        assert len({job.source_key for job in queued}) == len(names)
        assert len(list(layout.spool_dir(ENV, "acme").iterdir())) == len(names)  # no stray spool links
    finally:
        for watcher in watchers:
            watcher.stop()
        node_a.dispose()
        node_b.dispose()


def test_symlink_and_folder_in_upload_are_ignored(
    config: Config,
    layout: Layout,
    db: Database,
    tmp_path: Path,
    make_watcher: Callable[..., UploadWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    outside = tmp_path / "outside" / "secrets.csv"
    outside.parent.mkdir()
    outside.write_bytes(b"not for import\n")
    mode = outside.stat().st_mode
    (upload_dir(config) / "acme_users_link.csv").symlink_to(outside)
    (upload_dir(config) / "acme_users_folder.csv").mkdir()
    copy_in(config, "acme_users.csv")
    watcher = make_watcher(config, {ENV: db})

    assert watcher.scan_once() == 1
    assert watcher.scan_once() == 0

    assert [job.filename for job in jobs(db)] == ["acme_users.csv"]
    assert (outside.stat().st_mode, outside.stat().st_nlink) == (mode, 1)
    ignored = {fields["file"]: fields["kind"] for fields in events(caplog, "upload_not_regular_file")}
    assert ignored == {"acme_users_link.csv": "symlink", "acme_users_folder.csv": "not a regular file"}


def test_client_without_import_is_not_watched_until_a_reload_adds_it(
    write_config: Callable[..., Path], db: Database, make_watcher: Callable[..., UploadWatcher]
) -> None:
    def no_globex_import(data: dict[str, Any]) -> None:
        del data["clients"]["globex"]["import"]

    before = load_config(write_config(no_globex_import))
    Layout(before.data_dir).ensure(ENV, "globex")
    copy_in(before, "globex_users.csv", client="globex")
    watcher = make_watcher(before, {ENV: db})
    watcher.start()

    assert watcher.scan_once() == 0
    assert jobs(db) == []

    watcher.update_config(load_config(write_config()))

    wait_for(lambda: len(jobs(db)) == 1, "the reloaded watcher to queue globex's file")
    assert [(job.client, job.filename) for job in jobs(db)] == [("globex", "globex_users.csv")]


def test_file_reported_busy_waits_until_it_is_not(
    config: Config, layout: Layout, db: Database, make_watcher: Callable[..., UploadWatcher]
) -> None:
    busy = {upload_dir(config) / "acme_users.csv"}
    copy_in(config, "acme_users.csv")
    watcher = make_watcher(config, {ENV: db}, is_busy=lambda path: path in busy)

    assert watcher.scan_once() == 0
    busy.clear()
    assert watcher.scan_once() == 1
    assert len(jobs(db)) == 1
