"""How the cells of a User Data record become LMS values (ingest.reader reads the records, this converts them).

``Plan`` is the conversion of one template onto one file's header: ``compile()`` writes, for that header, a function
of (line, cells) with straight-line code that returns the record's UserRow (or what validation's first pass or the
applier needs of it) and None at the first doubt; ``convert()`` is the slow, plain path that then says exactly what
is wrong with a record. The rules themselves are in ingest.reader's module docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ingest.rows import RowError, UserRow
from ingest.sniff import DELIMITER_NAMES

if TYPE_CHECKING:
    from ingest.reader import UserFile

STATUS_VALUES = {
    "active": "active", "a": "active", "y": "active", "1": "active", "true": "active",
    "inactive": "suspended", "suspended": "suspended", "terminated": "suspended",
    "i": "suspended", "n": "suspended", "0": "suspended", "false": "suspended",
    "": "active",
}  # fmt: skip
_STATUS_SPELLINGS = {
    spelling: status
    for text, status in STATUS_VALUES.items()
    for spelling in (text, text.upper(), text.capitalize(), text.title())
}
STATUS_HELP = "active, inactive, suspended, terminated, A, I, Y, N, 1, 0, true or false"
DATE_FIELDS = ("start_date", "end_date")

_DATE_CACHE_LIMIT = 100_000


def human_date_format(fmt: str) -> str:
    """A strptime format as people write it: ``%d/%m/%Y`` -> ``dd/mm/yyyy``."""
    names = {"d": "dd", "m": "mm", "Y": "yyyy", "y": "yy", "b": "mmm", "B": "month", "H": "hh", "M": "mi",
             "S": "ss", "j": "ddd", "%": "%"}  # fmt: skip
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            out.append(names.get(fmt[i + 1], fmt[i : i + 2]))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


class Plan:
    """The conversion of one template onto one header.

    ``compile()`` builds the fast path: a function, written for this header, that turns a good record into a
    UserRow with straight-line code (no loops, no per-cell lookups), and returns None at the first doubt.
    ``convert()`` is the slow, plain path that then says what exactly is wrong with the record.
    """

    def __init__(self, user_file: UserFile) -> None:
        template = user_file.template
        present = user_file.columns
        header = user_file.header
        self.delimiter = user_file.delimiter
        self.width = len(header)
        self.key_field = template.key
        self.text: list[tuple[int, str]] = []
        self.required: list[tuple[int, str, str]] = []
        self.dates: list[tuple[int, str, str]] = []
        self.status: tuple[int, str] | None = None
        self.email: tuple[int, str] | None = None
        for name, target in template.columns.items():
            if name not in present:
                continue
            index = present[name]
            if target in DATE_FIELDS:
                self.dates.append((index, target, header[index]))
            elif target == "status":
                self.status = (index, header[index])
            else:
                self.text.append((index, target))
                if target == "email":
                    self.email = (index, header[index])
            if target == template.key:
                self.key_index, self.key_header = index, header[index]
            elif target in template.required and target != "status":  # an empty status reads as active
                self.required.append((index, target, header[index]))
        self.groups = [(present[name], name) for name in template.group_types if name in present]
        self.custom = [(present[name], name) for name in template.custom_fields if name in present]
        self.date_format = template.date_format
        self.date_help = human_date_format(template.date_format)
        self.date_cache: dict[str, date | None] = {}
        self.iso_cache: dict[str, str | None] = {}

    def iso_date(self, text: str) -> str | None:
        """``parse_date`` as ISO 8601 text (remembered)."""
        parsed = self.parse_date(text)
        iso = None if parsed is None else parsed.isoformat()
        if len(self.iso_cache) >= _DATE_CACHE_LIMIT:
            self.iso_cache.clear()
        self.iso_cache[text] = iso
        return iso

    def parse_date(self, text: str) -> date | None:
        """The date written as ``text`` in the template's format, or None when it is not one (remembered)."""
        cache = self.date_cache
        if text in cache:
            return cache[text]
        if len(cache) >= _DATE_CACHE_LIMIT:
            cache.clear()
        try:
            parsed: date | None = datetime.strptime(text, self.date_format).date()
        except ValueError:
            parsed = None
        if parsed is not None and parsed.year < 1000:  # "1/2/26" read with %Y would be the year 26
            parsed = None
        cache[text] = parsed
        return parsed

    def compile(
        self, *, links_only: bool = False, values: Sequence[str] | None = None, split: bool = False
    ) -> Callable[[int, Any], Any]:
        """The fast path for this header (see the class docstring): a function of (line, cells) that returns the
        UserRow of a good record, or with ``links_only`` just its ``(key, manager_id)``, or with ``values`` the
        tuple ``FingerprintedRecords.values`` describes; None at the first doubt."""
        lines = ["def fast(line, cells):"]
        if split:  # given a whole line of a file without quotes (ingest.reader.FingerprintedRecords)
            lines.append(f"    cells = cells.split({self.delimiter!r})")
            lines.append(f"    if len(cells) < {self.width}: cells.extend([''] * ({self.width} - len(cells)))")
        checks = ["key"]
        fields = []
        expressions: dict[str, str] = {}  # "field:first_name" -> the expression of its value
        required = {index for index, _, _ in self.required}
        manager = "None"
        for index, target in self.text:
            if target == self.key_field:
                lines.append(f"    key = cells[{index}].strip()")
                fields.append(f"{target!r}: key")
                expressions[f"field:{target}"] = "key"
                continue
            if links_only and target not in ("email", "manager_id"):
                if index in required:  # only whether there is a value
                    checks.append(f"cells[{index}].strip()")
                continue
            lines.append(f"    v{index} = cells[{index}].strip() or None")
            fields.append(f"{target!r}: v{index}")
            expressions[f"field:{target}"] = f"v{index}"
            if target == "manager_id":
                manager = f"v{index}"
            if target == "email" and values is None:  # values: checked by pass 1 (the file is the same: its stat)
                test = f"is_email(v{index})"
                checks.append(
                    f"v{index} is not None and {test}" if index in required else f"(v{index} is None or {test})"
                )
            elif index in required:
                checks.append(f"v{index} is not None")
        if self.status is not None:
            index = self.status[0]
            lines.append(f"    status = STATUS.get(cells[{index}].strip())")
            checks.append("status is not None")
            fields.append("'status': status")
            expressions["field:status"] = "status"
        for index, target, _ in self.dates:
            lines.append(f"    t{index} = cells[{index}].strip()")
            checks.append(f"d{index} is not None" if index in required else f"(d{index} is not None or not t{index})")
            if values is not None:  # the ISO text is what is written: remembered per text, as the dates are
                lines.append(f"    d{index} = (isos_get(t{index}) or iso_date(t{index})) if t{index} else None")
                expressions[f"field:{target}"] = f"d{index}"
                continue
            lines.append(f"    d{index} = (dates_get(t{index}) or parse_date(t{index})) if t{index} else None")
            fields.append(f"{target!r}: d{index}")
            expressions[f"field:{target}"] = f"(None if d{index} is None else d{index}.isoformat())"
        for index, name in self.groups:
            expressions[f"group:{name}"] = f"(cells[{index}].strip() or None)"
        for index, name in self.custom:
            expressions[f"custom:{name}"] = f"(cells[{index}].strip() or None)"
        groups = ", ".join(f"{name!r}: cells[{index}].strip() or None" for index, name in self.groups)
        custom = ", ".join(f"{name!r}: cells[{index}].strip() or None" for index, name in self.custom)
        lines.append(f"    if {' and '.join(checks)}:")
        if links_only:
            if manager != "None":
                manager = f"({manager} if {manager} is None else intern({manager}, {manager}))"
            lines.append(f"        return key, {manager}")
        elif values is not None:
            email = expressions.get("field:email", "None")
            if "field:username" in expressions and email != "None":
                username = expressions["field:username"]
                expressions["field:username"] = f"({username} if {username} is not None else {email})"
            expressions.setdefault("field:username", email)
            expressions.setdefault("field:status", "'active'")
            lines.append(f"        return ({''.join(expressions.get(item, 'None') + ', ' for item in values)})")
        else:
            lines.append(f"        return UserRow(line, key, {{{', '.join(fields)}}}, {{{groups}}}, {{{custom}}})")
        lines.append("    return None")
        namespace: dict[str, Any] = {
            "UserRow": UserRow,
            "STATUS": _STATUS_SPELLINGS,
            "is_email": is_email,
            "dates_get": self.date_cache.get,
            "isos_get": self.iso_cache.get,
            "iso_date": self.iso_date,
            "parse_date": self.parse_date,
            "intern": {}.setdefault,
        }
        self.source = "\n".join(lines)
        exec(compile(self.source, f"<lcsync reader for {self.width} columns>", "exec"), namespace)
        fast: Callable[[int, list[str]], Any] = namespace["fast"]
        return fast

    def too_many_cells(self, line: int, cells: list[str]) -> RowError:
        return RowError(
            line,
            None,
            f"row has {len(cells)} cells, the header has {self.width} (is there a value with an unquoted "
            f"{DELIMITER_NAMES[self.delimiter]} in it? quote it)",
            cells[self.key_index].strip() or None,
        )

    def spans_lines(self, line: int, last: int, cells: list[str]) -> RowError:
        """The hint for a bad record that runs over several lines: most often a quote left open."""
        return RowError(
            line,
            None,
            f'this row runs on to line {last}: is a quote (") left open? (a value in quotes may hold line breaks)',
            cells[self.key_index].strip() or None,
        )

    def convert(self, line: int, cells: list[str]) -> list[RowError]:
        """Every problem of a record the fast path refused, in column order (none for a blank record)."""
        key = cells[self.key_index].strip()
        if not key and not any(cell.strip() for cell in cells):
            return []
        errors: list[tuple[int, str, str]] = []
        if not key:
            errors.append((self.key_index, self.key_header, "the key is empty: every row needs one"))
        for index, _, column in self.required:
            if not cells[index].strip():
                errors.append((index, column, "a value is required"))
        if self.email is not None:
            index, column = self.email
            email = cells[index].strip()
            if email and not is_email(email):
                errors.append((index, column, f"'{email}' is not an email address"))
        if self.status is not None:
            index, column = self.status
            text = cells[index].strip()
            if STATUS_VALUES.get(text.casefold()) is None:
                errors.append((index, column, f"'{text}' is not a status (use {STATUS_HELP})"))
        for index, _, column in self.dates:
            text = cells[index].strip()
            if text and self.parse_date(text) is None:
                errors.append((index, column, f"'{text}' is not a date in the format {self.date_help}"))
        errors.sort(key=lambda error: error[0])
        return [RowError(line, column, reason, key or None) for _, column, reason in errors]


def is_email(text: str) -> bool:
    """A pragmatic check: one @, something before it, a dotted domain after it, no white space."""
    local, _, domain = text.rpartition("@")
    return (
        local != ""
        and "@" not in local
        and "." in domain
        and domain[0] != "."
        and domain[-1] != "."
        and ".." not in domain
        and " " not in text
        and text.isprintable()  # no tab, line break or other white space than the plain space
    )
