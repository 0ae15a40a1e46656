"""Load training records from a CSV file: ``lcsync completions import FILE --client C --env E``.

The file's header is ``employee_id,course_code,course_name,completion_status,completed_at,expires_at,score``
(case and spaces do not matter; the columns may come in any order; course_name, completed_at, expires_at and score
may be left out). It is read exactly as robustly as a User Data file, by the same reader (ingest.reader): UTF-8 with
or without BOM or Windows-1252, delimiter , ; tab or |, any line endings, quoted values; an empty file, a header
without rows, a missing required column or a file that is not CSV is rejected as a whole (``InputFileError``).

Each bad row is reported with its line, column and reason, and skipped; the good rows are applied in one
transaction:

- ``employee_id`` must name a user of the client in the store (import the users first);
- a course is created the first time its code is seen (its name is course_name, else the code); a non-empty
  course_name renames an existing course;
- one completion per user and course: a row for a known pair updates it; an identical row changes nothing;
- ``completion_status``: completed, in_progress, not_started or expired (case-insensitive; "In Progress" and
  "in-progress" read as in_progress); dates ISO 8601 (2026-01-31, 20260131; a time after the date is ignored);
  score a number with at most two decimals below 100000 (a trailing % is ignored).
- A pair of employee_id and course_code that appears twice in one file rejects both rows: which one is right?
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from core.config import COMPLETION_STATUS_VALUES, TemplateConfig
from core.errors import InputFileError
from core.models import User, utcnow
from core.training import Completion, Course
from ingest.reader import UserFile, open_user_file
from ingest.rows import RowError, UserRow

HEADER = ("employee_id", "course_code", "course_name", "completion_status", "completed_at", "expires_at", "score")
REQUIRED = ("employee_id", "course_code", "completion_status")
_VALUE_COLUMNS = HEADER[1:]
# The reader matches a header against a user template: the key is employee_id, and the other columns ride along as
# the template's "custom fields" (plain text), which this module then checks and converts.
_TEMPLATE = TemplateConfig(
    key="employee_id",
    columns={"employee_id": "employee_id"},
    custom_fields=list(_VALUE_COLUMNS),
    required=["employee_id"],
)
_MAX_SCORE = Decimal("100000")
_CODE_LENGTH = 64
_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class CompletionRow:
    """One good row of a completions file."""

    line: int
    employee_id: str
    course_code: str
    course_name: str | None
    completion_status: str
    completed_at: date | None
    expires_at: date | None
    score: Decimal | None


@dataclass
class CompletionsResult:
    """What an import did: counts of rows and of changes, and every row error in file order."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    courses_created: int = 0
    courses_renamed: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def failed(self) -> bool:
        """Nothing could be applied although the file had rows (every row was an error)."""
        return self.rows > 0 and self.applied == 0

    def summary(self) -> str:
        return (
            f"{self.rows} rows: {self.created} created, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.errors)} errors; {self.courses_created} courses created, {self.courses_renamed} renamed"
        )


# --- reading (no database) ---------------------------------------------------------------------------------------


def open_completions_file(path: Path) -> UserFile:
    """Sniff and check a completions file (InputFileError for a file rejected as a whole)."""
    try:
        opened = open_user_file(Path(path), _TEMPLATE)
    except InputFileError as exc:
        if str(exc).startswith("the file has a header but no data rows"):
            raise InputFileError("the file has a header but no data rows: there are no completions in it") from exc
        raise
    missing = [name for name in REQUIRED if name != "employee_id" and name not in opened.columns]
    if missing:
        found = ", ".join(repr(name) for name in opened.header)
        raise InputFileError(
            f"required column{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}. The file's header is: "
            f"{found}. Expected: {','.join(HEADER)}"
        )
    return opened


def read_completions(path: Path) -> Iterator[CompletionRow | RowError]:
    """Every record of a completions file in file order: a CompletionRow, or a RowError per problem."""
    opened = open_completions_file(path)
    headers = {name: opened.header[index] for name, index in opened.columns.items()}
    for record in opened.records():
        if isinstance(record, RowError):
            yield record
        else:
            yield from _convert(record, headers)


def _convert(record: UserRow, headers: dict[str, str]) -> Iterator[CompletionRow | RowError]:
    values = record.custom
    errors: list[RowError] = []

    def problem(name: str, reason: str) -> None:
        errors.append(RowError(record.line, headers.get(name, name), reason, record.key))

    code = values.get("course_code")
    if not code:
        problem("course_code", "a value is required")
    elif len(code) > _CODE_LENGTH:
        problem("course_code", f"longer than {_CODE_LENGTH} characters")
    name = values.get("course_name")
    if name is not None and len(name) > _NAME_LENGTH:
        problem("course_name", f"longer than {_NAME_LENGTH} characters")
    status = _status(values.get("completion_status"))
    if status is None:
        text = values.get("completion_status")
        problem(
            "completion_status",
            f"'{text}' is not a completion status (use {', '.join(COMPLETION_STATUS_VALUES)})"
            if text
            else "a value is required",
        )
        status = ""
    dates: dict[str, date | None] = {}
    for column in ("completed_at", "expires_at"):
        text = values.get(column)
        dates[column] = _date(text) if text else None
        if text and dates[column] is None:
            problem(column, f"'{text}' is not an ISO 8601 date (YYYY-MM-DD)")
    score_text = values.get("score")
    score = _score(score_text) if score_text else None
    if score_text and score is None:
        problem("score", f"'{score_text}' is not a score (a number below 100000 with at most two decimals)")
    if errors:
        yield from errors
        return
    assert code is not None
    yield CompletionRow(record.line, record.key, code, name, status, dates["completed_at"], dates["expires_at"], score)


def _status(text: str | None) -> str | None:
    if not text:
        return None
    status = re.sub(r"[\s-]+", "_", text.strip().casefold())
    return status if status in COMPLETION_STATUS_VALUES else None


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return None


def _score(text: str) -> Decimal | None:
    cleaned = text.removesuffix("%").strip()
    if "," in cleaned and "." not in cleaned:  # 87,5 from a spreadsheet in a decimal-comma locale
        cleaned = cleaned.replace(",", ".")
    try:
        score = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not score.is_finite() or abs(score) >= _MAX_SCORE or score != score.quantize(Decimal("0.01")):
        return None
    return score.quantize(Decimal("0.01"))


# --- applying ----------------------------------------------------------------------------------------------------


def import_completions(session: Session, client: str, path: Path) -> CompletionsResult:
    """Read ``path`` and apply its good rows for ``client`` in one transaction (committed here; rolled back if
    anything fails). InputFileError when the file is rejected as a whole: then nothing changes."""
    result = CompletionsResult()
    rows: dict[tuple[str, str], CompletionRow] = {}
    duplicates: dict[tuple[str, str], list[int]] = {}
    last_bad_line = 0
    for item in read_completions(path):
        if isinstance(item, RowError):
            result.errors.append(item)
            result.rows += item.line != last_bad_line  # one record may have several problems
            last_bad_line = item.line
            continue
        result.rows += 1
        pair = (item.employee_id, item.course_code)
        if pair in duplicates:
            duplicates[pair].append(item.line)
        elif pair in rows:
            duplicates[pair] = [rows.pop(pair).line, item.line]
        else:
            rows[pair] = item
    for (employee_id, code), lines in duplicates.items():
        for line in lines:
            others = ", ".join(str(other) for other in lines if other != line)
            result.errors.append(
                RowError(line, None, f"employee {employee_id!r} and course {code!r} also on line {others}", employee_id)
            )
    with session.begin():
        _apply(session, client, list(rows.values()), result)
    result.errors.sort(key=lambda error: error.line)
    return result


def _apply(session: Session, client: str, rows: list[CompletionRow], result: CompletionsResult) -> None:
    users: dict[str, int] = dict(session.execute(select(User.employee_id, User.id).where(User.client == client)).all())
    courses = {
        code: (course_id, name)
        for code, course_id, name in session.execute(
            select(Course.code, Course.id, Course.name).where(Course.client == client)
        )
    }
    known: list[CompletionRow] = []
    for row in rows:
        if row.employee_id in users:
            known.append(row)
        else:
            result.errors.append(
                RowError(
                    row.line,
                    "employee_id",
                    f"no user with employee_id {row.employee_id!r} in {client}'s user store (import the user first)",
                    row.employee_id,
                )
            )
    _courses(session, client, known, courses, result)
    existing = {
        (user_id, course_id): (completion_id, (status, completed, expires, score))
        for user_id, course_id, completion_id, status, completed, expires, score in session.execute(
            select(
                Completion.user_id,
                Completion.course_id,
                Completion.id,
                Completion.completion_status,
                Completion.completed_at,
                Completion.expires_at,
                Completion.score,
            ).where(Completion.client == client)
        )
    }
    now = utcnow()
    new: list[dict[str, object]] = []
    changed: list[dict[str, object]] = []
    for row in known:
        user_id, course_id = users[row.employee_id], courses[row.course_code][0]
        values = (row.completion_status, row.completed_at, row.expires_at, row.score)
        found = existing.get((user_id, course_id))
        record = {
            "completion_status": row.completion_status,
            "completed_at": row.completed_at,
            "expires_at": row.expires_at,
            "score": row.score,
            "updated_at": now,
        }
        if found is None:
            new.append({"client": client, "user_id": user_id, "course_id": course_id, **record})
        elif _same(found[1], values):
            result.unchanged += 1
        else:
            changed.append({"b_id": found[0], **record})
    if new:
        session.execute(insert(Completion), new)
    if changed:
        table = cast(Table, Completion.__table__)
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                {
                    name: bindparam(name)
                    for name in ("completion_status", "completed_at", "expires_at", "score", "updated_at")
                }
            ),
            changed,
        )
    result.created, result.updated = len(new), len(changed)


def _same(stored: tuple[object, ...], values: tuple[object, ...]) -> bool:
    status, completed, expires, score = stored
    new_score = values[3]
    same_score = (score is None and new_score is None) or (
        score is not None and new_score is not None and Decimal(str(score)) == new_score
    )
    return (status, completed, expires) == values[:3] and same_score


def _courses(
    session: Session,
    client: str,
    rows: list[CompletionRow],
    courses: dict[str, tuple[int, str]],
    result: CompletionsResult,
) -> None:
    """Create the courses first named in ``rows`` and rename those given a new name; ``courses`` is updated."""
    names: dict[str, str | None] = {}
    for row in rows:
        if row.course_name or row.course_code not in names:
            names[row.course_code] = row.course_name or names.get(row.course_code)
    for code, name in names.items():
        if code not in courses:
            course = Course(client=client, code=code, name=name or code)
            session.add(course)
            session.flush()
            courses[code] = (course.id, course.name)
            result.courses_created += 1
        elif name and name != courses[code][1]:
            session.execute(update(Course).where(Course.id == courses[code][0]).values(name=name))
            courses[code] = (courses[code][0], name)
            result.courses_renamed += 1
