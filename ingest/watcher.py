"""The upload watcher: queues files that reach an account's ``upload/`` folder without the FTP server (SPEC 5, "Queue").

An operator's copy, another transfer service or shared storage can put a file into
``{data_dir}/{env}/{client}/upload/`` behind the FTP server's back. The watcher finds such files three ways:

* watchdog events on every upload folder (``via="watcher"``), which only note the path and wake the watcher's thread;
* a full scan at start-up (``via="scan"``), for files that arrived while lcsync was stopped;
* a periodic sweep (every ``sweep_seconds``), which also catches events that were missed and retries files left
  behind while the environment's database was down.

A file is queued (``core.queue.enqueue``) only once it has stopped changing: its size and modification time were seen
unchanged for ``settle_seconds``. A file still being written is never queued. Temporary names (``.part``, ``.tmp``,
``.filepart``), names outside the client's ``file_pattern``, symbolic links and anything but a regular file are left
alone; clients without ``import`` are not watched at all.

The FTP server renames each complete upload into ``upload/`` and queues it itself; the watcher sees that rename too.
That is harmless: the job row's unique ``source_key`` (device:inode) makes ``enqueue`` return None for a file that is
already queued, so the FTP hook, this watcher and the watcher of another node sharing the data_dir make one job.

Only the watcher's own thread queues files (and ``scan_once``, for tests and the service); watchdog callbacks only
note paths. ``stop()`` joins every thread that ``start()`` started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from core.config import Config, is_temporary_name
from core.db import Database
from core.errors import DatabaseUnavailable, QueueError
from core.layout import Layout
from core.log import event
from core.queue import Arrival, enqueue, is_queued

log = logging.getLogger("lcsync.watcher")

# watchdog event types that can mean "a file appeared or changed here"; opened/closed-without-write and deletions
# cannot make a file ready.
_HINT_EVENTS = frozenset({"created", "modified", "moved", "closed"})


@dataclass(frozen=True)
class _Folder:
    """The account an upload/ folder belongs to."""

    env: str
    client: str


@dataclass
class _Candidate:
    """A file that may be queued once it settles."""

    folder: _Folder
    via: str
    signature: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
    stable_since: float  # monotonic time this signature was first seen


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _looks_queued(st: os.stat_result) -> bool:
    """Whether the file is certainly spooled already, without asking the database.

    ``enqueue`` hard-links the upload into the spool and makes the entry read-only only after the job row is
    committed, so a second link on a read-only file means "queued". A second link on a writable file (a crash between
    link and commit, or an operator's own hard link) is left for ``is_queued`` to decide.
    """
    return st.st_nlink > 1 and not st.st_mode & 0o222


class _Hints(FileSystemEventHandler):
    """watchdog callback: notes the paths an event names and returns (hooks only hand work on)."""

    def __init__(self, note: Callable[[Iterable[str]], None]) -> None:
        super().__init__()
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _HINT_EVENTS:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        self._note(paths)


class UploadWatcher:
    """Watches every importing account's upload/ folder and queues each complete file exactly once.

    ``databases`` maps an environment name to its database; environments without one are not watched. ``is_busy``,
    when given, is asked before a settled file is queued; a file it calls busy (for instance still held open by
    another service) waits for another settle period.
    """

    def __init__(
        self,
        config: Config,
        databases: Mapping[str, Database],
        *,
        settle_seconds: float = 2.0,
        sweep_seconds: float = 30.0,
        is_busy: Callable[[Path], bool] | None = None,
    ) -> None:
        if settle_seconds < 0 or sweep_seconds <= 0:
            raise ValueError("settle_seconds must be >= 0 and sweep_seconds > 0")
        self.settle_seconds = settle_seconds
        self.sweep_seconds = sweep_seconds
        self._is_busy = is_busy
        # How often pending files are looked at again while they settle.
        self._tick = max(0.05, min(1.0, settle_seconds / 4))

        # _lock guards everything below it; watchdog callbacks take only _hints_lock, so they never wait for a
        # database call made under _lock.
        self._lock = threading.RLock()
        self._config = config
        self._layout = Layout(config.data_dir)
        # Read, not copied: environments the service adds to this mapping on a reload are seen by update_config.
        self._databases: Mapping[str, Database] = databases
        self._folders: dict[Path, _Folder] = {}
        self._candidates: dict[Path, _Candidate] = {}
        self._warned: dict[Path, int] = {}  # path -> inode already warned about (once per file)
        self._known_queued: dict[Path, tuple[int, int]] = {}  # path -> (dev, ino) seen queued in the database
        self._retry_at: dict[str, float] = {}  # env -> monotonic time to try its database again
        self._sweep_due = True
        self._watches: dict[Path, Any] = {}
        self._observer: Any = None  # watchdog's Observer (an alias chosen per platform)
        self._thread: threading.Thread | None = None

        self._hints_lock = threading.Lock()
        self._hints: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()

        with self._lock:
            self._folders = self._folders_for(config, self._databases)

    # --- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the upload folders, list them (the start-up scan), and start the thread that queues files."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the upload watcher is already running")
            self._stopping.clear()
            self._observer = Observer()
            self._observer.name = "lcsync-upload-observer"
            for folder in self._folders:
                self._watch(folder)
            self._observer.start()
            # The start-up scan lists the folders now, after the watches are in place (so nothing slips between
            # the two); the thread queues what it found.
            self._sweep(time.monotonic())
            self._thread = threading.Thread(target=self._run, name="lcsync-upload-watcher")
            self._thread.start()
            event(log, "watcher_started", folders=len(self._folders), settle_seconds=self.settle_seconds,
                  sweep_seconds=self.sweep_seconds)  # fmt: skip

    def stop(self) -> None:
        """Stop watching; the file in hand is finished first. Joins every thread ``start`` started. Idempotent."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            observer, thread = self._observer, self._thread
            self._observer, self._thread = None, None
            self._watches.clear()
        if observer is not None:
            observer.stop()
            observer.join()
        if thread is not None:
            thread.join()
            event(log, "watcher_stopped")

    def update_config(self, config: Config, databases: Mapping[str, Database] | None = None) -> None:
        """Adopt a reloaded configuration: watch new importing accounts, forget removed ones, then sweep."""
        with self._lock:
            if databases is not None:
                self._databases = databases
            folders = self._folders_for(config, self._databases)
            for path in set(self._folders) - set(folders):
                self._unwatch(path)
            self._config = config
            self._layout = Layout(config.data_dir)
            added = set(folders) - set(self._folders)
            self._folders = folders
            if self._observer is not None:
                for path in added:
                    self._watch(path)
            for path in [path for path, candidate in self._candidates.items() if path.parent not in folders]:
                del self._candidates[path]
            self._sweep_due = True
        self._wake.set()
        event(log, "watcher_reloaded", folders=len(folders))

    # --- one pass, for the service and tests -------------------------------------------------------------------

    def scan_once(self) -> int:
        """List every upload folder and queue every file that is ready. Returns the number of jobs this call made.

        A file not yet seen unchanged for ``settle_seconds`` is looked at again after it could have settled (so this
        call may take up to ``settle_seconds``); a file still changing then is left for the watcher's thread or the
        next call.
        """
        with self._lock:
            now = time.monotonic()
            self._sweep(now)
            queued = self._process(now)
            ready_at = [
                candidate.stable_since + self.settle_seconds
                for candidate in self._candidates.values()
                if self._retry_at.get(candidate.folder.env, 0.0) <= now
            ]
        if ready_at and not self._stopping.is_set():
            self._stopping.wait(max(0.0, max(ready_at) - time.monotonic()))
            with self._lock:
                queued += self._process(time.monotonic())
        return queued

    # --- the watcher's thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_seconds
        while not self._stopping.is_set():
            # Cleared before the hints are taken, so a hint noted after this point wakes the next wait at once.
            self._wake.clear()
            wait = self.sweep_seconds
            try:
                with self._lock:
                    now = time.monotonic()
                    for path in self._take_hints():
                        self._observe(Path(path), "watcher", now)
                    if self._sweep_due or now >= next_sweep:
                        self._sweep(now)
                        next_sweep = now + self.sweep_seconds
                    self._process(now)
                    wait = max(0.0, next_sweep - time.monotonic())
                    if self._candidates:
                        wait = min(wait, self._tick)
            except Exception as exc:  # a bug or an unexpected OS error must not end the watching for good
                log.exception("watcher_error", extra={"fields": {"error": repr(exc)}})
                wait = self._tick
            self._wake.wait(wait)

    def _note_hints(self, paths: Iterable[str]) -> None:
        with self._hints_lock:
            self._hints.update(paths)
        self._wake.set()

    def _take_hints(self) -> set[str]:
        with self._hints_lock:
            hints, self._hints = self._hints, set()
        return hints

    # --- looking at files (callers hold _lock) -----------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Look at every file of every watched folder; forget what has gone."""
        self._sweep_due = False
        seen: set[Path] = set()
        for folder_path in list(self._folders):
            try:
                with os.scandir(folder_path) as entries:
                    names = [entry.name for entry in entries]
            except FileNotFoundError:
                continue
            except OSError as exc:
                event(log, "watcher_folder_unreadable", logging.ERROR, folder=str(folder_path), error=exc.strerror)
                continue
            for name in names:
                path = folder_path / name
                seen.add(path)
                self._observe(path, "scan", now)
        for memo in (self._candidates, self._warned, self._known_queued):
            for path in [path for path in memo if path not in seen]:
                del memo[path]

    def _observe(self, path: Path, via: str, now: float) -> None:
        """Take one look at ``path``: start tracking it, note that it changed, or decide it is not for us."""
        folder = self._folders.get(path.parent)
        if folder is None:
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._candidates.pop(path, None)
            return
        except OSError as exc:
            self._warn_once(path, 0, "upload_unreadable", folder, error=exc.strerror)
            return
        if not stat_module.S_ISREG(st.st_mode):
            kind = "symlink" if stat_module.S_ISLNK(st.st_mode) else "not a regular file"
            self._warn_once(path, st.st_ino, "upload_not_regular_file", folder, kind=kind)
            return
        if is_temporary_name(path.name):
            return  # still being uploaded under a temporary name; the rename will be seen
        client = self._config.clients.get(folder.client)
        if client is None or client.import_ is None:
            return
        if not client.is_import_name(path.name):
            self._warn_once(path, st.st_ino, "upload_name_not_allowed", folder, expected=client.import_.file_pattern)
            return
        if _looks_queued(st) or self._known_queued.get(path) == (st.st_dev, st.st_ino):
            self._candidates.pop(path, None)
            return
        signature = _signature(st)
        candidate = self._candidates.get(path)
        if candidate is None:
            self._candidates[path] = _Candidate(folder, via, signature, now)
        elif candidate.signature != signature:
            candidate.signature, candidate.stable_since = signature, now

    def _warn_once(self, path: Path, inode: int, name: str, folder: _Folder, **fields: Any) -> None:
        self._candidates.pop(path, None)
        if self._warned.get(path) == inode:
            return
        self._warned[path] = inode
        event(log, name, logging.WARNING, env=folder.env, client=folder.client, file=path.name, **fields)

    def _process(self, now: float) -> int:
        """Queue every candidate that has settled. Returns the number of jobs made."""
        queued = 0
        for path in list(self._candidates):
            if self._stopping.is_set():
                break
            candidate = self._candidates.get(path)
            if candidate is None or self._retry_at.get(candidate.folder.env, 0.0) > now:
                continue
            self._observe(path, candidate.via, now)
            candidate = self._candidates.get(path)
            if candidate is None or now - candidate.stable_since < self.settle_seconds:
                continue
            if self._is_busy is not None and self._is_busy(path):
                candidate.stable_since = now
                continue
            if self._queue(path, candidate):
                queued += 1
        return queued

    def _queue(self, path: Path, candidate: _Candidate) -> bool:
        """Queue one settled file. Returns whether a job was made."""
        env, client = candidate.folder.env, candidate.folder.client
        database = self._databases[env]
        dev_ino = candidate.signature[:2]
        try:
            if is_queued(database, client, path):
                job = None
            else:
                job = enqueue(self._layout, database, Arrival(env=env, client=client, path=path, via=candidate.via))
        except DatabaseUnavailable as exc:
            # The file stays in upload/; this environment is tried again at the next sweep.
            self._retry_at[env] = time.monotonic() + self.sweep_seconds
            event(log, "upload_queue_deferred", logging.WARNING, env=env, client=client, file=path.name,
                  retry_in=self.sweep_seconds, reason=str(exc))  # fmt: skip
            return False
        except (QueueError, OSError) as exc:
            # Forgotten until the next sweep finds it again, so a lasting fault is logged once a sweep, not a tick.
            del self._candidates[path]
            event(log, "upload_queue_failed", logging.ERROR, env=env, client=client, file=path.name, error=str(exc))
            return False
        if self._retry_at.pop(env, None) is not None:
            event(log, "upload_queue_resumed", env=env)
        del self._candidates[path]
        self._known_queued[path] = (dev_ino[0], dev_ino[1])
        if job is None:
            log.debug("upload_already_queued", extra={"fields": {"env": env, "client": client, "file": path.name}})
            return False
        return True

    # --- configuration and watches (callers hold _lock) --------------------------------------------------------

    def _folders_for(self, config: Config, databases: Mapping[str, Database]) -> dict[Path, _Folder]:
        layout = Layout(config.data_dir)
        folders: dict[Path, _Folder] = {}
        for client_id, env, _account in config.accounts():
            if config.clients[client_id].import_ is None:
                continue
            if env not in databases:
                event(log, "watcher_no_database", logging.WARNING, env=env, client=client_id)
                continue
            folders[layout.upload_dir(env, client_id)] = _Folder(env, client_id)
        return folders

    def _watch(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._watches[folder] = self._observer.schedule(_Hints(self._note_hints), str(folder), recursive=False)
        except OSError as exc:
            # The periodic sweep still finds this folder's files, only later.
            event(log, "watcher_watch_failed", logging.ERROR, folder=str(folder), error=str(exc))

    def _unwatch(self, folder: Path) -> None:
        watch = self._watches.pop(folder, None)
        if watch is not None and self._observer is not None:
            with contextlib.suppress(KeyError):  # already gone with its emitter
                self._observer.unschedule(watch)
