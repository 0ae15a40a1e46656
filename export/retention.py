"""Remove what has been kept long enough (SPEC 2 ``retention_days``/``archive_days``, SPEC 6 "Retention").

For one environment:

* ``{data_dir}/{env}/*/reports/`` and ``results/``: files last modified more than ``retention_days`` ago (a report's
  time is when it was generated; a delivered report keeps it, the move does not touch it);
* ``{data_dir}/archive/{env}/``: processed uploads more than ``archive_days`` old, except the file of an import job
  that still needs it (queued, running or held: a held job released after months reads its archived file);
* ``{data_dir}/outbox/{env}/``: leftovers of a generation that stopped half-way (temporary files more than a day
  old) and report files that no staged run refers to, after ``retention_days``.

Only regular files are removed (never a folder, never through a symbolic link), and every removal is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from core.db import Database
from core.errors import DatabaseUnavailable
from core.layout import Layout
from core.log import event
from core.models import ImportJob, JobStatus
from core.runs import ReportRun, ReportRunStatus

log = logging.getLogger("lcsync.export")

DAY = 86400.0
TEMP_MAX_AGE = DAY  # a generation never takes a day: an older temporary file is a leftover
_NEEDED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.HELD)


@dataclass(frozen=True)
class Removed:
    path: Path
    kind: str  # report, result, archive, outbox
    age_days: float


def remove_expired(
    layout: Layout,
    env: str,
    database: Database | None,
    *,
    retention_days: int,
    archive_days: int,
    now: datetime | None = None,
) -> list[Removed]:
    """Remove expired files of ``env`` (see the module's docstring). Without a database, the archive and the outbox
    are left alone (what is still needed there is only known from it)."""
    clock = (now or datetime.now(UTC)).timestamp()
    removed: list[Removed] = []
    env_root = layout.data_dir / env
    if env_root.is_dir():
        for home in sorted(env_root.iterdir()):
            if home.is_symlink() or not home.is_dir():
                continue
            for folder, kind in (("reports", "report"), ("results", "result")):
                removed += _remove_older(home / folder, clock - retention_days * DAY, clock, kind, env)
    if database is None:
        return removed
    keep_archive, staged = _still_needed(layout, database)
    archive_root = layout.data_dir / "archive" / env
    removed += _remove_older(archive_root, clock - archive_days * DAY, clock, "archive", env, keep=keep_archive)
    outbox_root = layout.data_dir / "outbox" / env
    for path, stat in _files(outbox_root):
        temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        limit = clock - (TEMP_MAX_AGE if temporary else retention_days * DAY)
        if stat.st_mtime < limit and (temporary or path not in staged):
            removed += _remove(path, stat.st_mtime, clock, "outbox", env)
    return removed


def _still_needed(layout: Layout, database: Database) -> tuple[set[Path], set[Path]]:
    """Archived files of import jobs not finished yet, and outbox files of staged report runs."""
    try:
        with database.session() as session:
            jobs = session.execute(
                select(ImportJob.client, ImportJob.spool_path, ImportJob.archive_path).where(
                    ImportJob.status.in_([str(status) for status in _NEEDED])
                )
            ).all()
            staged = session.scalars(
                select(ReportRun.outbox_path).where(ReportRun.status == ReportRunStatus.STAGED)
            ).all()
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}") from exc
    keep: set[Path] = set()
    for client, spool_path, archive_path in jobs:
        if archive_path:
            keep.add(layout.absolute(archive_path))
        keep.add(layout.archive_dir(database.env, client) / Path(spool_path).name)
    return keep, {layout.absolute(path) for path in staged}


def _files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file under ``root`` (symbolic links are not followed, nor removed)."""
    if not root.is_dir():
        return
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            yield path, stat


def _remove_older(
    root: Path, limit: float, clock: float, kind: str, env: str, keep: set[Path] | None = None
) -> list[Removed]:
    removed: list[Removed] = []
    for path, stat in _files(root):
        if stat.st_mtime < limit and (keep is None or path not in keep):
            removed += _remove(path, stat.st_mtime, clock, kind, env)
    return removed


def _remove(path: Path, mtime: float, clock: float, kind: str, env: str) -> list[Removed]:
    try:
        path.unlink()
    except FileNotFoundError:
        return []  # the client deleted it first
    except OSError as exc:
        event(log, "retention_failed", logging.WARNING, env=env, path=str(path), reason=str(exc))
        return []
    age = round((clock - mtime) / DAY, 1)
    event(log, "retention_removed", env=env, kind=kind, path=str(path), age_days=age)
    return [Removed(path, kind, age)]
