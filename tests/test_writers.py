"""The report writers: RFC 4180 csv and streaming xlsx, formula cells neutralised, dates and numbers typed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from export.writers import excel_safe, write_csv, write_report, write_xlsx

HEADER = ["employee_id", "first_name", "completed_at", "score", "note"]
DANGEROUS = ["=1+2", "+61 400 000 000", "-2+3", "@SUM(A1)", "\tindented", "\rreturn", '=HYPERLINK("http://x")']


def csv_bytes(header: list[str], rows: list[tuple[Any, ...]], *, bom: bool = True) -> bytes:
    buffer = io.BytesIO()
    count = write_csv(buffer, header, iter(rows), bom=bom)
    assert count == len(rows)
    return buffer.getvalue()


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def read_xlsx(path: Path) -> list[tuple[Any, ...]]:
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        return [tuple(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()


@pytest.mark.parametrize("value", DANGEROUS)
def test_csv_text_cell_that_would_run_as_a_formula_is_prefixed(value: str) -> None:
    data = csv_bytes(HEADER, [("1", value, None, None, value)])

    assert read_csv(data)[1][1] == "'" + value
    assert read_csv(data)[1][4] == "'" + value


@pytest.mark.parametrize("value", DANGEROUS)
def test_xlsx_text_cell_that_would_run_as_a_formula_is_prefixed_and_stays_text(tmp_path: Path, value: str) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(path, HEADER, iter([("1", value, None, None, value)]))

    rows = read_xlsx(path)
    # A carriage return is stored as OOXML's escape _x000D_ (Excel shows a line break; openpyxl leaves the escape).
    assert rows[1][1].replace("_x000D_", "\r") == "'" + value
    workbook = openpyxl.load_workbook(path)
    cell = workbook.worksheets[0]["B2"]
    assert cell.data_type == "s"  # a string, never a formula
    workbook.close()


def test_numbers_and_dates_are_left_alone_even_when_negative(tmp_path: Path) -> None:
    rows = [("1", "Ann", date(2026, 4, 5), Decimal("-12.50"), -3), ("2", "Bob", None, 87.5, 0)]

    data = read_csv(csv_bytes(HEADER, rows))
    assert data[1] == ["1", "Ann", "2026-04-05", "-12.50", "-3"]
    assert data[2] == ["2", "Bob", "", "87.5", "0"]

    path = tmp_path / "r.xlsx"
    write_xlsx(path, HEADER, iter(rows))
    back = read_xlsx(path)
    assert back[1][3] == -12.5 and back[1][4] == -3
    assert back[2][3] == 87.5


def test_xlsx_dates_are_date_cells_with_a_date_format(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_xlsx(path, HEADER, iter([("1", "Ann", date(2026, 10, 5), None, datetime(2026, 10, 5, 9, 30))]))

    workbook = openpyxl.load_workbook(path)
    sheet = workbook.worksheets[0]
    cell = sheet["C2"]
    assert cell.is_date and cell.value == datetime(2026, 10, 5)
    assert cell.number_format == "yyyy-mm-dd"
    assert sheet["E2"].is_date and sheet["E2"].value == datetime(2026, 10, 5, 9, 30)
    assert [c.value for c in sheet[1]] == HEADER
    assert sheet.freeze_panes == "A2"
    workbook.close()


def test_csv_dates_are_iso_8601() -> None:
    data = read_csv(csv_bytes(["d", "t"], [(date(2027, 4, 4), datetime(2027, 4, 4, 2, 30))]))

    assert data[1] == ["2027-04-04", "2027-04-04T02:30:00"]


def test_csv_is_rfc_4180_crlf_quoted_only_when_needed() -> None:
    data = csv_bytes(["a", "b", "c"], [("plain", 'say "hi"', "two\nlines, and a comma")], bom=False)

    assert data == b'a,b,c\r\nplain,"say ""hi""","two\nlines, and a comma"\r\n'


def test_csv_bom_on_by_default_and_off_when_asked() -> None:
    with_bom = csv_bytes(["name"], [("Zoë",)])
    without = csv_bytes(["name"], [("Zoë",)], bom=False)

    assert with_bom.startswith(b"\xef\xbb\xbfname\r\n")
    assert without == "name\r\nZoë\r\n".encode()


def test_empty_report_is_a_header_only_file(tmp_path: Path) -> None:
    assert csv_bytes(HEADER, [], bom=False) == b"employee_id,first_name,completed_at,score,note\r\n"

    path = tmp_path / "r.xlsx"
    assert write_xlsx(path, HEADER, iter([])) == 0
    assert read_xlsx(path) == [tuple(HEADER)]


def test_write_report_dispatches_by_format_and_refuses_others(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    assert write_report("csv", buffer, ["a"], iter([("x",)]), bom=False) == 1
    assert write_report("xlsx", tmp_path / "r.xlsx", ["a"], iter([("x",)])) == 1
    with pytest.raises(ValueError, match="unknown report format"):
        write_report("pdf", buffer, ["a"], iter([]))


def test_progress_is_reported_while_streaming() -> None:
    seen: list[int] = []
    write_csv(io.BytesIO(), ["n"], ((i,) for i in range(25_000)), progress=seen.append)

    assert seen == [10_000, 20_000, 25_000]


def test_excel_safe_leaves_ordinary_text() -> None:
    assert excel_safe("Sales") == "Sales"
    assert excel_safe("") == ""
    assert excel_safe("a=b") == "a=b"


class Columns:
    """Rows that can also be read column by column (as export.queries.ReportRows), ``size`` rows a batch."""

    def __init__(self, rows: list[tuple[Any, ...]], column_types: tuple[type | None, ...], size: int) -> None:
        self.rows, self.column_types, self.size = rows, column_types, size

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def column_batches(self) -> Iterator[list[Sequence[Any]]]:
        for start in range(0, len(self.rows), self.size):
            yield list(zip(*self.rows[start : start + self.size], strict=True))


TRICKY_TEXT = [
    "plain", "", None, "a,b", 'say "hi"', "line\nbreak", "carriage\rreturn", "crlf\r\n", *DANGEROUS, "'quoted",
    " padded ", "naïve café", "日本語", "emoji 🎉", "nul\x00inside", "=", "-", "a=b", "tab\tinside",
]  # fmt: skip


def tricky_rows() -> list[tuple[Any, ...]]:
    """Text, dates, numbers and None in every combination a report can give (and a few it should not)."""
    rows: list[tuple[Any, ...]] = []
    for index, text in enumerate(TRICKY_TEXT):
        rows.append(
            (
                f"E{index:03d}",
                text,
                date(2026, 1, 1 + index % 28) if index % 3 else None,
                [Decimal("92.50"), Decimal("-1.00"), None, 7, 2.5, True][index % 6],
                TRICKY_TEXT[-1 - index],
            )
        )
    return rows


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_csv_from_column_batches_is_byte_for_byte_the_csv_of_the_rows(size: int) -> None:
    rows = tricky_rows()
    expected = csv_bytes(HEADER, rows)
    got = io.BytesIO()
    assert write_csv(got, HEADER, Columns(rows, (str, str, date, Decimal, str), size)) == len(rows)
    assert got.getvalue() == expected


def test_csv_column_batches_of_plain_cells_match_csv_writer_exactly() -> None:
    # Batches where no cell needs quoting are joined without csv.writer: the bytes must be the same as its.
    rows = [(f"E{i:03d}", f"Name {i}", date(2026, 3, 1 + i % 28), Decimal(i) / 4, "+61 4" if i % 2 else "ok")
            for i in range(50)]  # fmt: skip
    reference = io.StringIO(newline="")
    writer = csv.writer(reference, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows([(*row[:4], excel_safe(row[4])) for row in rows])
    got = io.BytesIO()
    write_csv(got, HEADER, Columns(rows, (str, str, date, Decimal, str), 8), bom=False)
    assert got.getvalue() == reference.getvalue().encode("utf-8")


def test_csv_column_batches_tolerate_values_unlike_their_column_type() -> None:
    # The column types are a hint: a datetime or a number in a "date" column, None or a number in a "str" column
    # are written as the row path writes them.
    rows = [
        ("E1", None, datetime(2026, 4, 5, 10, 30), Decimal("1.50"), 12),
        ("E2", "=x", date(2026, 4, 5), None, "ok, quoted"),
        ("E3", "y", "2026-04-05", 3, None),
    ]
    for size in (1, 3):
        got = io.BytesIO()
        write_csv(got, HEADER, Columns(rows, (str, str, date, None, str), size))
        assert got.getvalue() == csv_bytes(HEADER, rows)


@pytest.mark.parametrize("value", ["", None, "x", "=x", "a,b"])
def test_csv_one_column_report_from_column_batches_matches_the_rows(value: str | None) -> None:
    # csv.writer writes a record whose only field is empty as "": the column path must too.
    rows = [(value,), ("next",)]
    got = io.BytesIO()
    write_csv(got, ["a"], Columns(rows, (str,), 2))
    assert got.getvalue() == csv_bytes(["a"], rows)


def test_progress_is_reported_while_streaming_column_batches() -> None:
    seen: list[int] = []
    rows = [(str(i), i) for i in range(25_000)]
    write_csv(io.BytesIO(), ["n", "i"], Columns(rows, (str, int), 500), progress=seen.append)
    assert seen == [10_000, 20_000, 25_000]
