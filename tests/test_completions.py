"""lcsync completions import: good files, files as real systems write them, row errors, rejected files, re-imports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from core.db import make_engine, upgrade
from core.errors import InputFileError
from core.models import User
from core.training import Completion, Course
from ingest.completions import CompletionsResult, import_completions

HEADER = "employee_id,course_code,course_name,completion_status,completed_at,expires_at,score"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(User),
            [
                {"client": client, "employee_id": employee_id, "status": "active", "created_at": NOW,
                 "updated_at": NOW}
                for client, employee_id in [("acme", "000123"), ("acme", "000456"), ("globex", "G1")]
            ],
        )  # fmt: skip
    yield engine
    engine.dispose()


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "completions.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def load(engine: Engine, path: Path, client: str = "acme") -> CompletionsResult:
    with Session(engine) as session:
        return import_completions(session, client, path)


def stored(engine: Engine, client: str = "acme") -> list[tuple[object, ...]]:
    with Session(engine) as session:
        rows = session.execute(
            select(
                User.employee_id,
                Course.code,
                Course.name,
                Completion.completion_status,
                Completion.completed_at,
                Completion.expires_at,
                Completion.score,
            )
            .join(User, User.id == Completion.user_id)
            .join(Course, Course.id == Completion.course_id)
            .where(Completion.client == client)
            .order_by(User.employee_id, Course.code)
        )
        return [tuple(row) for row in rows]


GOOD = f"""{HEADER}
000123,FIRE-101,Fire Warden,completed,2026-05-01,2027-05-01,92.5
000123,PRIV-201,Privacy,in_progress,,,
000456,FIRE-101,,Expired,2024-01-10,2025-01-10,70
"""


def test_a_good_file_creates_courses_and_completions(engine: Engine, tmp_path: Path) -> None:
    result = load(engine, write(tmp_path, GOOD))
    assert (result.rows, result.created, result.updated, result.unchanged, result.errors) == (3, 3, 0, 0, [])
    assert result.courses_created == 2
    assert stored(engine) == [
        ("000123", "FIRE-101", "Fire Warden", "completed", date(2026, 5, 1), date(2027, 5, 1), Decimal("92.50")),
        ("000123", "PRIV-201", "Privacy", "in_progress", None, None, None),
        ("000456", "FIRE-101", "Fire Warden", "expired", date(2024, 1, 10), date(2025, 1, 10), Decimal("70.00")),
    ]


def test_importing_the_same_file_again_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    load(engine, path)
    before = stored(engine)
    result = load(engine, path)
    assert (result.created, result.updated, result.unchanged, result.courses_created) == (0, 0, 3, 0)
    assert stored(engine) == before


def test_a_later_file_updates_completions_and_renames_courses(engine: Engine, tmp_path: Path) -> None:
    load(engine, write(tmp_path, GOOD))
    later = f"{HEADER}\n000123,PRIV-201,Privacy and Data,completed,2026-05-30,,100\n"
    result = load(engine, write(tmp_path, later, name="later.csv"))
    assert (result.created, result.updated, result.unchanged, result.courses_renamed) == (0, 1, 0, 1)
    assert stored(engine)[1] == (
        "000123", "PRIV-201", "Privacy and Data", "completed", date(2026, 5, 30), None, Decimal("100.00")
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("\ufeff" + GOOD, "utf-8"),  # Excel's "CSV UTF-8" writes a byte-order mark
        (GOOD.replace("Fire Warden", "Fire Wardén"), "cp1252"),  # Excel's plain "CSV"
        (GOOD.replace(",", ";").replace("92.5", "92,5"), "utf-8"),  # a decimal-comma locale
        (GOOD.replace(",", "\t"), "utf-8"),
        (GOOD.replace("\n", "\r\n"), "utf-8"),
        (GOOD.upper().replace("IN_PROGRESS", "In Progress").replace("COURSE_CODE", " Course_Code "), "utf-8"),
    ],
    ids=["bom", "cp1252", "semicolon", "tab", "crlf", "header-case"],
)
def test_files_are_read_as_robustly_as_user_files(engine: Engine, tmp_path: Path, text: str, encoding: str) -> None:
    result = load(engine, write(tmp_path, text, encoding))
    assert (result.created, result.errors) == (3, [])
    statuses = [row[3] for row in stored(engine)]
    assert statuses == ["completed", "in_progress", "expired"]


def test_cp1252_text_is_decoded(engine: Engine, tmp_path: Path) -> None:
    load(engine, write(tmp_path, GOOD.replace("Fire Warden", "Fire Wardén"), "cp1252"))
    assert stored(engine)[0][2] == "Fire Wardén"


def test_bad_rows_are_reported_with_line_and_column_and_the_rest_applied(engine: Engine, tmp_path: Path) -> None:
    text = f"""{HEADER}
000123,FIRE-101,Fire,completed,2026-05-01,,90
000123,,Nameless,completed,,,
000456,PRIV-201,Privacy,passed,2026-02-30,soon,high
999999,FIRE-101,Fire,completed,,,
,FIRE-101,Fire,completed,,,
000456,CODE-1,Code,completed,,,
000456,CODE-1,Code,in_progress,,,
"""
    result = load(engine, write(tmp_path, text))
    reasons = [(error.line, error.column, error.reason) for error in result.errors]
    assert reasons == [
        (3, "course_code", "a value is required"),
        (4, "completion_status",
         "'passed' is not a completion status (use completed, in_progress, not_started, expired)"),
        (4, "completed_at", "'2026-02-30' is not an ISO 8601 date (YYYY-MM-DD)"),
        (4, "expires_at", "'soon' is not an ISO 8601 date (YYYY-MM-DD)"),
        (4, "score", "'high' is not a score (a number below 100000 with at most two decimals)"),
        (5, "employee_id", "no user with employee_id '999999' in acme's user store (import the user first)"),
        (6, "employee_id", "the key is empty: every row needs one"),
        (7, None, "employee '000456' and course 'CODE-1' also on line 8"),
        (8, None, "employee '000456' and course 'CODE-1' also on line 7"),
    ]  # fmt: skip
    assert (result.rows, result.created) == (7, 1)
    assert not result.failed
    assert [row[:2] for row in stored(engine)] == [("000123", "FIRE-101")]


def test_another_clients_employee_is_unknown(engine: Engine, tmp_path: Path) -> None:
    result = load(engine, write(tmp_path, f"{HEADER}\nG1,FIRE-101,Fire,completed,,,\n"))
    assert [error.reason for error in result.errors] == [
        "no user with employee_id 'G1' in acme's user store (import the user first)"
    ]
    assert result.failed
    assert stored(engine) == [] == stored(engine, "globex")


def test_optional_columns_may_be_left_out(engine: Engine, tmp_path: Path) -> None:
    result = load(engine, write(tmp_path, "employee_id,course_code,completion_status\n000123,FIRE-101,not_started\n"))
    assert result.created == 1
    assert stored(engine) == [("000123", "FIRE-101", "FIRE-101", "not_started", None, None, None)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (HEADER.encode() + b"\n", "the file has a header but no data rows: there are no completions in it"),
        (b"employee_id,course_name\n000123,Fire\n", "required columns missing: course_code, completion_status"),
        (b"course_code,completion_status\nFIRE,completed\n", "required column missing: 'employee_id'"),
        (b"PK\x03\x04" + b"\x00" * 20 + b"[Content_Types].xml", "this is an Excel workbook (.xlsx) renamed .csv"),
        (b"\x00\x01\x02binary" * 50, "this is not a text file"),
    ],
    ids=["empty", "header-only", "missing-columns", "missing-key", "xlsx", "binary"],
)
def test_unusable_files_are_rejected_and_nothing_changes(
    engine: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "completions.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as raised:
        load(engine, path)
    assert str(raised.value).startswith(message), str(raised.value)
    assert stored(engine) == []
