"""The service's clock: report generation, the 00:05 delivery and retention, once per firing across nodes.

Jobs (every time is local wall-clock time in ``timezone``; ``lcsync schedule`` lists them):

    generate:{client}/{report}   per environment the report lists: daily 00:00, weekly:mon 00:00 on Mondays,
                                 monthly:1 00:00 on the 1st, or its cron expression (so the 00:05 delivery carries it)
    deliver                      per environment, at ``delivery_schedule`` (default ``5 0 * * *``)
    retention                    per environment, daily at 03:30
    import                       only listed here: ingest.schedule.ImportWorker runs cron ``import_schedule``s

**The times.** APScheduler 3's ``BackgroundScheduler`` is the clock, but with ``core.cron.CronTrigger``, not
APScheduler's own ``CronTrigger``: across Melbourne's clock changes that one skips the Monday after daylight saving
starts (``0 0 * * *`` goes from Sun 4 Oct 2026 00:00 AEST to Tue 6 Oct 00:00 AEDT; ``5 0 * * *`` likewise), and its
``from_crontab`` reads day-of-week 1 as Tuesday. ``CronSchedule`` gives every calendar day its firing.

**Once across nodes.** A firing is claimed by inserting ``schedule_runs (job, fire_time)`` into the environment's
database (unique): the node whose insert succeeds runs it, the others stand aside. A claim left ``running`` by a
process that is gone (same host, dead pid), by this process (the database failed while recording), or for more than
``STALE_AFTER`` is taken over. ``report_runs`` is itself unique per (client, report, fire time), a second guard.

**The database is the truth, APScheduler only the clock.** At start-up and every ``SWEEP_SECONDS`` the latest firing
of every job that is not recorded is run now, oldest first (generation before the delivery that carries it): a
service that was down at 00:00 and 00:05 generates and delivers as soon as it is back. Only the latest firing is
caught up (a daily report missed three days running is generated once). A failed delivery or retention firing is
retried by the sweep (both are idempotent); a failed generation is not (it would fail again; its reason is in
``schedule_runs.message`` and the log, and ``lcsync report run`` makes the report by hand). A generation that ends
after its delivery firing has already passed (a long report, or another node delivered first) delivers its file at
once rather than leave it for the next night.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from core.config import Config, schedule_cron
from core.cron import CronSchedule, CronTrigger, is_on_arrival, last_fire
from core.db import Database
from core.errors import DatabaseUnavailable
from core.layout import Layout
from core.log import event
from core.runs import ScheduleRun, ScheduleRunStatus
from export.deliver import deliver_staged
from export.generate import generate_report
from export.retention import remove_expired
from ingest.jobs import is_orphaned, node_id

log = logging.getLogger("lcsync.schedule")

RETENTION_CRON = "30 3 * * *"
SWEEP_SECONDS = 300.0
STALE_AFTER = timedelta(hours=6)
GENERATE, DELIVER, RETENTION, IMPORT = "generate", "deliver", "retention", "import"
_RETRIED = (DELIVER, RETENTION)
_ORDER = {IMPORT: 0, GENERATE: 1, DELIVER: 2, RETENTION: 3}


@dataclass(frozen=True)
class Job:
    """One scheduled job of one environment. ``name`` is its schedule_runs name."""

    kind: str
    env: str
    name: str
    expression: str
    client: str | None = None
    report: str | None = None

    @property
    def key(self) -> str:
        return f"{self.env}:{self.name}"


def scheduled_jobs(config: Config, *, imports: bool = False) -> list[Job]:
    """Every scheduled job of ``config`` (with the cron import runs when ``imports``)."""
    jobs: list[Job] = []
    for env, environment in config.environments.items():
        if imports and not is_on_arrival(environment.import_schedule):
            jobs.append(Job(IMPORT, env, "import", environment.import_schedule))
        for client_id, client in config.clients.items():
            for report in client.reports:
                if env in report.environments:
                    expression = schedule_cron(report.schedule)
                    jobs.append(Job(GENERATE, env, f"generate:{client_id}/{report.name}", expression, client_id,
                                    report.name))  # fmt: skip
        jobs.append(Job(DELIVER, env, "deliver", config.delivery_schedule))
        jobs.append(Job(RETENTION, env, "retention", RETENTION_CRON))
    return jobs


def firings(config: Config, start: datetime, end: datetime, *, imports: bool = True) -> list[tuple[datetime, Job]]:
    """Every firing in ``(start, end]``, in time order (the delivery after the generations it carries)."""
    found: list[tuple[datetime, Job]] = []
    for job in scheduled_jobs(config, imports=imports):
        for moment in CronSchedule.parse(job.expression, config.zone).fire_times(start, end):
            found.append((moment, job))
    found.sort(key=lambda item: (item[0].astimezone(UTC), _ORDER[item[1].kind], item[1].env, item[1].name))
    return found


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # SQLite hands back stored UTC without its zone
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _db_down(database: Database, exc: OperationalError | InterfaceError) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"{database.env} database unavailable: {exc.orig}")


def _claimer_gone(claimer: str, node: str) -> bool:
    """Whether the claimer is certainly gone (a dead process of this host): the import worker's test."""
    try:
        return is_orphaned(claimer, node)
    except ValueError:  # a node name not of the form host:pid:token
        return False


def claim_firing(
    database: Database, job: str, fire_time: datetime, node: str, *, in_hand: Callable[[int], bool] = lambda _: False,
    now: datetime | None = None, retry_failed: bool = False,
) -> int | None:  # fmt: skip
    """Claim one firing for ``node``: the schedule_runs id, or None when it is (being) handled elsewhere."""
    return _claim(database, job, fire_time, node, in_hand=in_hand, now=now, retry_failed=retry_failed)[0]


def _claim(
    database: Database, job: str, fire_time: datetime, node: str, *, in_hand: Callable[[int], bool],
    now: datetime | None, retry_failed: bool,
) -> tuple[int | None, str | None]:  # fmt: skip
    """(the id claimed, None) or (None, the status of the claim found: done, failed, running)."""
    fire = fire_time.astimezone(UTC).replace(microsecond=0)
    clock = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        with database.session() as session:
            row = session.execute(
                select(ScheduleRun.id, ScheduleRun.status, ScheduleRun.node, ScheduleRun.started_at).where(
                    ScheduleRun.job == job, ScheduleRun.fire_time == fire
                )
            ).one_or_none()
        if row is None:
            try:
                with database.session() as session:
                    claim = ScheduleRun(job=job, fire_time=fire, node=node, started_at=clock,
                                        status=ScheduleRunStatus.RUNNING)  # fmt: skip
                    session.add(claim)
                    session.commit()
                    return claim.id, None
            except IntegrityError:
                return None, ScheduleRunStatus.RUNNING  # another node inserted it first
        run_id, status, claimer, started = row
        if status == ScheduleRunStatus.DONE or (status == ScheduleRunStatus.FAILED and not retry_failed):
            return None, str(status)
        if status == ScheduleRunStatus.RUNNING:
            mine_left = claimer == node and not in_hand(run_id)
            if not (mine_left or _claimer_gone(claimer, node) or _utc(started) < clock - STALE_AFTER):
                return None, str(status)
        with database.engine.begin() as connection:
            changed = connection.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id, ScheduleRun.status == status, ScheduleRun.node == claimer)
                .values(status=ScheduleRunStatus.RUNNING, node=node, started_at=clock, finished_at=None)
            ).rowcount
        if changed == 1:
            event(log, "schedule_claim_taken_over", logging.WARNING, env=database.env, job=job, fire_time=fire,
                  previous=claimer, previous_status=status)  # fmt: skip
            return int(run_id), None
        return None, ScheduleRunStatus.RUNNING
    except (OperationalError, InterfaceError) as exc:
        raise _db_down(database, exc) from exc


def finish_firing(database: Database, run_id: int, node: str, status: str, message: str | None) -> None:
    with database.engine.begin() as connection:
        connection.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run_id, ScheduleRun.node == node)
            .values(status=status, finished_at=datetime.now(UTC), message=message)
        )


def release_firing(database: Database, run_id: int, node: str) -> None:
    """Forget a claim (the job could not run for a reason that will pass): the next sweep claims it again."""
    with database.engine.begin() as connection:
        connection.execute(delete(ScheduleRun).where(ScheduleRun.id == run_id, ScheduleRun.node == node))


class JobSchedule:
    """The scheduler of ``lcsync serve``: APScheduler fires the cron jobs, a sweep catches up what was missed.

    ``run_due(now)`` and ``fire(job, fire_time)`` are the whole behaviour and take the time as an argument, so that
    tests drive weeks of firings without waiting; ``start`` hands them to a ``BackgroundScheduler`` with one worker
    thread (jobs of one node run one at a time, in order).
    """

    def __init__(
        self,
        config: Config,
        databases: Mapping[str, Database],
        *,
        node: str | None = None,
        clock: Callable[[], datetime] | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.config = config
        self.databases = databases  # the service's mapping: environments added on reload appear here
        self.node = node or node_id()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sweep_seconds = sweep_seconds
        self._lock = threading.RLock()
        self._in_hand: set[tuple[str, int]] = set()
        # The latest firing of each (env, job) known to be finished for good: skipped without asking the database.
        self._settled: dict[tuple[str, str], datetime] = {}
        self._scheduler: BackgroundScheduler | None = None

    # --- the clock -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start firing; the first sweep (the catch-up) runs at once, on the scheduler's thread."""
        scheduler = BackgroundScheduler(
            timezone=self.config.zone,
            executors={"default": {"type": "threadpool", "max_workers": 1}},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(self._sweep, "interval", seconds=self.sweep_seconds, id="sweep",
                          next_run_time=datetime.now(UTC))  # fmt: skip
        self._scheduler = scheduler
        self._add_cron_jobs(self.config)
        scheduler.start()
        event(log, "schedule_started", node=self.node, jobs=len(scheduled_jobs(self.config)))

    def stop(self) -> None:
        """Stop firing; a job in hand finishes first. Idempotent."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)

    def update_config(self, config: Config) -> None:
        """Take a reloaded configuration: jobs added, removed or re-timed from now on."""
        with self._lock:
            self.config = config
            if self._scheduler is not None:
                for job in self._scheduler.get_jobs():
                    if job.id != "sweep":
                        job.remove()
                self._add_cron_jobs(config)

    def _add_cron_jobs(self, config: Config) -> None:
        assert self._scheduler is not None
        for job in scheduled_jobs(config):
            try:
                trigger = CronTrigger(job.expression, config.zone)
            except ValueError as exc:
                event(log, "schedule_invalid", logging.ERROR, env=job.env, job=job.name, reason=str(exc))
                continue
            self._scheduler.add_job(self._on_cron, trigger, args=[job], id=job.key, replace_existing=True)

    def _on_cron(self, job: Job) -> None:
        now = self.clock()
        fire = last_fire(CronSchedule.parse(job.expression, self.config.zone), now)
        if fire is not None:
            self._guarded(job, fire, now)

    def _sweep(self) -> None:
        try:
            self.run_due()
        except Exception as exc:  # the clock must keep ticking whatever one sweep met
            log.exception("schedule_sweep_error", extra={"fields": {"error": repr(exc)}})

    # --- the behaviour ---------------------------------------------------------------------------------------

    def run_due(self, now: datetime | None = None) -> list[tuple[Job, datetime, str]]:
        """Run the latest firing of every job that is not recorded as done, oldest first. Returns what ran here:
        (job, fire time, "done" or "failed")."""
        now = now or self.clock()
        config = self.config
        due: list[tuple[datetime, Job]] = []
        for job in scheduled_jobs(config):
            fire = last_fire(CronSchedule.parse(job.expression, config.zone), now)
            if fire is not None:
                due.append((fire, job))
        due.sort(key=lambda item: (item[0].astimezone(UTC), _ORDER[item[1].kind], item[1].env, item[1].name))
        ran: list[tuple[Job, datetime, str]] = []
        for fire, job in due:
            outcome = self._guarded(job, fire, now)
            if outcome is not None:
                ran.append((job, fire, outcome))
        return ran

    def _guarded(self, job: Job, fire: datetime, now: datetime) -> str | None:
        try:
            return self.fire(job, fire, now=now)
        except DatabaseUnavailable as exc:
            event(log, "schedule_deferred", logging.WARNING, env=job.env, job=job.name, reason=str(exc))
            return None

    def fire(self, job: Job, fire_time: datetime, *, now: datetime | None = None) -> str | None:
        """Claim and run one firing. "done" or "failed" when it ran here, None when it was handled elsewhere (or
        already). Raises DatabaseUnavailable when the claim cannot be made."""
        with self._lock:
            config = self.config
            database = self.databases.get(job.env)
            if database is None:
                return None
            now = now or self.clock()
            key = (job.env, job.name)
            if self._settled.get(key) == fire_time:
                return None
            retried = job.kind in _RETRIED
            run_id, found = _claim(
                database, job.name, fire_time, self.node, now=now, retry_failed=retried,
                in_hand=lambda found: (job.env, found) in self._in_hand,
            )  # fmt: skip
            if run_id is None:
                if found == ScheduleRunStatus.DONE or (found == ScheduleRunStatus.FAILED and not retried):
                    self._settled[key] = fire_time
                return None
            self._in_hand.add((job.env, run_id))
            try:
                outcome = self._run(config, database, job, fire_time, run_id, now)
            finally:
                self._in_hand.discard((job.env, run_id))
            if outcome == ScheduleRunStatus.DONE or (outcome == ScheduleRunStatus.FAILED and not retried):
                self._settled[key] = fire_time
            return outcome

    def _run(
        self, config: Config, database: Database, job: Job, fire: datetime, run_id: int, now: datetime
    ) -> str | None:
        layout = Layout(config.data_dir)
        event(log, "schedule_fired", env=job.env, job=job.name, fire_time=fire.astimezone(UTC), node=self.node)
        try:
            message, ok = self._work(config, layout, database, job, fire, now)
        except DatabaseUnavailable as exc:
            event(log, "schedule_deferred", logging.WARNING, env=job.env, job=job.name, reason=str(exc))
            # Retried by the next sweep; if even this fails, the claim stays "running" under this node, which the
            # next sweep takes over.
            with contextlib.suppress(OperationalError, InterfaceError):
                release_firing(database, run_id, self.node)
            return None
        except Exception as exc:
            log.exception("schedule_job_failed", extra={"fields": {"env": job.env, "job": job.name}})
            message, ok = f"{type(exc).__name__}: {exc}", False
        status = ScheduleRunStatus.DONE if ok else ScheduleRunStatus.FAILED
        try:
            finish_firing(database, run_id, self.node, status, message)
        except (OperationalError, InterfaceError) as exc:
            event(log, "schedule_unrecorded", logging.WARNING, env=job.env, job=job.name, reason=str(exc.orig))
        event(log, "schedule_finished", env=job.env, job=job.name, status=str(status), message=message)
        return str(status)

    def _work(
        self, config: Config, layout: Layout, database: Database, job: Job, fire: datetime, now: datetime
    ) -> tuple[str, bool]:
        """Do one job. Returns (what happened, whether it succeeded)."""
        if job.kind == GENERATE:
            assert job.client is not None and job.report is not None
            generated = generate_report(config, job.env, database, job.client, job.report, now=now,
                                        scheduled_for=fire)  # fmt: skip
            if generated.run_id is None:
                return "generated already", True
            text = f"{generated.path.name if generated.path else ''}: {generated.rows} rows"
            if self._delivery_passed(database, fire, now):
                result = deliver_staged(layout, job.env, database, run_ids=[generated.run_id], now=now)
                text += "; delivered at once (its delivery time had passed)" if result.delivered else ""
            return text, True
        if job.kind == DELIVER:
            result = deliver_staged(layout, job.env, database, now=now)
            text = f"{len(result.delivered)} delivered, {len(result.failed)} failed"
            return text, not result.failed
        if job.kind == RETENTION:
            removed = remove_expired(layout, job.env, database, retention_days=config.retention_days,
                                     archive_days=config.archive_days, now=now)  # fmt: skip
            return f"{len(removed)} files removed", True
        raise ValueError(f"not a scheduled export job: {job.kind}")

    def _delivery_passed(self, database: Database, fire: datetime, now: datetime) -> bool:
        """Whether a delivery firing after ``fire`` has already been claimed (so it may have missed this report)."""
        with database.session() as session:
            found = session.scalar(
                select(ScheduleRun.id)
                .where(
                    ScheduleRun.job == "deliver",
                    ScheduleRun.fire_time > fire.astimezone(UTC),
                    ScheduleRun.fire_time <= now.astimezone(UTC),
                )
                .limit(1)
            )
        return found is not None


def describe(job: Job) -> str:
    """How ``lcsync schedule`` names a job."""
    if job.kind == IMPORT:
        return f"import run ({job.expression})"
    if job.kind == GENERATE:
        return f"generate {job.client}/{job.report} ({job.expression})"
    if job.kind == DELIVER:
        return f"deliver reports ({job.expression})"
    return f"retention ({job.expression})"
