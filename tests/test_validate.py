"""Validation across rows: duplicate keys, manager references (the file over the store), cycles, and pass 2."""

from __future__ import annotations

from pathlib import Path

from conftest import template

from core.config import TemplateConfig
from ingest.reader import open_user_file
from ingest.rows import RowError
from ingest.validate import Validation, validate

TEMPLATE = TemplateConfig.model_validate(template())
HEADER = "Employee ID,First Name,Last Name,Email,Manager ID"


def check(tmp_path: Path, rows: list[str], store: dict[str, str | None] | None = None) -> Validation:
    """Validate a file of ``rows`` ("key,manager", a full row, or "" for a blank line); line 2 is the first row."""
    lines = [row if row.count(",") > 1 or not row else _row(*row.split(",")) for row in rows]
    path = tmp_path / "users.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return validate(open_user_file(path, TEMPLATE), store or {})


def _row(key: str, manager: str = "") -> str:
    return f"{key},First,Last,{key}@example.com,{manager}"


def reasons(validation: Validation) -> list[tuple[int, str | None, str]]:
    return [(error.line, error.column, error.reason) for error in validation.errors]


def test_a_clean_file_has_no_errors_and_every_row_is_valid(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,", "002,001", "003,002"])
    assert validation.errors == []
    assert validation.total_rows == validation.valid_count == 3
    assert validation.keys_in_file == {"001", "002", "003"}
    assert [row.key for row in validation.valid_rows()] == ["001", "002", "003"]


def test_a_duplicated_key_rejects_every_row_with_it(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,", "002,", "001,", "003,", "001,"])
    assert reasons(validation) == [
        (2, "Employee ID", "Employee ID 001 appears more than once: also on line 4, 6"),
        (4, "Employee ID", "Employee ID 001 appears more than once: also on line 2, 6"),
        (6, "Employee ID", "Employee ID 001 appears more than once: also on line 2, 4"),
    ]
    assert validation.bad_lines == {2, 4, 6}
    assert [row.key for row in validation.valid_rows()] == ["002", "003"]
    assert validation.keys_in_file == {"001", "002", "003"}


def test_a_key_on_a_bad_row_and_a_good_row_is_a_duplicate_too(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,First,Last,not-an-email,", "001,"])
    assert reasons(validation) == [
        (2, "Email", "'not-an-email' is not an email address"),
        (2, "Employee ID", "Employee ID 001 appears more than once: also on line 3"),
        (3, "Employee ID", "Employee ID 001 appears more than once: also on line 2"),
    ]
    assert validation.valid_count == 0


def test_bad_rows_keep_their_keys_in_the_file(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,First,,a@example.com,", "002,"])
    assert validation.keys_in_file == {"001", "002"}
    assert validation.bad_lines == {2}


def test_a_manager_may_be_in_the_file_later_or_in_the_store(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,003", "002,900", "003,"], store={"900": None})
    assert validation.errors == []


def test_an_unknown_manager_is_an_error(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,999"], store={"900": None})
    assert reasons(validation) == [(2, "Manager ID", "manager 999 is not in this file nor already in the LMS")]


def test_a_user_cannot_manage_themself(tmp_path: Path) -> None:
    assert reasons(check(tmp_path, ["001,001"])) == [(2, "Manager ID", "a user cannot be their own manager")]


def test_cycles_in_the_file_reject_every_row_on_them(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,002", "002,001", "003,001", "010,011", "011,012", "012,010"])
    assert reasons(validation) == [
        (2, "Manager ID", "management cycle: 001 -> 002 -> 001"),
        (3, "Manager ID", "management cycle: 002 -> 001 -> 002"),
        (4, "Manager ID", "manager 001 is on a rejected row (line 2)"),
        (5, "Manager ID", "management cycle: 010 -> 011 -> 012 -> 010"),
        (6, "Manager ID", "management cycle: 011 -> 012 -> 010 -> 011"),
        (7, "Manager ID", "management cycle: 012 -> 010 -> 011 -> 012"),
    ]


def test_a_cycle_through_the_store_counts_and_the_file_overrides_the_store(tmp_path: Path) -> None:
    # The store says 900 reports to 001; the file makes 001 report to 900: a cycle.
    assert reasons(check(tmp_path, ["001,900"], store={"900": "001", "001": None})) == [
        (2, "Manager ID", "management cycle: 001 -> 900 -> 001")
    ]
    # The store had 001 -> 002 -> 001 in waiting; the file moves 002 under 003: no cycle any more.
    assert check(tmp_path, ["002,003", "003,"], store={"001": "002", "002": "001"}).errors == []


def test_a_cycle_among_store_users_alone_is_not_the_files_doing(tmp_path: Path) -> None:
    assert check(tmp_path, ["001,900"], store={"900": "901", "901": "900"}).errors == []


def test_a_manager_on_a_rejected_row_is_fine_only_when_already_in_the_store(tmp_path: Path) -> None:
    rows = ["001,First,Last,bad,", "002,001", "003,First,Last,bad,", "004,003", "005,004"]
    validation = check(tmp_path, rows, store={"001": None})
    assert reasons(validation) == [
        (2, "Email", "'bad' is not an email address"),
        (4, "Email", "'bad' is not an email address"),
        (5, "Manager ID", "manager 003 is on a rejected row (line 4)"),
        (6, "Manager ID", "manager 004 is on a rejected row (line 5)"),
    ]
    assert [row.key for row in validation.valid_rows()] == ["002"]


def test_valid_rows_reads_the_file_again_in_order(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,", "002,First,,b@example.com,", "003,001", "", "004,003"])
    assert validation.total_rows == 4
    assert validation.valid_count == 3
    first = [(row.line, row.key) for row in validation.valid_rows()]
    assert first == [(2, "001"), (4, "003"), (6, "004")]
    assert [(row.line, row.key) for row in validation.valid_rows()] == first


def test_errors_are_sorted_by_line(tmp_path: Path) -> None:
    validation = check(tmp_path, ["001,", "002,First,Last,bad,", "001,", "003,777"])
    lines = [error.line for error in validation.errors]
    assert lines == sorted(lines)
    assert all(isinstance(error, RowError) for error in validation.errors)


def test_unknown_managers_may_be_allowed_for_a_sample(tmp_path: Path) -> None:
    path = tmp_path / "sample.csv"
    path.write_text(f"{HEADER}\n{_row('001', '999')}\n{_row('002', '002')}\n", encoding="utf-8")
    validation = validate(open_user_file(path, TEMPLATE), {}, allow_unknown_managers=True)
    assert reasons(validation) == [(3, "Manager ID", "a user cannot be their own manager")]


def test_without_a_manager_column_there_are_no_manager_rules(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("Employee ID,First Name,Last Name,Email\n1,A,B,a@x.com\n2,A,B,b@x.com\n", encoding="utf-8")
    validation = validate(open_user_file(path, TEMPLATE), {"1": "2", "2": "1"})
    assert validation.errors == []
