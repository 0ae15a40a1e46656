"""``lcsync serve``: the FTP server, the upload watcher, the import workers and the job schedule in one process.

An upload queued by the FTP hook nudges its environment's import worker (``on_arrival`` environments import it at
once); jobs queued by the watcher or another node are found by the worker's poll. Cron environments import at their
``import_schedule`` (``ingest.schedule``).

Signals: SIGHUP (or a change of accounts.yaml on disk) reloads the configuration and the certificate without dropping
connections, and a file that fails validation is refused while the running configuration stays; SIGTERM and SIGINT
stop accepting, give running transfers a moment to finish, and exit. Under systemd (``Type=notify``) readiness is
reported once every listener is bound, and the watchdog is fed while the main loop runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from core.config import Config, load_config
from core.db import Database
from core.errors import ConfigError, DatabaseUnavailable
from core.layout import Layout
from core.log import event, setup_logging
from core.metrics import METRICS
from core.models import ImportJob, JobStatus
from core.queue import Arrival, enqueue
from ingest.schedule import ImportWorker
from ingest.watcher import UploadWatcher
from lcsync.health import HealthServer
from lcsync.schedule import JobSchedule
from server.authorizer import Account
from server.ftpserver import FtpService

log = logging.getLogger("lcsync.service")

DRAIN_SECONDS = 20.0  # on SIGTERM, how long running transfers may take to finish before they are aborted


def sd_notify(message: str) -> None:
    """Tell systemd about our state (no-op outside a ``Type=notify`` unit)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            event(log, "sd_notify_failed", logging.WARNING, reason=str(exc))


def open_databases(config: Config) -> dict[str, Database]:
    """One database per environment, migrated to the current schema (a database that is down is retried later)."""
    databases = {env: Database(env, config.database_url(env)) for env in config.environments}
    for database in databases.values():
        try:
            database.upgrade()
        except DatabaseUnavailable as exc:
            event(log, "database_unavailable", logging.ERROR, env=database.env, reason=str(exc))
    return databases


class Service:
    """Everything ``lcsync serve`` runs, startable and stoppable in-process (the tests run it this way too)."""

    def __init__(
        self, config: Config, *, auth_failed_delay: float = 3.0, settle_seconds: float = 2.0, imports: bool = True
    ) -> None:
        """``imports=False`` runs the front door only (jobs stay queued): for tests of the FTP server and queue."""
        self.config = config
        self.layout = Layout(config.data_dir)
        self.databases = open_databases(config)
        self.ftp = FtpService(config, self._on_upload, auth_failed_delay=auth_failed_delay)
        self.watcher = UploadWatcher(config, self.databases, settle_seconds=settle_seconds)
        self.imports = imports
        self.workers: dict[str, ImportWorker] = {}
        if imports:
            self.workers = {env: ImportWorker(config, env, db) for env, db in self.databases.items()}
        # Report generation, the 00:05 delivery and retention (lcsync.schedule); off with the workers in front-door
        # tests, like them.
        self.schedule: JobSchedule | None = JobSchedule(config, self.databases) if imports else None
        self.health: HealthServer | None = None
        if config.server.http:
            host, _, port = config.server.http.rpartition(":")
            self.health = HealthServer(host.strip("[]"), int(port), METRICS, self._health_checks)
        METRICS.gauge("lcsync_queue_depth", self._queue_depth)

    def _health_checks(self) -> dict[str, str]:
        """``ok`` or what is wrong, per part: each environment's database and the FTP listeners."""
        checks = {"ftp": "ok" if self.ftp.addresses else "not listening"}
        for env, database in self.databases.items():
            try:
                with database.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                checks[f"database:{env}"] = "ok"
            except SQLAlchemyError as exc:
                checks[f"database:{env}"] = f"unavailable: {type(exc).__name__}"
        return checks

    def _queue_depth(self) -> dict[tuple[tuple[str, str], ...], float]:
        depth: dict[tuple[tuple[str, str], ...], float] = {}
        for env, database in self.databases.items():
            with database.session() as session:
                waiting = session.scalar(
                    select(func.count()).select_from(ImportJob).where(ImportJob.status == JobStatus.QUEUED)
                )
            depth[(("env", env),)] = float(waiting or 0)
        return depth

    def _on_upload(self, account: Account, path: Path, username: str, remote_ip: str) -> None:
        arrival = Arrival(account.env, account.client_id, path, "ftp", username, remote_ip)
        job = enqueue(self.layout, self.databases[account.env], arrival)
        worker = self.workers.get(account.env)
        if job is not None and worker is not None:
            worker.nudge()

    def start(self) -> None:
        if self.health is not None:
            self.health.start()
        self.ftp.start()
        self.watcher.start()
        for worker in self.workers.values():
            worker.start()
        if self.schedule is not None:
            self.schedule.start()

    def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop accepting, let transfers drain, then let each import worker finish the job in hand."""
        self.ftp.stop(drain_seconds)
        self.watcher.stop()
        if self.schedule is not None:
            self.schedule.stop()
        for worker in self.workers.values():
            worker.stop()
        if self.health is not None:
            self.health.stop()
        for database in self.databases.values():
            database.dispose()

    def reload(self) -> bool:
        """Re-read the configuration file; keep the running one when the new one is invalid."""
        source = self.config.source
        if source is None:
            return False
        try:
            config = load_config(source)
        except ConfigError as exc:
            event(log, "reload_refused", logging.ERROR, config=str(source), problems=exc.problems)
            return False
        for env in config.environments.keys() - self.databases.keys():
            self.databases[env] = Database(env, config.database_url(env))
            self.databases[env].upgrade()
            if self.imports:
                self.workers[env] = ImportWorker(config, env, self.databases[env])
                self.workers[env].start()
        self.ftp.reload(config)
        self.watcher.update_config(config)
        for worker in self.workers.values():
            worker.update_config(config)
        if self.schedule is not None:
            self.schedule.update_config(config)
        self.config = config
        return True


@contextmanager
def _signals() -> Iterator[dict[str, threading.Event]]:
    flags = {"stop": threading.Event(), "reload": threading.Event()}

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        flags["stop"].set()

    def on_hup(signum: int, _frame: FrameType | None) -> None:
        flags["reload"].set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        yield flags
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path else None
    except OSError:
        return None


def serve(config: Config) -> int:
    """Run the service until SIGTERM/SIGINT. Returns the process exit status."""
    setup_logging()
    service = Service(config)
    service.start()
    for host, port in service.ftp.addresses:
        event(log, "ready", host=host, port=port, data_dir=str(config.data_dir))
    sd_notify("READY=1")
    watchdog = float(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
    seen = _mtime(config.source)
    with _signals() as flags:
        while not flags["stop"].wait(min(watchdog or 1.0, 1.0)):
            if watchdog:
                sd_notify("WATCHDOG=1")
            now = _mtime(service.config.source)
            if flags["reload"].is_set() or now != seen:
                flags["reload"].clear()
                seen = now
                sd_notify("RELOADING=1")
                service.reload()
                sd_notify("READY=1")
    sd_notify("STOPPING=1")
    event(log, "stopping", drain_s=DRAIN_SECONDS)
    service.stop(DRAIN_SECONDS)
    return 0
