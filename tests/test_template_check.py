"""``lcsync template check``: the report on a client's sample file."""

from __future__ import annotations

from pathlib import Path

from conftest import template

from core.config import TemplateConfig
from ingest.template_check import check_template

TEMPLATE = TemplateConfig.model_validate(template())
FULL_HEADER = (
    "Employee ID,First Name,Last Name,Email,Status,Manager ID,Start Date,Department,Location,Position,Cost Centre"
)


def sample(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "acme_users_sample.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_a_good_sample_is_usable(tmp_path: Path) -> None:
    path = sample(
        tmp_path,
        f"{FULL_HEADER}\r\n"
        "000101,Zoë,Brontë,zoe@example.com,Active,,03/02/2014,Executive,Melbourne,CEO,CC100\r\n"
        "000102,Seán,O\u2019Brien,sean@example.com,A,000101,17/08/2015,Sales,Sydney,Manager,CC200\r\n",
        encoding="cp1252",
    )
    report = check_template(path, TEMPLATE)
    assert report.ok
    assert report.encoding == "cp1252" and report.delimiter == ","
    assert report.required_present == ["Employee ID", "First Name", "Last Name", "Email"]
    assert report.required_missing == report.optional_missing == report.group_types_missing == []
    assert report.group_types_present == ["Department", "Location", "Position"]
    assert (report.total_rows, report.valid_rows, report.error_count) == (2, 2, 0)
    text = report.render()
    assert "encoding: Windows-1252" in text
    assert "rows: 2 read, 2 would import, 0 would be rejected" in text
    assert text.endswith("Result: the template can be used with this file.")


def test_a_sample_missing_a_required_column_and_a_group_type_cannot_be_used(tmp_path: Path) -> None:
    path = sample(tmp_path, "Employee ID;First Name;Last Name;Department;Position\n1;A;B;Sales;Rep\n")
    report = check_template(path, TEMPLATE)
    assert not report.ok
    assert report.rejection is not None and "required column missing: 'Email'" in report.rejection
    assert report.required_missing == ["Email"]
    assert report.group_types_missing == ["Location"]
    assert report.delimiter == ";"
    text = report.render()
    assert "required columns MISSING: Email" in text
    assert "group types missing: Location" in text
    assert text.endswith("Result: the template cannot be used with this file.")


def test_unknown_columns_and_bad_rows_are_reported(tmp_path: Path) -> None:
    rows = [
        "1,A,B,a@example.com,Active,,01/01/2020,Sales,Perth,x,CC1,note",
        "2,A,B,not-an-email,Retired,1,31/02/2020,Sales,Perth,x,CC1,note",
        "3,A,B,c@example.com,Active,3,01/01/2020,Sales,Perth,x,CC1,",
        "1,A,B,d@example.com,Active,,01/01/2020,Sales,Perth,x,CC1,",
        "4,A,B,e@example.com,Active,000777,01/01/2020,Sales,Perth,x,CC1,",
    ]
    path = sample(tmp_path, f"{FULL_HEADER},Notes\n" + "\n".join(rows) + "\n")
    report = check_template(path, TEMPLATE, max_errors=3)
    assert report.ok  # usable: the rows are the data's fault
    assert report.unused_columns == ["Notes"]
    assert (report.total_rows, report.valid_rows, report.bad_rows) == (5, 1, 4)
    assert report.error_count == 6
    assert [(error.line, error.column) for error in report.errors] == [(2, "Employee ID"), (3, "Email"), (3, "Status")]
    assert report.managers_outside == ["000777"]
    text = report.render()
    assert "file columns not used (ignored on import): Notes" in text
    assert "row errors: 6 (first 3 shown)" in text
    assert "line 3 [2] Email: 'not-an-email' is not an email address" in text
    assert "managers not in this sample (1; fine if they are already in the LMS): 000777" in text


def test_a_sample_where_no_row_imports_cannot_be_used(tmp_path: Path) -> None:
    path = sample(tmp_path, "Employee ID,First Name,Last Name,Email,Start Date\n1,A,B,a@x.com,2020-01-31\n")
    report = check_template(path, TEMPLATE)
    assert not report.ok
    assert "'2020-01-31' is not a date in the format dd/mm/yyyy" in report.render()
    assert "no row of the sample would import" in report.render()


def test_a_workbook_is_rejected_with_the_reason(tmp_path: Path) -> None:
    path = sample(tmp_path, "")
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 20 + b"[Content_Types].xml xl/workbook.xml")
    report = check_template(path, TEMPLATE)
    assert not report.ok
    assert "Excel workbook (.xlsx) renamed .csv" in report.render()
