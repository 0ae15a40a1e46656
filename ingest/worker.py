"""The import worker: claims queued jobs and runs each through the pipeline (SPEC 5; docs/design/import.md).

    claim (conditional update) -> sha256 -> duplicate? -> read -> validate -> reject? hold? -> apply (one transaction)
    -> result file -> archive -> release the upload/ entry -> final status (source_key cleared)

* **Claiming.** ``UPDATE import_jobs SET status='running' ... WHERE id=:id AND status='queued' AND <no running job of
  that client>``; the job is ours only if one row changed, so threads, processes and nodes sharing one database never
  take one job twice. Oldest first, one running job per client (on PostgreSQL an advisory lock per client makes the
  check and the update one step).
* **Crashes.** A running job's heartbeat is refreshed every ``HEARTBEAT_SECONDS``. A job whose heartbeat is older
  than ``STALE_SECONDS``, or whose claimer was a process of this host that is gone, is put back in the queue; the
  applier's single transaction means a killed import left the store as it was, so the retry completes it once. A job
  that stopped without finishing ``MAX_ATTEMPTS`` times is failed instead of being tried forever.
* **Errors are translated here** into a job's status and message (STYLE): an unreadable file is ``rejected``, a hold
  is ``held``, the database going away puts the job back in the queue, anything unexpected is ``failed`` (not retried:
  a bug would fail the same way; ``lcsync import release`` retries it) and said so in the result file.
* **Holds.** A held job is released by ``lcsync import release`` (back to queued with ``released_at`` set, which lets
  it past the hold once). A newer upload of the same client that is applied or held supersedes an older held job: it
  becomes ``rejected`` with the message "superseded by job N", so it no longer waits for an operator and is never
  applied.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError

from core.db import Database
from core.errors import DatabaseUnavailable, InputFileError
from core.log import event
from core.metrics import METRICS
from core.models import ImportJob, JobStatus
from core.queue import release_upload_entry
from ingest.jobs import (
    HEARTBEAT_SECONDS,
    Environment,
    _db_down,
    _now,
    claim,
    heartbeat,
)
from ingest.results import ResultMerger, ResultWriter, Summary
from ingest.rows import Outcome, RowOutcome

log = logging.getLogger("lcsync.import")

FINAL = (JobStatus.APPLIED, JobStatus.HELD, JobStatus.REJECTED, JobStatus.FAILED, JobStatus.DUPLICATE)
Progress = Callable[[int, int], None]  # (rows done, rows in the file)


@dataclass
class JobReport:
    """How one job (or dry run) ended, for the command line and the log."""

    job_id: int | None
    client: str
    filename: str
    status: str
    summary: Summary
    result_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether the work failed (exit status 1): nothing was applied when something should have been."""
        return self.status in (JobStatus.REJECTED, JobStatus.FAILED, JobStatus.HELD)


# --- one job -----------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _local(moment: datetime, zone: Any) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _archive_path(where: Environment, job: ImportJob) -> Path:
    return where.layout.archive_dir(where.env, job.client) / Path(job.spool_path).name


def _last_applied(where: Environment, client: str, exclude: int | None) -> ImportJob | None:
    with where.database.session() as session:
        query = select(ImportJob).where(ImportJob.client == client, ImportJob.status == JobStatus.APPLIED)
        if exclude is not None:
            query = query.where(ImportJob.id != exclude)
        return session.scalar(query.order_by(ImportJob.finished_at.desc(), ImportJob.id.desc()).limit(1))


def run_pipeline(
    where: Environment,
    client: str,
    source: Path,
    writer: ResultWriter,
    *,
    job_id: int | None,
    released: bool,
    sha256: str,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Summary:
    """Read, validate, decide and apply one file, streaming its rows into ``writer``. Returns the summary (the
    caller publishes the result file). Raises only for the unexpected (DatabaseUnavailable, bugs)."""
    from ingest.apply import UserStore
    from ingest.reader import open_user_file
    from ingest.validate import validate

    template = where.import_config(client).template
    previous = _last_applied(where, client, job_id)
    if previous is not None and previous.sha256 == sha256:
        when = _local(previous.finished_at or previous.received_at, where.config.zone)
        return Summary(
            JobStatus.DUPLICATE,
            f"nothing changed: this file is byte-for-byte identical to {previous.filename}, "
            f"applied as job {previous.id} on {when}",
        )
    store = UserStore(where.database)
    try:
        validation = validate(open_user_file(source, template), store.manager_map(client))
    except InputFileError as exc:
        return Summary(JobStatus.REJECTED, f"nothing applied: {exc}")
    merger = ResultMerger(writer, validation.errors)
    errors = len(validation.bad_lines)
    total = validation.total_rows
    release_hint = (
        f"An operator can release it with `lcsync import release {job_id} --env {where.env}`, "
        "or upload a corrected file."
        if job_id is not None
        else "Once imported for real, an operator could release it with `lcsync import release`, or correct the file."
    )
    if template.on_row_error == "reject" and validation.errors:
        merger.close()
        return Summary(
            JobStatus.REJECTED,
            f"nothing applied: {errors} {'row has' if errors == 1 else 'rows have'} "
            "errors and this template rejects a file with any bad row (on_row_error: reject); correct "
            "them and upload the file again",
            rows_total=total,
            errors=errors,
        )
    if job_id is not None and not dry_run and _has_outcomes(where.database, job_id):
        return _replay(where.database, job_id, validation, merger, total, errors)
    hold: str | None = None
    if validation.valid_count == 0:
        hold = "Held, nothing applied: the file has no valid row."
    elif template.mode == "full":
        active, would = store.plan_suspensions(client, validation.keys_in_file)
        if active and would * 100.0 / active > template.max_suspend_percent:
            hold = (
                f"Held, nothing applied: this full file would suspend {would} of {active} active users "
                f"({would * 100.0 / active:.1f}%, more than the {template.max_suspend_percent:g}% allowed)."
            )
    if hold and not released:
        merger.close()
        return Summary(JobStatus.HELD, f"{hold} {release_hint}", rows_total=total, errors=errors)
    step = (lambda done: progress(done, total)) if progress else None
    counts = store.apply(
        client,
        template,
        validation,
        job_id,
        merger.outcome,
        dry_run=dry_run,
        progress=step,
        on_outcomes=merger.outcomes,
    )
    merger.close()
    note = "released by an operator past the safety hold" if hold and released else ""
    if dry_run:
        note = "dry run: nothing was changed" + (f"; {note}" if note else "")
    return Summary(
        JobStatus.APPLIED,
        note,
        rows_total=total,
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
        reactivated=counts.reactivated,
        errors=errors,
        suspended=counts.suspended,
    )


def _has_outcomes(database: Database, job_id: int) -> bool:
    """Whether an earlier attempt of this job committed its apply (the applier records changed rows and created
    users with the job's id, in its one transaction) but stopped before recording the job's status."""
    query = text(
        "SELECT 1 FROM import_outcomes WHERE job_id = :job UNION ALL SELECT 1 FROM users WHERE created_job_id = :job"
    )
    with database.engine.connect() as connection:
        return connection.execute(query, {"job": job_id}).first() is not None


def _replay(database: Database, job_id: int, validation: Any, merger: ResultMerger, total: int, errors: int) -> Summary:
    """The result of an apply that committed in an earlier attempt, from what it recorded: changed rows and
    suspensions as outcomes, new users by their created_job_id; any other valid row was unchanged. Nothing is
    applied twice."""
    counts = dict.fromkeys(("created", "updated", "reactivated", "unchanged", "suspended"), 0)
    query = text("SELECT line, employee_id, outcome, reason FROM import_outcomes WHERE job_id = :job ORDER BY seq")
    with database.engine.connect() as connection:
        recorded = iter(connection.execute(query, {"job": job_id}).all())
        created = set(
            connection.execute(
                text("SELECT employee_id FROM users WHERE created_job_id = :job"), {"job": job_id}
            ).scalars()
        )
    pending = next(recorded, None)
    for row in validation.valid_rows():
        if pending is not None and pending[0] == row.line:
            outcome = RowOutcome(row.line, row.key, Outcome(pending[2]), pending[3] or "")
            pending = next(recorded, None)
        else:
            outcome = RowOutcome(row.line, row.key, Outcome.CREATED if row.key in created else Outcome.UNCHANGED)
        counts[str(outcome.outcome)] += 1
        merger.outcome(outcome)
    while pending is not None:
        merger.outcome(RowOutcome(pending[0], pending[1], Outcome(pending[2]), pending[3] or ""))
        counts[pending[2]] = counts.get(pending[2], 0) + 1
        pending = next(recorded, None)
    merger.close()
    return Summary(
        JobStatus.APPLIED,
        "applied by an earlier attempt that stopped before recording it",
        rows_total=total,
        errors=errors,
        **counts,
    )


def _source(where: Environment, job: ImportJob) -> Path | None:
    """The job's file: in the spool, or already in the archive (a retry after a crash, a released held job)."""
    for candidate in (where.layout.absolute(job.spool_path), _archive_path(where, job)):
        if candidate.exists():
            return candidate
    return None


def _remove_stale_results(where: Environment, client: str, spool: Path) -> None:
    """Result files half-written in the client's spool by an importer that was killed (kill -9, power loss). Only one
    job of a client runs at a time (ingest.jobs.claim), so while this one starts, no other is writing there."""
    for stale in spool.glob("*.results.tmp"):
        stale.unlink(missing_ok=True)
        event(log, "import_stale_result_removed", env=where.env, client=client, file=stale.name)


def process(where: Environment, job: ImportJob, node: str, *, progress: Progress | None = None) -> JobReport:
    """Run a claimed job to its final status; write its result file, archive its file, release its upload entry."""
    started = time.monotonic()
    layout = where.layout
    when = datetime.now(where.config.zone)
    stop_beat = threading.Event()
    beat = threading.Thread(
        target=_beat,
        args=(where.database, job.id, node, stop_beat),
        daemon=True,
        name=f"lcsync-import-heartbeat-{job.id}",
    )
    beat.start()
    result_path: Path | None = None
    results, temp = layout.results_dir(where.env, job.client), layout.spool_dir(where.env, job.client)
    _remove_stale_results(where, job.client, temp)
    try:
        source = _source(where, job)
        summary: Summary | None = None
        if source is None:
            summary = Summary(JobStatus.FAILED, "the spooled file is missing; nothing applied")
        else:
            sha = _sha256(source)
            _set(where.database, job.id, sha256=sha)
            try:
                with ResultWriter(results, job.filename, when, temp_dir=temp) as writer:
                    summary = run_pipeline(
                        where,
                        job.client,
                        source,
                        writer,
                        job_id=job.id,
                        released=job.released_at is not None,
                        sha256=sha,
                        progress=progress,
                    )
                    result_path = writer.finish(summary)
            except (DatabaseUnavailable, OperationalError, InterfaceError):
                raise
            except Exception as exc:
                # The rows written so far describe a transaction that was rolled back: that file is discarded.
                log.exception("import_error", extra={"fields": {"env": where.env, "job": job.id}})
                summary = Summary(
                    JobStatus.FAILED,
                    f"nothing applied: the import failed ({exc!r}); the operators have the details in the log",
                )
        if result_path is None:
            with ResultWriter(results, job.filename, when, temp_dir=temp) as writer:
                result_path = writer.finish(summary)
        archive: Path | None = None
        if source is not None:
            archive = _archive_path(where, job)
            if source != archive:
                archive.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, archive)
        release_upload_entry(layout, job, where.env)
        counts = (
            {}
            if summary.status == JobStatus.DUPLICATE
            else {
                "rows_total": summary.rows_total,
                "rows_created": summary.created,
                "rows_updated": summary.updated,
                "rows_unchanged": summary.unchanged,
                "rows_reactivated": summary.reactivated,
                "rows_suspended": summary.suspended,
                "rows_error": summary.errors,
            }
        )
        _finish(where, job, summary, result_path, archive, counts)
    except (DatabaseUnavailable, OperationalError, InterfaceError) as exc:
        _requeue_after_db_error(where.database, job.id, node)
        if isinstance(exc, DatabaseUnavailable):
            raise
        raise _db_down(where.database, exc) from exc
    finally:
        stop_beat.set()
        beat.join()
    report = JobReport(job.id, job.client, job.filename, summary.status, summary, result_path)
    METRICS.inc("lcsync_imports_total", env=where.env, outcome=str(summary.status))
    event(
        log,
        "import_finished",
        logging.WARNING if report.failed else logging.INFO,
        env=where.env,
        client=job.client,
        job=job.id,
        file=job.filename,
        status=str(summary.status),
        rows=summary.rows_total,
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
        reactivated=summary.reactivated,
        suspended=summary.suspended,
        errors=summary.errors,
        result=result_path.name if result_path else None,
        seconds=round(time.monotonic() - started, 3),
        message=summary.message,
    )
    return report


def _beat(database: Database, job_id: int, node: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            if not heartbeat(database, job_id, node):
                event(log, "import_heartbeat_lost", logging.WARNING, env=database.env, job=job_id)
        except (OperationalError, InterfaceError) as exc:
            event(log, "import_heartbeat_failed", logging.WARNING, env=database.env, job=job_id, reason=str(exc))


def _set(database: Database, job_id: int, **values: Any) -> None:
    with database.engine.begin() as connection:
        connection.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))


def _finish(
    where: Environment,
    job: ImportJob,
    summary: Summary,
    result: Path | None,
    archive: Path | None,
    counts: Mapping[str, int],
) -> None:
    layout = where.layout
    with where.database.engine.begin() as connection:
        connection.execute(
            update(ImportJob)
            .where(ImportJob.id == job.id)
            .values(
                status=summary.status,
                message=summary.text() or None,
                finished_at=_now(),
                source_key=None,
                result_path=layout.relative(result) if result else None,
                archive_path=layout.relative(archive) if archive else None,
                **counts,
            )
        )
        if summary.status in (JobStatus.APPLIED, JobStatus.HELD):
            connection.execute(
                update(ImportJob)
                .where(
                    ImportJob.client == job.client,
                    ImportJob.status == JobStatus.HELD,
                    ImportJob.id != job.id,
                    ImportJob.received_at <= job.received_at,
                )
                .values(
                    status=JobStatus.REJECTED,
                    finished_at=_now(),
                    message=f"superseded by job {job.id} (a newer upload); never applied",
                )
            )


def _requeue_after_db_error(database: Database, job_id: int, node: str) -> None:
    """Back to the queue for a later try (not counted as an attempt). If even this fails, the stale heartbeat
    requeues the job later."""
    try:
        with database.engine.begin() as connection:
            connection.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, ImportJob.claimed_by == node, ImportJob.status == JobStatus.RUNNING)
                .values(
                    status=JobStatus.QUEUED,
                    claimed_by=None,
                    attempts=ImportJob.attempts - 1,
                    message="requeued: the database was unavailable",
                )
            )
    except (OperationalError, InterfaceError):
        pass


def dry_run(where: Environment, client: str, path: Path, *, progress: Progress | None = None) -> JobReport:
    """What importing ``path`` would do, changing nothing: the result file goes to a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="lcsync-dry-run-"))
    when = datetime.now(where.config.zone)
    with ResultWriter(folder, path.name, when, temp_dir=folder) as writer:
        summary = run_pipeline(
            where,
            client,
            path,
            writer,
            job_id=None,
            released=False,
            sha256=_sha256(path),
            dry_run=True,
            progress=progress,
        )
        result = writer.finish(summary)
    return JobReport(None, client, path.name, summary.status, summary, result)


def run_queue(
    where: Environment,
    node: str,
    *,
    due_before: datetime | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> list[JobReport]:
    """Process queued jobs one after another (oldest first) until none can be claimed or ``stop`` is set."""
    reports: list[JobReport] = []
    while stop is None or not stop.is_set():
        job = claim(where.database, node, due_before=due_before)
        if job is None:
            break
        reports.append(process(where, job, node, progress=progress))
    return reports
