"""The import job table: who claims a job, heartbeats, requeueing jobs whose importer stopped, and releasing.

Claiming is a conditional update (``... WHERE id=:id AND status='queued' AND <no running job of that client>``): the
job is ours only if one row changed, so threads, processes and nodes sharing one database never take one job twice.
See ingest.worker for what is done with a claimed job.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import aliased

from core.config import Config, ImportConfig
from core.db import Database
from core.errors import DatabaseUnavailable, UsageError
from core.layout import Layout
from core.log import event
from core.models import ImportJob, JobStatus

log = logging.getLogger("lcsync.import")

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0
MAX_ATTEMPTS = 5

_TOKEN = uuid.uuid4().hex[:8]


def node_id() -> str:
    """Who claims a job: ``host:pid:token`` (the token tells a reused pid from the process that claimed)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _now() -> datetime:
    return datetime.now(UTC)


def _db_down(database: Database, exc: OperationalError | InterfaceError) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}")


@dataclass(frozen=True)
class Environment:
    """What an import in one environment needs: the configuration, the environment's name and its database."""

    config: Config
    env: str
    database: Database

    @property
    def layout(self) -> Layout:
        return Layout(self.config.data_dir)

    def import_config(self, client: str) -> ImportConfig:
        found = self.config.clients.get(client)
        if found is None or found.import_ is None:
            raise UsageError(f"client {client!r} has no import section in the configuration")
        return found.import_


def claim(
    database: Database, node: str, *, job_id: int | None = None, due_before: datetime | None = None
) -> ImportJob | None:
    """Take the oldest queued job (or job ``job_id``) whose client has no running job. None when there is none."""
    running = aliased(ImportJob)
    client_busy = exists().where(running.client == ImportJob.client, running.status == JobStatus.RUNNING)
    query = select(ImportJob.id, ImportJob.client).where(ImportJob.status == JobStatus.QUEUED, ~client_busy)
    if job_id is not None:
        query = query.where(ImportJob.id == job_id)
    if due_before is not None:
        query = query.where(ImportJob.received_at <= due_before)
    try:
        with database.session() as session:
            candidates = session.execute(query.order_by(ImportJob.received_at, ImportJob.id).limit(20)).all()
        for candidate_id, client in candidates:
            now = _now()
            with database.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Serialises claims per client, so "no running job of this client" and the update are one step.
                    lock = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
                    connection.execute(lock, {"key": f"import:{client}"})
                busy = exists().where(running.client == client, running.status == JobStatus.RUNNING)
                changed = connection.execute(
                    update(ImportJob)
                    .where(ImportJob.id == candidate_id, ImportJob.status == JobStatus.QUEUED, ~busy)
                    .values(
                        status=JobStatus.RUNNING,
                        claimed_by=node,
                        started_at=now,
                        heartbeat_at=now,
                        attempts=ImportJob.attempts + 1,
                        finished_at=None,
                    )
                ).rowcount
            if changed == 1:
                with database.session() as session:
                    return session.get(ImportJob, candidate_id)
    except (OperationalError, InterfaceError) as exc:
        raise _db_down(database, exc) from exc
    return None


def heartbeat(database: Database, job_id: int, node: str) -> bool:
    """Refresh a running job's heartbeat. False when the job is no longer ours."""
    with database.engine.begin() as connection:
        changed = connection.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.claimed_by == node, ImportJob.status == JobStatus.RUNNING)
            .values(heartbeat_at=_now())
        ).rowcount
    return changed == 1


def is_orphaned(claimer: str | None, node: str) -> bool:
    """Whether a claimer on this host is certainly gone: its process is dead, or its pid is now ours."""
    if not claimer:
        return True
    host, _, rest = claimer.partition(":")
    pid_text, _, token = rest.partition(":")
    my_host, my_pid, my_token = node.split(":")
    if host != my_host or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == int(my_pid):
        return token != my_token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def requeue_stale(database: Database, node: str, *, stale_seconds: float = STALE_SECONDS) -> list[int]:
    """Put back in the queue every running job whose claimer stopped (heartbeat too old, or a dead process of this
    host). A job that has stopped ``MAX_ATTEMPTS`` times is failed instead. Returns the ids requeued or failed."""
    cutoff = _now() - timedelta(seconds=stale_seconds)
    changed: list[int] = []
    try:
        with database.session() as session:
            rows = session.execute(
                select(ImportJob.id, ImportJob.claimed_by, ImportJob.heartbeat_at, ImportJob.attempts).where(
                    ImportJob.status == JobStatus.RUNNING
                )
            ).all()
        for job_id, claimer, beat, attempts in rows:
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=UTC)  # SQLite hands back stored UTC without its zone
            if not (is_orphaned(claimer, node) or beat is None or beat < cutoff):
                continue
            gave_up = attempts >= MAX_ATTEMPTS
            values: dict[str, Any] = (
                {
                    "status": JobStatus.FAILED,
                    "finished_at": _now(),
                    "message": f"gave up: the import stopped without finishing {attempts} times",
                }
                if gave_up
                else {"status": JobStatus.QUEUED, "message": f"requeued: {claimer} stopped while importing"}
            )
            with database.engine.begin() as connection:
                done = connection.execute(
                    update(ImportJob)
                    .where(
                        ImportJob.id == job_id, ImportJob.status == JobStatus.RUNNING, ImportJob.claimed_by == claimer
                    )
                    .values(claimed_by=None, **values)
                ).rowcount
            if done == 1:
                changed.append(job_id)
                event(
                    log,
                    "import_requeued" if not gave_up else "import_gave_up",
                    logging.WARNING,
                    env=database.env,
                    job=job_id,
                    claimer=claimer,
                    attempts=attempts,
                )
    except (OperationalError, InterfaceError) as exc:
        raise _db_down(database, exc) from exc
    return changed


def release(database: Database, job_id: int) -> ImportJob:
    """Send a held (or failed) job back to the queue; it will pass the safety hold once."""
    try:
        with database.session() as session, session.begin():
            job = session.get(ImportJob, job_id)
            if job is None:
                raise UsageError(f"no job {job_id} in the {database.env} environment")
            if job.status not in (JobStatus.HELD, JobStatus.FAILED):
                raise UsageError(f"job {job_id} is {job.status}; only a held or failed job can be released")
            job.status = JobStatus.QUEUED
            job.released_at = _now()
            job.claimed_by = None
            job.message = "released by an operator: the safety hold is bypassed once"
    except (OperationalError, InterfaceError) as exc:
        raise _db_down(database, exc) from exc
    event(log, "import_released", env=database.env, job=job_id, client=job.client)
    return job


def spool_file(where: Environment, client: str, path: Path, *, via: str = "cli") -> ImportJob:
    """Queue a file from anywhere (``lcsync import file``): copied into the spool, upload/ left alone."""
    where.import_config(client)
    spool = where.layout.spool_dir(where.env, client)
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / f"{uuid.uuid4().hex}_{path.name}"
    partial = target.with_name(target.name + ".copying")
    shutil.copyfile(path, partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    job = ImportJob(
        client=client,
        filename=path.name,
        spool_path=where.layout.relative(target),
        size=target.stat().st_size,
        status=JobStatus.QUEUED,
        received_via=via,
        username=os.environ.get("USER"),
    )
    try:
        with where.database.session() as session, session.begin():
            session.add(job)
    except (OperationalError, InterfaceError) as exc:
        target.unlink(missing_ok=True)
        raise _db_down(where.database, exc) from exc
    return job
