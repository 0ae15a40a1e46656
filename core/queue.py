"""The durable import queue (SPEC section 5, "Queue").

A completed upload in ``upload/`` is taken into the environment's spool by a hard link (an atomic step that copies
nothing) and an import job row is written in the same step. The upload/ entry stays listed, read-only, until the
import takes it. A new upload of the same name arrives as a new file (the FTP server writes uploads elsewhere and
renames them into place), so it never alters the spooled copy.

Exactly one job per completed file: the job row holds the upload entry's device:inode in a unique column, so the FTP
hook, the watcher and another node racing on the same file make one job. If the database is down the spool link is
undone and the file stays in upload/, where the watcher's next sweep queues it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat as stat_module
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from core.db import Database
from core.errors import DatabaseUnavailable, QueueError
from core.layout import Layout
from core.log import event
from core.models import ImportJob, JobStatus

log = logging.getLogger("lcsync.queue")


@dataclass(frozen=True)
class Arrival:
    """A completed file in an account's upload/ folder."""

    env: str
    client: str
    path: Path
    via: str  # "ftp", "watcher", "scan"
    username: str | None = None
    remote_ip: str | None = None


def source_key(client: str, name: str, stat: os.stat_result) -> str:
    """What identifies one completed file in an upload/ folder: its client, name and inode.

    No device number: nodes sharing a data_dir over NFS see the same inode under different device numbers.
    """
    return f"{client}/{name}#{stat.st_ino}"


def is_queued(db: Database, client: str, path: Path) -> bool:
    """Whether the file now at ``path`` (in ``client``'s upload/) already has a waiting job."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    try:
        key = source_key(client, path.name, stat)
        with db.session() as session:
            found = session.scalar(select(ImportJob.id).where(ImportJob.source_key == key))
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{db.env} database unavailable: {exc.orig}") from exc
    return found is not None


def enqueue(layout: Layout, db: Database, arrival: Arrival) -> ImportJob | None:
    """Spool ``arrival`` and record its job. Returns the job, or None when the file was already queued.

    Raises DatabaseUnavailable (the file is left in upload/ untouched) or QueueError.
    """
    path = arrival.path
    try:
        stat = path.lstat()
    except FileNotFoundError as exc:
        raise QueueError(f"{path} vanished before it could be queued") from exc
    if not stat_module.S_ISREG(stat.st_mode):
        # A symbolic link could lead outside the home; only a regular file is an upload.
        raise QueueError(f"{path.name} is not a regular file")
    spool = layout.spool_dir(arrival.env, arrival.client)
    spool.mkdir(parents=True, exist_ok=True)
    spooled = spool / f"{uuid.uuid4().hex}_{path.name}"
    _link_or_copy(path, spooled)
    job = ImportJob(
        client=arrival.client,
        filename=path.name,
        spool_path=layout.relative(spooled),
        source_key=source_key(arrival.client, path.name, stat),
        size=stat.st_size,
        status=JobStatus.QUEUED,
        received_via=arrival.via,
        username=arrival.username,
        remote_ip=arrival.remote_ip,
    )
    try:
        with db.session() as session, session.begin():
            session.add(job)
    except IntegrityError:
        spooled.unlink(missing_ok=True)
        return None
    except (OperationalError, InterfaceError) as exc:
        spooled.unlink(missing_ok=True)
        raise DatabaseUnavailable(f"{db.env} database unavailable; {path.name} stays in upload/: {exc.orig}") from exc
    except BaseException:
        spooled.unlink(missing_ok=True)
        raise
    # Only now that the job exists: a read-only entry in upload/ tells the client (and an operator) that the file
    # waits for import, and a failed enqueue leaves the upload exactly as it was.
    try:
        os.chmod(path, 0o444)
    except OSError as exc:
        event(log, "upload_chmod_failed", logging.WARNING, env=arrival.env, file=path.name, error=exc.strerror)
    event(
        log, "upload_queued", env=arrival.env, client=arrival.client, file=path.name, job=job.id,
        size=stat.st_size, via=arrival.via, user=arrival.username, ip=arrival.remote_ip,
    )  # fmt: skip
    return job


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (18, 1, 95, 38):  # EXDEV, EPERM, EOPNOTSUPP, ENOSYS: no hard links here
            raise QueueError(f"cannot spool {source.name}: {exc.strerror}") from exc
        partial = target.with_name(target.name + ".copying")
        shutil.copy2(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)


def release_upload_entry(layout: Layout, job: ImportJob, env: str) -> None:
    """Remove the upload/ entry of a job the import has taken, if it is still the same file."""
    upload = layout.upload_dir(env, job.client) / job.filename
    try:
        stat = upload.stat()
    except FileNotFoundError:
        return
    if job.source_key == source_key(job.client, job.filename, stat):
        upload.unlink(missing_ok=True)
