"""The result file a client finds in ``results/`` after each import job (SPEC 5, "Result files").

``{file stem}_{YYYYMMDD_HHMMSS}.results.csv`` (local time), RFC 4180, UTF-8 with a byte-order mark and CRLF line
endings, so that Excel opens it as it is::

    line,key,outcome,reason
    2,000001,created,
    3,000002,error,Email: 'bob@' is not an email address; Start Date: '31/02/2026' is not a date (dd/mm/yyyy)
    4,000003,unchanged,
    ,000417,suspended,absent from this full file
    summary,,applied,"3 rows read: 1 created, 0 updated, 1 unchanged, 0 reactivated, 1 error; 1 user suspended"

* One row per input row, in line order: the outcome the applier reported, or ``error`` with every problem of that row
  joined into one reason (``Column: reason; Column: reason``), so the file keeps exactly one row per input row.
* Then one row per user suspended because a full file did not list them (line left empty).
* Then the summary row: ``summary`` in the line column, the job's status (applied, held, rejected, duplicate, failed)
  in the outcome column, counts and the reason in the reason column.

Held and rejected jobs list their row errors (nothing was applied, so no other outcome), duplicate and wholly
rejected files only the summary. Text cells that a spreadsheet would run as a formula (beginning with ``=`` ``+``
``-`` ``@``, a tab or a carriage return) are prefixed with ``'``; line numbers stay numbers.

The file is written under a temporary name outside ``results/`` (or a hidden one inside it), fsynced, and linked into
place under a name that does not exist yet (``_2``, ``_3``, ... when it does), so a client never downloads half a file
and no result file is ever overwritten. Rows are streamed: memory stays flat however long the file.
"""

from __future__ import annotations

import csv
import itertools
import os
import uuid
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from core.cells import UNSAFE_FIRST, excel_safe
from core.files import publish
from ingest.rows import Outcome, RowError, RowOutcome

HEADER = ("line", "key", "outcome", "reason")
SUMMARY = "summary"


def result_name(upload_name: str, when: datetime, attempt: int = 1) -> str:
    """``acme_users_20261128_000012.results.csv``; ``..._2.results.csv`` for a second file of the same second."""
    stem = Path(upload_name).stem or upload_name
    suffix = "" if attempt == 1 else f"_{attempt}"
    return f"{stem}_{when:%Y%m%d_%H%M%S}{suffix}.results.csv"


@dataclass(frozen=True)
class Summary:
    """What the summary row says. ``status`` is the job's status; ``message`` says why (may be empty)."""

    status: str
    message: str = ""
    rows_total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    reactivated: int = 0
    errors: int = 0
    suspended: int = 0

    def text(self) -> str:
        parts: list[str] = []
        if self.rows_total or self.status in ("applied", "held"):
            counts = (
                f"{self.rows_total} {_plural(self.rows_total, 'row')} read: {self.created} created, "
                f"{self.updated} updated, {self.unchanged} unchanged, {self.reactivated} reactivated, "
                f"{self.errors} {_plural(self.errors, 'error')}"
            )
            if self.status == "applied":
                counts += f"; {self.suspended} {_plural(self.suspended, 'user')} suspended"
            parts.append(counts)
        if self.message:
            parts.append(self.message)
        return ". ".join(parts)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def join_reasons(errors: Iterable[RowError]) -> str:
    """Every problem of one row in one reason: ``Email: not an email address; Start Date: not a date``."""
    return "; ".join(
        f"{error.column}: {error.reason}"
        if error.column and not error.reason.startswith(error.column)
        else error.reason
        for error in errors
    )


class ResultWriter:
    """Streams one result file. Use as a context manager; ``finish`` publishes it, leaving without it discards it.

    Rows must come in line order; ``ResultMerger`` puts validation errors and the applier's outcomes in that order.
    """

    def __init__(self, target_dir: Path, upload_name: str, when: datetime, temp_dir: Path | None = None) -> None:
        self.target_dir = target_dir
        self.upload_name = upload_name
        self.when = when
        folder = temp_dir if temp_dir is not None else target_dir
        hidden = "" if temp_dir is not None else "."
        self._temp = folder / f"{hidden}{uuid.uuid4().hex}.results.tmp"
        self._handle: IO[str] | None = None
        self._writer: Any = None  # csv.writer
        self.path: Path | None = None

    def __enter__(self) -> ResultWriter:
        self._temp.parent.mkdir(parents=True, exist_ok=True)
        # newline="" leaves line endings to the csv module: CRLF after every record, and a line break inside a
        # quoted cell kept as it is (RFC 4180).
        self._handle = open(self._temp, "w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._handle, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow(HEADER)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.path is None:
            self._temp.unlink(missing_ok=True)

    def row(self, line: int | None, key: str | None, outcome: str, reason: str = "") -> None:
        assert self._writer is not None, "use ResultWriter as a context manager"
        self._writer.writerow(("" if line is None else line, excel_safe(key or ""), outcome, excel_safe(reason)))

    def finish(self, summary: Summary) -> Path:
        """Write the summary row, make the file durable, and move it into place. Returns its final path."""
        assert self._handle is not None and self._writer is not None, "use ResultWriter as a context manager"
        self._writer.writerow((SUMMARY, "", summary.status, excel_safe(summary.text())))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        self.path = _publish(self._temp, self.target_dir, self.upload_name, self.when)
        return self.path


def _publish(temp: Path, target_dir: Path, upload_name: str, when: datetime) -> Path:
    """Give ``temp`` a free name in ``target_dir`` without ever replacing an existing file."""
    target_dir.mkdir(parents=True, exist_ok=True)
    return publish(temp, (target_dir / result_name(upload_name, when, attempt) for attempt in itertools.count(1)))


_LINE = itemgetter(0)


class ResultMerger:
    """Puts validation errors (sorted by line) and the applier's outcomes (file order) into one line order.

    ``outcome`` is the applier's ``on_outcome`` callback. Errors of lines before each outcome are written first;
    the first suspended user (line None) flushes every remaining error; ``close`` flushes what is left.
    """

    def __init__(self, writer: ResultWriter, errors: Iterable[RowError]) -> None:
        self._writer = writer
        assert writer._writer is not None, "open the ResultWriter first"
        self._writerows = writer._writer.writerows
        self._errors: Iterator[RowError] = iter(errors)
        self._pending: RowError | None = next(self._errors, None)
        self.error_rows = 0

    def outcome(self, outcome: RowOutcome) -> None:
        line, key, what, reason = outcome
        pending = self._pending
        if pending is not None and (line is None or pending.line < line):
            self.flush_errors(before=line)
        self._writer.row(line, key, what, reason)

    def outcomes(self, batch: list[RowOutcome]) -> None:
        """``outcome`` for each of ``batch`` (rows of the file, in line order), written a run at a time: the rows up
        to the next error line with one ``writerows``."""
        start, end = 0, len(batch)
        while start < end:
            pending = self._pending
            stop = end if pending is None else bisect_left(batch, pending.line, start, end, key=_LINE)
            if stop > start:  # the hot path of a large file: ResultWriter.row's excel_safe inlined for the keys
                self._writerows(
                    [
                        (line, "'" + key if key[:1] in UNSAFE_FIRST else key, what, reason and excel_safe(reason))
                        for line, key, what, reason in itertools.islice(batch, start, stop)
                    ]
                )
                start = stop
            if start < end:
                self.flush_errors(before=batch[start][0])

    def flush_errors(self, before: int | None = None) -> None:
        """Write every error row of lines before ``before`` (all of them when None)."""
        while self._pending is not None and (before is None or self._pending.line < before):
            line = self._pending.line
            group = [self._pending]
            self._pending = next(self._errors, None)
            while self._pending is not None and self._pending.line == line:
                group.append(self._pending)
                self._pending = next(self._errors, None)
            key = next((error.key for error in group if error.key), None)
            self._writer.row(line, key, str(Outcome.ERROR), join_reasons(group))
            self.error_rows += 1

    def close(self) -> None:
        self.flush_errors()
