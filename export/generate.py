"""Generate one report of one client in one environment into the outbox (SPEC 6, "Generation").

    export.queries.report_rows -> export.writers -> {data_dir}/outbox/{env}/{client}/.{uuid}.tmp  (fsynced)
    -> linked to {name}_{YYYYMMDD}_{HHMMSS}.{csv|xlsx}  (a name free in the outbox and in reports/: _2, _3, ...)
    -> report_runs row, status "staged"   (the next delivery moves the file into the client's reports/ folder)

* The time in the name is the local time (``timezone``) when generation started; ``today`` for the report's
  filters is that local date, or for a scheduled run the local date of the fire time.
* A scheduled run names its fire time (``scheduled_for``): report_runs is unique per (client, report,
  scheduled_for), so a firing handled by two nodes yields one staged file; the loser's file is removed.
* The file is complete and on disk before it gets its final name, and the final name is taken with ``os.link``,
  which fails rather than replace an existing file: nothing is ever overwritten and nothing is ever half-written
  under a report's name.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from core.config import Config, ReportConfig, report_file_stem
from core.db import Database
from core.errors import DatabaseUnavailable, UsageError
from core.files import publish
from core.layout import Layout
from core.log import event
from core.runs import ReportRun, ReportRunStatus
from export.writers import Progress, write_report

log = logging.getLogger("lcsync.export")

# report_rows(connection_or_session, client, report, *, today) -> (header, rows); export.queries by default.
RowsSource = Callable[..., tuple[list[str], Iterator[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Generated:
    """A staged report file (``run_id`` None when another node had already generated this scheduled run)."""

    run_id: int | None
    env: str
    client: str
    report: str
    path: Path | None
    rows: int
    scheduled_for: datetime | None


def find_report(config: Config, client: str, name: str) -> ReportConfig:
    """The report ``name`` of ``client``. Raises UsageError naming what exists."""
    found = config.clients.get(client)
    if found is None:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients) or 'none'})")
    for report in found.reports:
        if report.name == name:
            return report
    known = ", ".join(report.name for report in found.reports) or "none"
    raise UsageError(f"client {client!r} has no report {name!r} (its reports: {known})")


def report_file_name(name: str, when: datetime, fmt: str, attempt: int = 1) -> str:
    """``Compliance_Report_20261005_000002.xlsx``; ``..._2.xlsx`` for a second file of the same second."""
    stem = report_file_stem(name) or "report"
    suffix = "" if attempt == 1 else f"_{attempt}"
    return f"{stem[:150]}_{when:%Y%m%d_%H%M%S}{suffix}.{fmt}"


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _default_rows() -> RowsSource:
    from export.queries import report_rows

    return report_rows


def generate_report(
    config: Config,
    env: str,
    database: Database,
    client: str,
    report: ReportConfig | str,
    *,
    now: datetime | None = None,
    scheduled_for: datetime | None = None,
    progress: Progress | None = None,
    rows_source: RowsSource | None = None,
) -> Generated:
    """Generate one report into the outbox and record it as staged.

    ``scheduled_for`` is the fire time of a scheduled run (None for a manual one). Raises UsageError for an unknown
    client, report or environment, DatabaseUnavailable when the database cannot be reached; anything the query or
    the writer raises leaves no file behind.
    """
    if isinstance(report, str):
        report = find_report(config, client, report)
    if env not in config.environments:
        raise UsageError(f"unknown environment {env!r} (known: {', '.join(config.environments)})")
    if env not in report.environments:
        raise UsageError(
            f"report {client}/{report.name} is not generated in {env!r} (its environments: "
            f"{', '.join(report.environments)})"
        )
    started = (now or datetime.now(UTC)).astimezone(config.zone)
    fire = _utc(scheduled_for) if scheduled_for is not None else None
    today: date = (fire.astimezone(config.zone) if fire is not None else started).date()
    source = rows_source or _default_rows()
    layout = Layout(config.data_dir)
    outbox = layout.outbox_dir(env, client)

    if fire is not None and _already_generated(database, client, report.name, fire):
        return Generated(None, env, client, report.name, None, 0, fire)

    outbox.mkdir(parents=True, exist_ok=True)
    temp = outbox / f".{uuid.uuid4().hex}.{report.format}.tmp"
    try:
        rows = _write(database, source, client, report, today, temp, progress)
        final = _publish(temp, outbox, layout.reports_dir(env, client), report.name, started, report.format)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{env} database unavailable: {exc.orig}") from exc
    finally:
        temp.unlink(missing_ok=True)

    run = ReportRun(
        client=client,
        report=report.name,
        file_name=final.name,
        outbox_path=layout.relative(final),
        rows=rows,
        scheduled_for=fire,
        generated_at=_utc(started),
        status=ReportRunStatus.STAGED,
    )
    try:
        with database.session() as session:
            session.add(run)
            session.commit()
            run_id = run.id
    except IntegrityError:
        # Another node generated this scheduled run first: its file is the one that gets delivered.
        final.unlink(missing_ok=True)
        event(log, "report_already_generated", env=env, client=client, report=report.name, scheduled_for=fire)
        return Generated(None, env, client, report.name, None, 0, fire)
    except (OperationalError, InterfaceError) as exc:
        final.unlink(missing_ok=True)
        raise DatabaseUnavailable(f"{env} database unavailable: {exc.orig}") from exc
    event(
        log, "report_generated", env=env, client=client, report=report.name, file=final.name, rows=rows,
        scheduled_for=fire, run=run_id,
    )  # fmt: skip
    return Generated(run_id, env, client, report.name, final, rows, fire)


def _already_generated(database: Database, client: str, report: str, fire: datetime) -> bool:
    try:
        with database.session() as session:
            found = session.scalar(
                select(ReportRun.id).where(
                    ReportRun.client == client, ReportRun.report == report, ReportRun.scheduled_for == fire
                )
            )
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}") from exc
    return found is not None


def _write(
    database: Database, source: RowsSource, client: str, report: ReportConfig, today: date, temp: Path,
    progress: Progress | None,
) -> int:  # fmt: skip
    """Run the query and stream its rows into ``temp``, made durable. Returns the number of data rows."""
    with database.engine.connect() as connection:
        header, rows = source(connection, client, report, today=today)
        if report.format == "xlsx":
            count = write_report("xlsx", temp, header, rows, progress=progress)
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        else:
            with open(temp, "wb") as handle:
                count = write_report("csv", handle, header, rows, bom=report.bom, progress=progress)
                handle.flush()
                os.fsync(handle.fileno())
    return count


def _publish(temp: Path, outbox: Path, reports: Path, name: str, when: datetime, fmt: str) -> Path:
    """Give ``temp`` a name free in the outbox (taken atomically) and not already used in the client's reports/."""
    candidates = (outbox / report_file_name(name, when, fmt, attempt) for attempt in itertools.count(1))
    return publish(temp, candidates, taken=lambda final: (reports / final.name).exists())
