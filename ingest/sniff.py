"""What kind of file is this? Binary or text, UTF-8 or Windows-1252, and which delimiter.

Shared by every CSV an HR or LMS system sends (User Data files, completions): each reader builds on these checks so
that every file gets the same robust reading and the same messages.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from pathlib import Path

from core.errors import InputFileError

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
SNIFF_BYTES = 64 * 1024
SNIFF_RECORDS = 20
CHUNK = 1 << 20
CP1252_ERRORS = "lcsync-cp1252"
_CONTROL_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])


def _cp1252_undefined(error: UnicodeError) -> tuple[str, int]:
    """Decode the five bytes Python's cp1252 leaves undefined as Windows does (the C1 control with that number)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(CP1252_ERRORS, _cp1252_undefined)


def refuse_non_text(head: bytes) -> None:
    """InputFileError when the first bytes show a spreadsheet, a PDF, an archive or other binary data."""
    if head.startswith(b"PK\x03\x04"):
        if b"xl/" in head or b"[Content_Types].xml" in head:
            raise InputFileError(
                "this is an Excel workbook (.xlsx) renamed .csv, not a CSV file; open it in Excel and save it as "
                "'CSV UTF-8 (Comma delimited)'"
            )
        raise InputFileError("this is a ZIP archive, not a CSV file; upload the CSV file itself")
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise InputFileError(
            "this is an old Excel workbook (.xls) renamed .csv, not a CSV file; open it in Excel and save it as "
            "'CSV UTF-8 (Comma delimited)'"
        )
    if head.startswith(b"%PDF"):
        raise InputFileError("this is a PDF document, not a CSV file; export the user data from your HR system as CSV")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(
            "this file is UTF-16 text (Excel's 'Unicode Text'); save it as 'CSV UTF-8 (Comma delimited)' instead"
        )
    if head.startswith(b"\x1f\x8b"):
        raise InputFileError("this is a gzip-compressed file, not a CSV file; upload the CSV file uncompressed")
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    if b"\x00" in head or controls > max(8, len(head) // 100):
        raise InputFileError(
            "this is not a text file (it holds binary data); export the user data from your HR system as CSV"
        )


def detect_encoding(path: Path) -> str:
    """UTF-8 (``utf-8-sig`` with a BOM) when the whole file is valid UTF-8, else Windows-1252. A NUL byte anywhere
    makes it binary (a database would refuse it in a value anyway)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    try:
        with open(path, "rb") as stream:
            first = True
            while chunk := stream.read(CHUNK):
                if first:
                    bom, first = chunk.startswith(codecs.BOM_UTF8), False
                if b"\x00" in chunk:
                    raise InputFileError(
                        "this is not a text file (it holds NUL bytes); export the user data from your HR system as CSV"
                    )
                if utf8:
                    try:
                        decoder.decode(chunk)
                    except UnicodeDecodeError:
                        utf8 = False
            if utf8:
                decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        utf8 = False
    except OSError as exc:
        raise InputFileError(f"the file cannot be read: {exc.strerror}") from exc
    if not utf8:
        return "cp1252"
    return "utf-8-sig" if not first and bom else "utf-8"


def decode_sample(head: bytes, encoding: str, *, truncated: bool) -> str:
    if encoding == "cp1252":
        text = head.decode("cp1252", errors=CP1252_ERRORS)
    else:
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    if truncated:  # the last line may be cut short: leave it out of the sample
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else text
    return text


def sample_records(sample: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line, cells) of the first non-blank records of the sample, the header first."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    records: list[tuple[int, list[str]]] = []
    line_count = 0
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((line_count + 1, cells))
                if len(records) >= SNIFF_RECORDS:
                    break
            line_count = reader.line_num
    except csv.Error:
        pass
    return records


def best_delimiter(sample: str, known: set[str], normalize: Callable[[str], str]) -> str:
    """The delimiter under which the header names the most ``known`` columns (compared after ``normalize``), then
    splits into the most columns consistently with the lines after it. InputFileError when no delimiter splits the
    header at all."""
    best: tuple[int, int, int, int] | None = None
    choice = ","
    for delimiter in DELIMITERS:
        records = sample_records(sample, delimiter)
        if not records:
            continue
        header = records[0][1]
        matched = sum(1 for name in header if normalize(name) in known)
        consistent = sum(1 for _, cells in records[1:] if len(cells) == len(header))
        score = (matched, len(header) > 1, consistent, len(header))
        if best is None or score > best:
            best, choice = score, delimiter
    if best is not None and best[3] == 1 and best[0] == 0:
        first = sample.strip().splitlines()[0] if sample.strip() else ""
        shown = first if len(first) <= 80 else first[:77] + "..."
        raise InputFileError(
            f"the header line has only one column ({shown!r}): no delimiter (comma, semicolon, tab or |) was found; "
            "save the file as CSV with one column per field"
        )
    return choice
