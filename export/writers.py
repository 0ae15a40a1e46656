"""Streaming report writers: csv (RFC 4180) and xlsx (xlsxwriter, constant memory) (SPEC 6, "Formats").

Both take a header and an iterator of rows whose values are ``str``, ``date``/``datetime``, numbers (``int``,
``float``, ``Decimal``), ``bool`` or ``None``, and write them one at a time: memory stays flat however many rows.

* **csv**: RFC 4180 (fields quoted only when needed, CRLF after every record, quotes doubled), UTF-8 with a byte-order
  mark unless the report sets ``bom: false``; dates as ISO 8601 (``2026-04-05``, ``2026-04-05T10:30:00``); ``None``
  as an empty field.
* **xlsx**: one sheet with a bold, frozen header row; real date cells with a date format, numbers as numbers, text
  as inline strings (xlsxwriter's ``constant_memory`` mode writes each row to disk as soon as the next begins). A
  report longer than a sheet (1,048,575 data rows) continues on a second sheet with the header repeated.
* **Formula injection**: a text cell beginning with ``=`` ``+`` ``-`` ``@``, a tab or a carriage return is prefixed
  with ``'``, so a spreadsheet shows it as text and never runs it. Numbers and dates are never touched (a negative
  number stays a number).

An empty report is a header-only file. ``write_report`` returns the number of data rows written.

Rows that can also be read column by column (``ColumnBatches``, as ``export.queries.report_rows`` gives them) take the
csv writer's fast path: each column is planned once from its type and turned into csv text a batch at a time (a text
column is checked with one search over the joined batch and rewritten only when one of its cells needs the prefix; a
date column's text is looked up in a small cache). A batch in which no cell needs quoting, the usual case, is joined
with "," and CRLF in C; any other batch goes through ``csv.writer``. The bytes are the same either way (tests compare
them), at a fraction of the Python work per row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from core.cells import UNSAFE_FIRST, excel_safe

Progress = Callable[[int], None]  # rows written so far
PROGRESS_EVERY = 10_000  # rows between two progress calls

FORMATS = ("csv", "xlsx")
XLSX_MAX_ROWS = 1_048_576  # rows in one Excel sheet, the header row included
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


@runtime_checkable
class ColumnBatches(Protocol):
    """Rows that can also be read a batch at a time, one sequence of values per column (export.queries.ReportRows).

    ``column_types`` is the Python type of each column's values (None: always empty); it is a hint only, every value
    is still written by its own type."""

    column_types: Sequence[type | None]

    def column_batches(self) -> Iterator[list[Sequence[Any]]]: ...


def write_report(
    fmt: str,
    handle_or_path: Any,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    bom: bool = True,
    progress: Progress | None = None,
) -> int:
    """Write one report in ``fmt`` ("csv" or "xlsx"). csv takes a binary file object, xlsx a path."""
    if fmt == "csv":
        return write_csv(handle_or_path, header, rows, bom=bom, progress=progress)
    if fmt == "xlsx":
        return write_xlsx(handle_or_path, header, rows, progress=progress)
    raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")


# --- csv ---------------------------------------------------------------------------------------------------------


# Written by csv.writer as they are: str() of a date is ISO 8601, of a number its usual text.
_CSV_PLAIN = frozenset((int, float, Decimal, date, bool))


def _csv_value(value: Any) -> Any:
    """What csv.writer gets for a value of a less common type."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):  # a str subclass (an enum member): its text, made safe
        return excel_safe(str(value))
    if isinstance(value, date | int | float | Decimal):
        return value
    return excel_safe(str(value))


def write_csv(
    handle: IO[bytes], header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Stream ``rows`` into the binary file ``handle`` as RFC 4180 csv. Returns the number of data rows."""
    if bom:
        handle.write(b"\xef\xbb\xbf")  # by hand: the utf-8-sig codec would cost a Python call per row
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=False)
    try:
        writer = csv.writer(text, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow([excel_safe(str(name)) for name in header])
        if isinstance(rows, ColumnBatches) and rows.column_types:
            text.flush()
            count = _write_csv_columns(handle, rows, progress)
        else:
            count = _write_csv_rows(writer, rows, progress)
        if progress is not None:
            progress(count)
        text.flush()
    finally:
        text.detach()  # the caller owns (and closes, after fsync) the binary handle
    return count


def _write_csv_rows(writer: Any, rows: Iterable[Sequence[Any]], progress: Progress | None) -> int:
    """Any rows, one at a time."""
    writerow = writer.writerow
    unsafe = UNSAFE_FIRST
    count = 0
    step = PROGRESS_EVERY
    plain = _CSV_PLAIN
    # The hot loop: one comprehension per row, types told apart by class identity (anything unusual, such as a
    # datetime or a str subclass, goes through _csv_value).
    for row in rows:
        writerow(
            [
                ("'" + value if value[:1] in unsafe else value)
                if value.__class__ is str
                else value
                if value is None or value.__class__ in plain
                else _csv_value(value)
                for value in row
            ]
        )
        count += 1
        if progress is not None and count % step == 0:
            progress(count)
    return count


class _Lines:
    """What csv.writer writes its lines to: a list's append (a C call per row, no encoder call)."""

    __slots__ = ("write",)

    def __init__(self, lines: list[str]) -> None:
        self.write = lines.append


# A column's csv text and whether every cell of it can be written as it is: no delimiter, quote or line break that
# csv.writer would quote, and no NUL (the separator these checks join cells with).
_Converted = tuple[Sequence[str], bool]


def _write_csv_columns(handle: IO[bytes], rows: ColumnBatches, progress: Progress | None) -> int:
    """Rows a batch at a time, column by column: each column's handling chosen once from its type, every value
    turned into its csv text. A batch where no cell needs quoting (the usual case) is joined with "," and CRLF in C,
    which is byte for byte what csv.writer writes; any other batch goes through csv.writer. Each batch is encoded
    and written at once."""
    plan: list[tuple[int, Callable[[Sequence[Any]], _Converted]]] = []
    for index, kind in enumerate(rows.column_types):
        if kind is str:
            plan.append((index, _csv_text_column))
        elif kind is date:
            plan.append((index, _DateText().column))
        else:  # numbers, or a column that is always empty: value by value
            plan.append((index, _csv_any_column))
    # csv.writer quotes the field of a one-field record when it is empty ('""'): such reports always go through it.
    joinable = len(plan) > 1
    lines: list[str] = []
    writerows = csv.writer(_Lines(lines), lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows
    write = handle.write
    count = 0
    for columns in rows.column_batches():
        plain = joinable
        for index, convert in plan:
            columns[index], clean = convert(columns[index])
            plain = plain and clean
        if plain:
            write(("\r\n".join(map(",".join, zip(*columns, strict=True))) + "\r\n").encode("utf-8"))
        else:
            writerows(zip(*columns, strict=True))
            write("".join(lines).encode("utf-8"))
            lines.clear()
        before, count = count, count + len(columns[0])
        if progress is not None and count // PROGRESS_EVERY != before // PROGRESS_EVERY:
            progress(count)
    return count


_UNSAFE_CELL = re.compile("\x00[=+\\-@\t\r]")  # a cell (but the first) that begins like a formula, cells NUL-joined
_QUOTED = re.compile('[,"\r\n]')  # what makes csv.writer (QUOTE_MINIMAL, CRLF) quote a field


def _plain(joined: str, cells: int) -> bool:
    """Whether the ``cells`` NUL-joined in ``joined`` can all be written unquoted."""
    return _QUOTED.search(joined) is None and joined.count("\x00") == cells - 1


def _csv_text_column(values: Sequence[Any]) -> _Converted:
    """A text column of one batch, made safe: one join and two searches in C when no cell needs the prefix (the
    usual case), value by value when one does or when the column holds something other than text (None)."""
    try:
        joined = "\x00".join(values)
    except TypeError:  # None, or a value that is not text: each by its type
        return _csv_any_column(values)
    unsafe = UNSAFE_FIRST
    if _UNSAFE_CELL.search(joined) is not None or (values and values[0][:1] in unsafe):
        # (a NUL inside a cell can only cause a needless rewrite; the prefix adds no character csv quotes)
        values = ["'" + value if value[:1] in unsafe else value for value in values]
    return values, _plain(joined, len(values))


def _csv_any_column(values: Sequence[Any]) -> _Converted:
    """A column of one batch, value by value: the csv text of each (None: empty), as _write_csv_rows writes it."""
    unsafe = UNSAFE_FIRST
    texts = [
        ""
        if value is None
        else ("'" + value if value[:1] in unsafe else value)
        if value.__class__ is str
        else _csv_text(value)
        for value in values
    ]
    return texts, _plain("\x00".join(texts), len(texts))


def _csv_text(value: Any) -> str:
    """The text csv.writer writes for a value that is not None or a plain str (str() of a number or a date)."""
    converted = value if value.__class__ in _CSV_PLAIN else _csv_value(value)
    return converted if converted.__class__ is str else str(converted)


class _DateText(dict[Any, str]):
    """The csv text of a date column's values, remembered: a report's dates repeat (start dates, completion
    dates), and a dict lookup costs a fraction of ``date.isoformat``. None is an empty field; anything else (a
    datetime, a date subclass) is converted as _csv_any_column would and not remembered. At most ``LIMIT`` values
    are held, so memory stays flat."""

    LIMIT = 20_000

    def __init__(self) -> None:
        super().__init__()
        self.other = False  # a value that is not a date (or None) met in this batch

    def column(self, values: Sequence[Any]) -> _Converted:
        self.other = False
        texts = list(map(self.__getitem__, values))
        if self.other:  # its text could need quoting (ISO dates never do)
            return _csv_any_column(values)
        return texts, True

    def __missing__(self, value: Any) -> str:
        if value is not None and value.__class__ is not date:
            self.other = True
            return ""
        if len(self) >= self.LIMIT:
            self.clear()
        text = self[value] = "" if value is None else value.isoformat()
        return text


# --- xlsx --------------------------------------------------------------------------------------------------------


def write_xlsx(
    path: Path | str, header: Sequence[str], rows: Iterable[Sequence[Any]], *, progress: Progress | None = None,
    sheet_name: str = "Report",
) -> int:  # fmt: skip
    """Stream ``rows`` into a new xlsx workbook at ``path``. Returns the number of data rows."""
    import xlsxwriter

    workbook = xlsxwriter.Workbook(
        str(path),
        {
            "constant_memory": True,
            "strings_to_numbers": False,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "nan_inf_to_errors": True,
            "remove_timezone": True,
        },
    )
    try:
        bold = workbook.add_format({"bold": True})
        date_format = workbook.add_format({"num_format": DATE_FORMAT})
        datetime_format = workbook.add_format({"num_format": DATETIME_FORMAT})
        header_cells = [excel_safe(str(name)) for name in header]
        widths = [min(max(len(name) + 2, 12), 60) for name in header_cells]

        def new_sheet(number: int) -> Any:
            sheet = workbook.add_worksheet(sheet_name if number == 1 else f"{sheet_name} ({number})")
            for column, width in enumerate(widths):  # constant_memory: columns before any cell
                sheet.set_column(column, column, width)
            sheet.freeze_panes(1, 0)
            for column, name in enumerate(header_cells):
                sheet.write_string(0, column, name, bold)
            return sheet

        sheet_number = 1
        sheet = new_sheet(sheet_number)
        write_string, write_number = sheet.write_string, sheet.write_number
        write_datetime = sheet.write_datetime
        unsafe = UNSAFE_FIRST
        count = 0
        line = 0
        for row in rows:
            line += 1
            if line == XLSX_MAX_ROWS:
                sheet_number += 1
                sheet = new_sheet(sheet_number)
                write_string, write_number = sheet.write_string, sheet.write_number
                write_datetime = sheet.write_datetime
                line = 1
            for column, value in enumerate(row):
                kind = value.__class__
                if kind is str:
                    if value:
                        write_string(line, column, "'" + value if value[:1] in unsafe else value)
                elif kind is int or kind is float:
                    write_number(line, column, value)
                elif kind is date:
                    write_datetime(line, column, value, date_format)
                elif kind is Decimal:
                    write_number(line, column, float(value))
                elif value is not None:
                    _write_other(sheet, line, column, value, date_format, datetime_format)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
        if progress is not None:
            progress(count)
    finally:
        workbook.close()
    return count


def _write_other(sheet: Any, line: int, column: int, value: Any, date_format: Any, datetime_format: Any) -> None:
    """The less common value types (and subclasses of the common ones)."""
    if isinstance(value, bool):
        sheet.write_boolean(line, column, value)
    elif isinstance(value, datetime):
        sheet.write_datetime(line, column, value, datetime_format)
    elif isinstance(value, date):
        sheet.write_datetime(line, column, value, date_format)
    elif isinstance(value, int | float | Decimal):
        sheet.write_number(line, column, float(value))
    else:
        text = str(value)
        if text:
            sheet.write_string(line, column, excel_safe(text))
