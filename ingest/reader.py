"""Read a client's User Data CSV file: bytes on disk -> ``UserRow | RowError``, streaming, with no database in sight.

``open_user_file`` looks at the whole file once (is it text? UTF-8 or Windows-1252?), detects the delimiter from
the header line and the lines after it, and matches the header against the client's template. Whatever makes the
file unusable as a whole raises ``core.errors.InputFileError`` with a message for the client. ``UserFile.records()``
then reads the file from the start every time it is called and yields, in file order, one ``UserRow`` per good record
or one ``RowError`` per problem of a bad record.

What the reader decides, so that the stages after it need not:

- Every value is text, stripped of surrounding spaces (leading zeros in keys are kept). An empty cell is None.
- Completely blank records (an empty line, or only delimiters and spaces) are skipped and not counted.
- A record with fewer cells than the header has its missing cells read as empty (the required checks then apply); a
  record with more cells than the header is an error (usually a value with an unquoted delimiter in it).
- ``status``: active, A, Y, 1, true -> "active"; inactive, suspended, terminated, I, N, 0, false -> "suspended"
  (case-insensitively). An empty Status cell means "active": the HR system lists the person as a current user.
- ``start_date`` and ``end_date`` are parsed with the template's ``date_format``; an empty cell is None.
- ``UserRow.fields``, ``groups`` and ``custom`` hold an entry only for the template columns present in the file: a
  column missing from the file is absent from the dict (leave that value alone), an empty cell is None (clear it).
- Line numbers are the physical line where a record starts (the header is line 1 unless blank lines precede it);
  line breaks inside quoted values are counted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Container, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

from core.config import TemplateConfig
from core.errors import InputFileError
from ingest.conversion import Plan
from ingest.rows import RowError, UserRow
from ingest.sniff import (
    CP1252_ERRORS,
    DELIMITER_NAMES,
    SNIFF_BYTES,
    best_delimiter,
    decode_sample,
    detect_encoding,
    refuse_non_text,
    sample_records,
)


class MissingColumnsError(InputFileError):
    """A required column is missing. ``user_file`` describes what was found (encoding, delimiter, header, the
    template columns present and missing) for ``template check``; it must not be read."""

    def __init__(self, message: str, user_file: UserFile) -> None:
        super().__init__(message)
        self.user_file = user_file


def normalize_header(name: str) -> str:
    """How header names are compared: without a BOM, case-insensitively, with runs of white space as one space."""
    return " ".join(name.replace("\ufeff", "").split()).casefold()


@dataclass
class UserFile:
    """A User Data file whose encoding, delimiter and header are known; ``records()`` reads it (again)."""

    path: Path
    encoding: str
    delimiter: str
    header: list[str]
    unknown_columns: list[str]
    missing_columns: list[str]
    template: TemplateConfig = field(repr=False)
    header_line: int = 1
    quoted: bool = True
    """Whether the file holds a quote character anywhere; without one it is read line by line (_QuoteFreeReader)."""
    signature: tuple[int, int] = (0, 0)
    """The file's size and modification time when it was opened: ``FingerprintedRecords`` checks it is unchanged."""
    columns: dict[str, int] = field(default_factory=dict)
    """Each template name present (column header, group type or custom field, as the template spells it) -> the
    index of its column in the file."""

    def column_header(self, lms_field: str) -> str | None:
        """The header, as written in the file, of the column holding ``lms_field`` (None when absent)."""
        for name, target in self.template.columns.items():
            if target == lms_field and name in self.columns:
                return self.header[self.columns[name]]
        return None

    @property
    def key_header(self) -> str:
        """The header of the key column as written in the file."""
        header = self.column_header(self.template.key)
        assert header is not None  # open_user_file refuses a file without its key column
        return header

    def _open(self) -> io.TextIOWrapper:
        errors = CP1252_ERRORS if self.encoding == "cp1252" else "strict"
        try:
            return open(self.path, encoding=self.encoding, errors=errors, newline="")
        except OSError as exc:
            raise InputFileError(f"the file cannot be read: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        """A csv reader positioned after the header. InputFileError when the file turns out unreadable half-way (a
        quote never closed, or the file changed since it was opened)."""
        with self._open() as stream:
            reader: Any = (
                csv.reader(stream, delimiter=self.delimiter)
                if self.quoted
                else _QuoteFreeReader(stream, self.delimiter)
            )
            try:
                while reader.line_num < self.header_line:  # the header and any blank lines before it
                    next(reader)
                yield reader
            except csv.Error as exc:
                raise InputFileError(
                    f'line {reader.line_num}: {exc}; most likely a quote (") that opens a value is never closed, '
                    "so the rest of the file reads as one value"
                ) from exc
            except UnicodeDecodeError as exc:
                raise InputFileError("the file changed while it was being read (it is no longer UTF-8)") from exc
            except StopIteration as exc:
                raise InputFileError("the file changed while it was being read (its header is gone)") from exc

    def _csv_lines(self) -> Generator[tuple[int, list[str]], None, None]:
        """(start line, cells) of every record after the header, blank ones included."""
        with self._reader() as reader:
            line_count = reader.line_num
            for cells in reader:
                yield line_count + 1, cells
                line_count = reader.line_num

    def key_lines(self, keys: set[str] | frozenset[str]) -> dict[str, list[int]]:
        """The lines of the records whose key is one of ``keys`` (a cheap re-read: no conversion)."""
        index = self.columns[_template_name(self.template, self.template.key, self.columns)]
        found: dict[str, list[int]] = {}
        for line, cells in self._csv_lines():
            if len(cells) > index:
                key = cells[index].strip()
                if key in keys:
                    found.setdefault(key, []).append(line)
        return found

    def duplicate_keys(self) -> set[str]:
        """The keys on more than one record (a cheap re-read: no conversion)."""
        index = self.columns[_template_name(self.template, self.template.key, self.columns)]
        seen: set[str] = set()
        duplicates: set[str] = set()
        for _, cells in self._csv_lines():
            if len(cells) > index:
                key = cells[index].strip()
                if key in seen:
                    duplicates.add(key)
                elif key:
                    seen.add(key)
        return duplicates

    def records(self) -> Iterator[UserRow | RowError]:
        """Every data record in file order, from the start of the file (see the module docstring)."""
        return self._read()

    def links(self) -> LinkScan:
        """What validation's first pass needs, faster than ``records()`` (see ``LinkScan``)."""
        return LinkScan(self)

    def fingerprinted(self, skip: Container[int]) -> FingerprintedRecords:
        """The records not on a line in ``skip``, unconverted, with a digest of their cells (see the class)."""
        return FingerprintedRecords(self, skip)

    def _read(self, scan: LinkScan | None = None) -> Iterator[Any]:
        plan = Plan(self)
        width = len(self.header)
        fast = plan.compile(links_only=scan is not None)
        convert = plan.convert
        errors = scan.errors if scan is not None else None
        good = 0
        with self._reader() as reader:
            line_count = reader.line_num
            for cells in reader:
                line = line_count + 1
                line_count = reader.line_num
                if len(cells) != width:
                    if not any(cell.strip() for cell in cells):
                        continue
                    if len(cells) > width:
                        if errors is None:
                            yield plan.too_many_cells(line, cells)
                        else:
                            errors.append(plan.too_many_cells(line, cells))
                        continue
                    cells.extend([""] * (width - len(cells)))
                result = fast(line, cells)
                if result is None:
                    problems = convert(line, cells)
                    if problems and line_count > line:
                        problems.append(plan.spans_lines(line, line_count, cells))
                    if errors is None:
                        yield from problems
                    else:
                        errors.extend(problems)
                else:
                    good += 1
                    yield result
        if scan is not None:
            scan.good = good


class _QuoteFreeReader:
    """What ``csv.reader`` yields for a file without a single quote character, in half its time: with no quotes, a
    line break never falls inside a value and a delimiter never belongs to one, so each line is a record and its cells
    are the line split at the delimiter (an empty line is a blank record, as csv.reader has it)."""

    def __init__(self, stream: io.TextIOWrapper, delimiter: str) -> None:
        self.line_num = 0
        self.stream = stream  # after the records read so far (FingerprintedRecords reads the lines themselves)
        self._records = self._split(stream, delimiter)

    def _split(self, stream: io.TextIOWrapper, delimiter: str) -> Iterator[list[str]]:
        for number, text in enumerate(stream, 1):
            self.line_num = number
            text = text.rstrip("\r\n")
            yield text.split(delimiter) if text else []

    def __iter__(self) -> Iterator[list[str]]:
        return self._records

    def __next__(self) -> list[str]:
        return next(self._records)


def _has_quotes(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                if b'"' in chunk:
                    return True
    except OSError as exc:
        raise InputFileError(f"the file cannot be read: {exc.strerror}") from exc
    return False


class LinkScan:
    """Validation's first pass over a file: iterating yields ``(key, manager_id)`` for every good record in file
    order (manager_id None when empty or not in the file; equal manager ids are one string, to save memory).
    Afterwards ``errors`` holds the RowErrors of the bad records (as ``records()`` yields them) and ``good`` the
    number of good records."""

    def __init__(self, user_file: UserFile) -> None:
        self.user_file = user_file
        self.errors: list[RowError] = []
        self.good = 0

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return self.user_file._read(self)


class FingerprintedRecords:
    """The apply's pass over a file it has validated: iterating yields ``(line, key, digest, cells)`` for every
    record whose line is not in ``skip`` (the rejected ones), in file order, without converting it; ``convert(line,
    cells)`` then makes the UserRow of a record that turns out to be needed.

    ``digest`` is 64 bits of BLAKE2b over the cells the template reads, as written, personalized with how the file's
    columns map onto the template (and this reader's rules): equal digests mean equal cells under the same reading,
    hence equal values. A user whose stored digest equals the record's is unchanged, and costs no conversion. In a
    file without quotes whose every column the template reads, the digest is of the line itself, which is then not
    even split: ``cells`` is the line's text, which ``convert`` and ``values`` accept as well.
    """

    def __init__(self, user_file: UserFile, skip: Container[int]) -> None:
        self.user_file = user_file
        self.skip = skip
        self._plan = Plan(user_file)
        self._convert = self._plan.compile()
        template = user_file.template
        used = sorted(
            {
                *(i for i, _ in self._plan.text),
                *(i for i, _, _ in self._plan.dates),
                *(i for i, _ in self._plan.groups),
                *(i for i, _ in self._plan.custom),
                *([self._plan.status[0]] if self._plan.status else []),
            }
        )
        mapping = (template.key, template.columns, template.group_types, template.custom_fields, template.date_format)
        reading = ("reader-v1", [(i, user_file.header[i]) for i in used], user_file.columns, mapping)
        self.person = blake2b(repr(reading).encode(), digest_size=16).digest()
        self._text: Callable[[list[str]], str] = "\x1f".join  # every cell is read: the same text, without a call
        self._whole_lines = not user_file.quoted and used == list(range(self._plan.width))
        if self._whole_lines:
            self.person = blake2b(repr(("lines-v1", *reading[1:])).encode(), digest_size=16).digest()
        if used != list(range(self._plan.width)):
            namespace: dict[str, Any] = {}
            exec(f"def cells_text(cells): return '\\x1f'.join(({''.join(f'cells[{i}], ' for i in used)}))", namespace)
            self._text = namespace["cells_text"]

    def __iter__(self) -> Iterator[tuple[int, str, bytes, Any]]:
        skip, width, key_index, text, person = (
            self.skip,
            self._plan.width,
            self._plan.key_index,
            self._text,
            self.person,
        )
        with self.user_file._reader() as reader:
            line_count = reader.line_num
            if self._whole_lines:
                delimiter, after_key = self.user_file.delimiter, key_index + 1
                for line, whole in enumerate(reader.stream, line_count + 1):
                    if line in skip:
                        continue
                    whole = whole.rstrip("\r\n")
                    if key_index == 0:  # the usual first column: no list of cells at all
                        end = whole.find(delimiter)
                        key = (whole if end < 0 else whole[:end]).strip()
                    else:
                        parts = whole.split(delimiter, after_key)
                        key = parts[key_index].strip() if len(parts) > key_index else ""
                    if key:  # as below
                        yield line, key, blake2b(whole.encode(), digest_size=8, person=person).digest(), whole
            else:
                for cells in reader:
                    line = line_count + 1
                    line_count = reader.line_num
                    if line in skip:
                        continue
                    if len(cells) != width:
                        if len(cells) > width:
                            raise InputFileError(FILE_CHANGED)
                        cells.extend([""] * (width - len(cells)))
                    key = cells[key_index].strip()
                    if key:  # else a blank record: a record with values and no key is rejected, its line skipped
                        yield line, key, blake2b(text(cells).encode(), digest_size=8, person=person).digest(), cells
        if _signature(self.user_file.path) != self.user_file.signature:
            raise InputFileError(FILE_CHANGED)

    def values(self, items: Sequence[str]) -> Callable[[int, list[str]], tuple[Any, ...] | None]:
        """A function of (line, cells) that returns, for a good record, the tuple of the values ``items`` name, as
        ``convert`` would give them, in that order, without making the UserRow (None for a record that is not
        good). Items: ``field:<LMS field>`` (dates as ISO 8601 text; ``field:username`` falls back to the email,
        ``field:status`` to active, like the applier's), ``group:<group type>``, ``custom:<custom field>``; any
        other item, or a column the file lacks, gives None."""
        return self._plan.compile(values=items, split=self._whole_lines)

    def _cells(self, record: list[str] | str) -> list[str]:
        """The cells of a record iteration yielded: its cells, or a whole line to split."""
        if not isinstance(record, str):
            return record
        cells = record.split(self.user_file.delimiter)
        if len(cells) < self._plan.width:
            cells.extend([""] * (self._plan.width - len(cells)))
        return cells

    def convert(self, line: int, cells: list[str] | str) -> UserRow:
        row = self._convert(line, self._cells(cells))
        if row is None:
            raise InputFileError(FILE_CHANGED)
        return row


FILE_CHANGED = "the file changed while it was being imported: a row that was valid no longer is"


def _template_name(template: TemplateConfig, lms_field: str, present: dict[str, int]) -> str:
    """The template column that provides ``lms_field`` in this file."""
    for name, target in template.columns.items():
        if target == lms_field and name in present:
            return name
    raise KeyError(lms_field)


# --- opening a file ------------------------------------------------------------------------------------------------


def open_user_file(path: Path, template: TemplateConfig) -> UserFile:
    """Sniff encoding (UTF-8 with/without BOM, else Windows-1252), delimiter (unless ``template.delimiter``) and line
    endings; read and match the header. Raises InputFileError, with a message for the client, for an empty file, a
    header-only file, a missing required column, or a file that is not CSV (an .xlsx renamed .csv, binary)."""
    path = Path(path)
    signature = _signature(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputFileError(f"the file cannot be read: {exc.strerror}") from exc
    refuse_non_text(head)
    encoding = detect_encoding(path)
    sample = decode_sample(head, encoding, truncated=len(head) == SNIFF_BYTES)
    records = sample_records(sample, template.delimiter or ",")
    if not records:
        raise InputFileError("the file is empty: it should hold a header line and one line per user")
    delimiter = template.delimiter or _detect_delimiter(sample, template)
    if delimiter != (template.delimiter or ","):
        records = sample_records(sample, delimiter)
    header_line, header = records[0]
    header = [name.replace("\ufeff", "").strip() for name in header]
    if encoding == "cp1252" and header[0].startswith("\u00ef\u00bb\u00bf"):  # a BOM, then bytes that are not UTF-8
        header[0] = header[0][3:].strip()
    user_file = _match_header(path, encoding, delimiter, header, header_line, template)
    user_file.signature = signature
    user_file.quoted = _has_quotes(path)
    if not _has_data(user_file):
        raise InputFileError(
            "the file has a header but no data rows: there is nothing to import (a full file with no users would "
            "suspend everyone, so it is refused)"
        )
    return user_file


def _signature(path: Path) -> tuple[int, int]:
    try:
        status = os.stat(path)
    except OSError as exc:
        raise InputFileError(f"the file cannot be read: {exc.strerror}") from exc
    return status.st_size, status.st_mtime_ns


def _has_data(user_file: UserFile) -> bool:
    """Whether any non-blank record follows the header."""
    with contextlib.closing(user_file._csv_lines()) as lines:
        return any(any(cell.strip() for cell in cells) for _, cells in lines)


def _detect_delimiter(sample: str, template: TemplateConfig) -> str:
    """The delimiter under which the header names the most template columns (see ingest.sniff.best_delimiter)."""
    return best_delimiter(sample, set(_template_names(template)), normalize_header)


def _template_names(template: TemplateConfig) -> dict[str, str]:
    """Normalized name -> the template's spelling, for every column, group type and custom field."""
    names: dict[str, str] = {}
    for name in [*template.columns, *template.group_types, *template.custom_fields]:
        names.setdefault(normalize_header(name), name)
    return names


def _match_header(
    path: Path, encoding: str, delimiter: str, header: list[str], header_line: int, template: TemplateConfig
) -> UserFile:
    known = _template_names(template)
    columns: dict[str, int] = {}
    unknown: list[str] = []
    for index, written in enumerate(header):
        name = known.get(normalize_header(written))
        if name is None:
            if written:
                unknown.append(written)
        elif name in columns:
            raise InputFileError(
                f"the column {written!r} appears twice in the header (columns {columns[name] + 1} and {index + 1}); "
                "keep one of them"
            )
        else:
            columns[name] = index
    providers: dict[str, list[str]] = {}
    for name, target in template.columns.items():
        if name in columns:
            providers.setdefault(target, []).append(name)
    for target, names in providers.items():
        if len(names) > 1:
            shown = " and ".join(repr(header[columns[name]]) for name in names)
            raise InputFileError(f"the columns {shown} both hold {target}; keep one of them")
    missing = [name for name, target in template.columns.items() if target not in providers]
    missing += [name for name in [*template.group_types, *template.custom_fields] if name not in columns]
    user_file = UserFile(
        path=path,
        encoding=encoding,
        delimiter=delimiter,
        header=header,
        unknown_columns=unknown,
        missing_columns=missing,
        template=template,
        header_line=header_line,
        columns=columns,
    )
    missing_required: list[str] = []
    for target in dict.fromkeys([template.key, *template.required]):
        if target not in providers:
            alternatives = [name for name, mapped in template.columns.items() if mapped == target]
            missing_required.append(" or ".join(repr(name) for name in alternatives))
    if missing_required:
        found = ", ".join(repr(name) for name in header)
        plural = "s" if len(missing_required) > 1 else ""
        hint = ""
        if len(header) == 1:
            hint = f" (the file is read with the {DELIMITER_NAMES[delimiter]} as delimiter: is that right?)"
        raise MissingColumnsError(
            f"required column{plural} missing: {', '.join(missing_required)}. The file's header is: {found}{hint}. "
            "Column names must match the agreed template (case and spaces do not matter)",
            user_file,
        )
    return user_file
