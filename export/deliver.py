"""Deliver staged reports into their clients' ``reports/`` folders (SPEC 6, "Delivery").

Every report_runs row with status ``staged`` moves from the outbox into ``{data_dir}/{env}/{client}/reports/``:

1. **Claim a name.** A name free in ``reports/`` (the file's own, else ``_2``, ``_3``, ...) is written into the row's
   ``delivered_path`` by a conditional update (``WHERE delivered_path IS NULL``), before anything moves. Two
   processes delivering at once agree on one name: the loser of the update reads the winner's.
2. **Move.** ``os.link(outbox file, reports/name)`` then unlink the outbox entry: the client sees the complete file
   appear at once (a link is atomic, like a rename, and the file was fsynced when generated), and a link fails
   rather than replace an existing file, so nothing in ``reports/`` is ever overwritten. Where the file system has
   no hard links, a check and ``os.replace`` stand in.
3. **Record.** ``status='delivered', delivered_at`` by a conditional update (``WHERE status='staged'``): exactly one
   process counts each delivery (``lcsync_deliveries_total``, a ``report_delivered`` log line).

A crash anywhere leaves a state the next run completes (every step is idempotent):

* name claimed, file still in the outbox: the move is done now (if another file took the name meanwhile, a new name
  is claimed);
* file in both places (crash between link and unlink): the same inode, so the outbox entry is dropped;
* file gone from the outbox with a name claimed: it was moved (and perhaps already downloaded and deleted by the
  client), so the run is recorded as delivered ("repaired").

A staged run whose outbox file is missing and was never moved is marked ``failed`` with the reason.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from core.db import Database
from core.errors import DatabaseUnavailable
from core.files import fsync_dir
from core.layout import Layout
from core.log import event
from core.metrics import METRICS
from core.runs import ReportRun, ReportRunStatus

log = logging.getLogger("lcsync.export")


@dataclass(frozen=True)
class Delivered:
    run_id: int
    client: str
    report: str
    source: str  # relative to data_dir
    target: Path
    repaired: bool = False  # moved by an earlier run that stopped before recording it


@dataclass(frozen=True)
class NotDelivered:
    run_id: int
    client: str
    report: str
    file_name: str
    reason: str


@dataclass
class DeliveryResult:
    env: str
    delivered: list[Delivered] = field(default_factory=list)
    failed: list[NotDelivered] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def deliver_staged(
    layout: Layout,
    env: str,
    database: Database,
    *,
    run_ids: Iterable[int] | None = None,
    now: datetime | None = None,
) -> DeliveryResult:
    """Deliver every staged report of ``env`` (or only ``run_ids``). Idempotent; safe to run from several processes
    at once. Raises DatabaseUnavailable when the database cannot be reached."""
    result = DeliveryResult(env)
    try:
        with database.session() as session:
            query = select(ReportRun).where(ReportRun.status == ReportRunStatus.STAGED)
            if run_ids is not None:
                query = query.where(ReportRun.id.in_(list(run_ids)))
            runs = list(session.scalars(query.order_by(ReportRun.generated_at, ReportRun.id)))
        for run in runs:
            try:
                _deliver_one(layout, env, database, run, now, result)
            except OSError as exc:  # this file cannot move now (permissions, a full disk): the next run retries
                reason = f"cannot move {run.outbox_path}: {exc.strerror or exc}"
                result.failed.append(NotDelivered(run.id, run.client, run.report, run.file_name, reason))
                event(log, "report_delivery_failed", logging.ERROR, env=env, client=run.client, run=run.id,
                      reason=reason)  # fmt: skip
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{env} database unavailable: {exc.orig}") from exc
    return result


def _deliver_one(
    layout: Layout, env: str, database: Database, run: ReportRun, now: datetime | None, result: DeliveryResult
) -> None:
    source = layout.absolute(run.outbox_path)
    claimed_before = run.delivered_path is not None  # an earlier run got this far, then stopped
    target_rel = run.delivered_path
    if target_rel is None:
        if not _exists(source):
            _fail(database, env, run, "the generated file is missing from the outbox", result)
            return
        reports = layout.reports_dir(env, run.client)
        reports.mkdir(parents=True, exist_ok=True)
        target_rel = _claim_name(layout, database, run, reports, None)
        if target_rel is None:
            return  # delivered by another process meanwhile
    moved_now = False
    while _exists(source):  # once the outbox entry is gone, the file is at target_rel (or was, and was downloaded)
        target = layout.absolute(target_rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        outcome = _move(source, target)
        moved_now = outcome == "moved"
        if outcome != "taken":
            break
        claimed = _claim_name(layout, database, run, target.parent, target_rel)  # another file has the name
        if claimed is None:
            return
        target_rel = claimed
    _record(database, env, run, target_rel, now, result, repaired=claimed_before and not moved_now)


def _exists(path: Path) -> bool:
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    return True


def _move(source: Path, target: Path) -> str:
    """Move ``source`` to ``target`` without ever replacing a file: "moved", "taken" (another file has the name) or
    "same" (``target`` already is this file; the outbox entry was dropped)."""
    try:
        os.link(source, target)
    except FileExistsError:
        try:
            same = os.path.samefile(source, target)
        except FileNotFoundError:
            return "same" if not _exists(source) else "taken"
        if not same:
            return "taken"
        source.unlink(missing_ok=True)
        fsync_dir(source.parent)
        return "same"
    except FileNotFoundError:
        return "same"  # the source went between the check and the link: someone else moved it
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if _exists(target):
            return "taken"
        os.replace(source, target)  # no hard links here: the same atomic appearance, checked just before
        fsync_dir(target.parent)
        return "moved"
    fsync_dir(target.parent)
    source.unlink(missing_ok=True)
    fsync_dir(source.parent)
    return "moved"


def _free_name(reports: Path, file_name: str, skip: str | None) -> Path:
    stem, dot, ext = file_name.rpartition(".")
    if not dot:
        stem, ext = file_name, ""
    attempt = 1
    while True:
        name = file_name if attempt == 1 else f"{stem}_{attempt}{dot}{ext}"
        candidate = reports / name
        attempt += 1
        if (skip is None or str(candidate) != skip) and not _exists(candidate):
            return candidate


def _claim_name(layout: Layout, database: Database, run: ReportRun, reports: Path, previous: str | None) -> str | None:
    """Write a free name into the run's delivered_path (replacing ``previous``); the name the row holds afterwards,
    or None when the run is no longer staged."""
    skip = str(layout.absolute(previous)) if previous is not None else None
    candidate = layout.relative(_free_name(reports, run.file_name, skip))
    with database.engine.begin() as connection:
        connection.execute(
            update(ReportRun)
            .where(
                ReportRun.id == run.id,
                ReportRun.status == ReportRunStatus.STAGED,
                ReportRun.delivered_path.is_(None) if previous is None else ReportRun.delivered_path == previous,
            )
            .values(delivered_path=candidate)
        )
        row = connection.execute(
            select(ReportRun.status, ReportRun.delivered_path).where(ReportRun.id == run.id)
        ).one_or_none()
    if row is None or row.status != ReportRunStatus.STAGED:
        return None
    return str(row.delivered_path)


def _record(
    database: Database, env: str, run: ReportRun, target_rel: str, now: datetime | None, result: DeliveryResult,
    *, repaired: bool,
) -> None:  # fmt: skip
    when = (now or _now()).astimezone(UTC)
    with database.engine.begin() as connection:
        changed = connection.execute(
            update(ReportRun)
            .where(ReportRun.id == run.id, ReportRun.status == ReportRunStatus.STAGED)
            .values(status=ReportRunStatus.DELIVERED, delivered_at=when, delivered_path=target_rel, message=None)
        ).rowcount
    if changed != 1:
        return  # another process recorded it
    METRICS.inc("lcsync_deliveries_total")
    delivered = Delivered(run.id, run.client, run.report, run.outbox_path, Path(target_rel), repaired)
    result.delivered.append(delivered)
    event(
        log, "report_delivered", env=env, client=run.client, report=run.report, file=Path(target_rel).name,
        path=target_rel, rows=run.rows, run=run.id, repaired=repaired,
    )  # fmt: skip


def _fail(database: Database, env: str, run: ReportRun, reason: str, result: DeliveryResult) -> None:
    with database.engine.begin() as connection:
        changed = connection.execute(
            update(ReportRun)
            # Not when another process has claimed a name meanwhile: it moved the file and records the delivery.
            .where(
                ReportRun.id == run.id, ReportRun.status == ReportRunStatus.STAGED, ReportRun.delivered_path.is_(None)
            )
            .values(status=ReportRunStatus.FAILED, message=reason)
        ).rowcount
    if changed == 1:
        result.failed.append(NotDelivered(run.id, run.client, run.report, run.file_name, reason))
        event(log, "report_delivery_failed", logging.ERROR, env=env, client=run.client, report=run.report,
              run=run.id, reason=reason)  # fmt: skip
