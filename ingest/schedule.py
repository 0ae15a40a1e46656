"""``ImportWorker``: the service's thread per environment that runs imports at their times.

``on_arrival`` environments import within a second of a nudge (or of the poll that catches jobs queued by the watcher
or another node); cron environments import every job received before the schedule's last fire time, computed by
``core.cron.CronSchedule`` (correct across daylight-saving changes), so a run missed while the service was stopped
happens at start-up, and a released job does not wait for the next night.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from core.config import Config
from core.cron import CronSchedule, is_on_arrival, last_fire
from core.db import Database
from core.errors import DatabaseUnavailable
from core.log import event
from ingest.jobs import Environment, node_id, requeue_stale
from ingest.worker import run_queue

log = logging.getLogger("lcsync.import")

POLL_SECONDS = 1.0  # the safety net under the nudge: jobs queued by the watcher or another node

# --- the service's import worker -------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class ImportWorker:
    """One thread importing one environment's jobs: within seconds of a nudge for ``on_arrival``, else every job
    queued before the last time the cron ``import_schedule`` fired (so a run missed while stopped catches up)."""

    def __init__(self, config: Config, env: str, database: Database, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.env = env
        self.database = database
        self.poll_seconds = poll_seconds
        self.node = node_id()
        self._config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update_config(self, config: Config) -> None:
        self._config = config
        self._wake.set()

    def nudge(self) -> None:
        """A job was queued: look now (on_arrival environments import it at once)."""
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lcsync-import-{self.env}")
        self._thread.start()

    def stop(self) -> None:
        """Finish the job in hand, then stop. Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _due_before(self, config: Config) -> datetime | bool | None:
        """None: every queued job is due; a time: jobs received by then are due; False: nothing is due."""
        schedule = config.environments[self.env].import_schedule
        if is_on_arrival(schedule):
            return None
        fired = last_fire(CronSchedule.parse(schedule, config.zone), _now())
        return False if fired is None else fired.astimezone(UTC)

    def _next_wake(self, config: Config) -> float:
        schedule = config.environments[self.env].import_schedule
        if is_on_arrival(schedule):
            return self.poll_seconds
        following = CronSchedule.parse(schedule, config.zone).next_after(_now())
        # A cron environment still looks every few seconds: released jobs and jobs left by a crash are due at once.
        return max(0.0, min((following - _now()).total_seconds(), max(self.poll_seconds, 5.0)))

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            config = self._config
            wait = self.poll_seconds
            try:
                if self.env not in config.environments:
                    wait = 5.0
                else:
                    requeue_stale(self.database, self.node)
                    due = self._due_before(config)
                    if due is not False:
                        where = Environment(config, self.env, self.database)
                        run_queue(
                            where, self.node, due_before=due if isinstance(due, datetime) else None, stop=self._stop
                        )
                    wait = self._next_wake(config)
                    backoff = 0.0
            except DatabaseUnavailable as exc:
                backoff = min(30.0, max(1.0, backoff * 2))
                wait = backoff
                event(log, "import_deferred", logging.WARNING, env=self.env, reason=str(exc), retry_in=wait)
            except Exception as exc:  # a bug must not end importing for good
                log.exception("import_worker_error", extra={"fields": {"env": self.env, "error": repr(exc)}})
                wait = 5.0
            self._wake.wait(wait)
