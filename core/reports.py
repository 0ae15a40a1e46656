"""The vocabulary of saved reports (SPEC 6), checked against the client's template when accounts.yaml is loaded.

Import everything from core.config, which re-exports this module.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
)

from core.config_base import (
    LMS_USER_FIELDS,
    TemplateConfig,
    _check_cron,
    _Strict,
)

# --- reports -----------------------------------------------------------------------------------------------------
#
# The vocabulary of saved reports (SPEC 6), checked against the client's template when accounts.yaml is loaded, so
# that export.queries only ever sees reports it can run. Columns and filter fields:
#
#   users        the LMS user fields (LMS_USER_FIELDS); ``user_status`` is another name for ``status`` (active or
#                suspended); ``manager_id`` is the manager's employee_id; ``group:<Type>`` is the user's group of one
#                of the template's group_types; ``custom:<Name>`` is one of the template's custom_fields, which may
#                also be written by its plain name when that is not already a column name.
#   completions  all of those, and course_code, course_name, completion_status, completed_at, expires_at, score.
#
# Group types and custom fields are matched case-insensitively and stored in the template's spelling. A column's
# header in the report file is the column as written, without the ``group:`` / ``custom:`` prefix.


class ColumnKind(enum.StrEnum):
    TEXT = "text"
    DATE = "date"
    NUMBER = "number"
    USER_STATUS = "user_status"
    COMPLETION_STATUS = "completion_status"


GROUP_PREFIX = "group:"
CUSTOM_PREFIX = "custom:"
USER_STATUS_VALUES = ("active", "suspended")
COMPLETION_STATUS_VALUES = ("completed", "in_progress", "not_started", "expired")
USER_REPORT_COLUMNS: dict[str, ColumnKind] = {
    **dict.fromkeys(LMS_USER_FIELDS, ColumnKind.TEXT),
    "status": ColumnKind.USER_STATUS,
    "user_status": ColumnKind.USER_STATUS,
    "start_date": ColumnKind.DATE,
    "end_date": ColumnKind.DATE,
}
COMPLETION_REPORT_COLUMNS: dict[str, ColumnKind] = {
    **USER_REPORT_COLUMNS,
    "course_code": ColumnKind.TEXT,
    "course_name": ColumnKind.TEXT,
    "completion_status": ColumnKind.COMPLETION_STATUS,
    "completed_at": ColumnKind.DATE,
    "expires_at": ColumnKind.DATE,
    "score": ColumnKind.NUMBER,
}
REPORT_COLUMNS = {"users": USER_REPORT_COLUMNS, "completions": COMPLETION_REPORT_COLUMNS}
_ANY_KIND = frozenset(ColumnKind)
_EMPTY_KINDS = frozenset({ColumnKind.TEXT, ColumnKind.DATE, ColumnKind.NUMBER})
FILTER_OPS: dict[str, frozenset[ColumnKind]] = {
    "eq": _ANY_KIND,
    "ne": _ANY_KIND,
    "in": _ANY_KIND,
    "not_in": _ANY_KIND,
    "contains": frozenset({ColumnKind.TEXT}),
    "before": frozenset({ColumnKind.DATE}),
    "after": frozenset({ColumnKind.DATE}),
    "within_days": frozenset({ColumnKind.DATE}),
    "is_empty": _EMPTY_KINDS,
    "is_not_empty": _EMPTY_KINDS,
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SCHEDULE_HELP = "daily, weekly:mon .. weekly:sun, monthly:1 .. monthly:28, or a cron expression"


def column_kind(source: str, name: str) -> ColumnKind | None:
    """The kind of a canonical report column of ``source`` (None when there is no such column)."""
    if name.startswith((GROUP_PREFIX, CUSTOM_PREFIX)):
        return ColumnKind.TEXT
    return REPORT_COLUMNS[source].get(name)


def column_label(column: str, columns: list[str]) -> str:
    """The header of ``column`` in a report file: without its ``group:``/``custom:`` prefix, unless another column
    of ``columns`` would then have the same header."""
    if not column.startswith((GROUP_PREFIX, CUSTOM_PREFIX)):
        return column
    bare = column.split(":", 1)[1]
    clash = sum(1 for other in columns if other == bare or other.split(":", 1)[-1] == bare)
    return bare if clash == 1 else column


def report_file_stem(name: str) -> str:
    """The report's name made safe for file systems: runs of anything but letters, digits, '.', '_' and '-'
    become one '_' ("Compliance Report (AU)" -> "Compliance_Report_AU")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")


def schedule_cron(schedule: str) -> str:
    """A report schedule as a five-field cron expression in local time: daily -> ``0 0 * * *``, weekly:mon ->
    ``0 0 * * mon``, monthly:1 -> ``0 0 1 * *``; a cron expression is returned as it is."""
    kind, _, argument = schedule.partition(":")
    if kind == "daily" and not argument:
        return "0 0 * * *"
    if kind == "weekly" and argument in WEEKDAYS:
        return f"0 0 * * {argument}"
    if kind == "monthly" and argument.isdigit():
        return f"0 0 {int(argument)} * *"
    return schedule


def _report_schedule(value: str) -> str:
    text = value.strip()
    keyword = text.lower()
    kind, sep, argument = keyword.partition(":")
    if keyword == "daily":
        return keyword
    if sep and kind == "weekly":
        if argument not in WEEKDAYS:
            raise ValueError(f"{value!r}: weekly takes a day of the week ({', '.join(WEEKDAYS)})")
        return keyword
    if sep and kind == "monthly":
        if not argument.isdigit() or not 1 <= int(argument) <= 31:
            raise ValueError(f"{value!r}: monthly takes a day of the month, 1 to 28")
        if int(argument) > 28:
            # Every month has its run: a day that February (or a 30-day month) lacks would silently skip months.
            raise ValueError(
                f"{value!r}: not every month has a day {int(argument)}, so some months would get no report; use "
                "monthly:1 (a report on the 1st covers the month before) or monthly:28"
            )
        return keyword
    if len(text.split()) != 5:
        raise ValueError(f"{value!r} is not a schedule ({_SCHEDULE_HELP})")
    return _check_cron(text)


class ReportFilter(_Strict):
    """One condition on the rows of a report. After loading, ``field`` is canonical (custom fields as
    ``custom:<Name>``, group types and custom fields in the template's spelling) and ``value`` is typed: a ``date``
    for date fields (or ``"today"``, or the name of another date field for before/after), a ``Decimal`` for score, a
    lower-case status, a list for in/not_in, an int for within_days, None for is_empty/is_not_empty."""

    field: str
    op: str
    value: Any = None


class ReportConfig(_Strict):
    name: str = Field(min_length=1, max_length=100)
    source: Literal["users", "completions"]
    columns: list[str] = Field(min_length=1)
    filters: list[ReportFilter] = []
    schedule: str = "daily"
    format: Literal["csv", "xlsx"] = "csv"
    environments: list[str] = Field(default=["production"], min_length=1)
    bom: bool = True

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not value.strip() or not report_file_stem(value):
            raise ValueError(f"{value!r}: a report name needs at least one letter or digit (it names files)")
        if "/" in value or "\\" in value or not value.isprintable():
            raise ValueError(f"{value!r}: a report name may not hold '/', '\\' or control characters (it names files)")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return _report_schedule(value)

    @property
    def file_stem(self) -> str:
        """The name made safe for file systems (``report_file_stem``)."""
        return report_file_stem(self.name)

    @property
    def header(self) -> list[str]:
        """The header line of the report file."""
        return [column_label(column, self.columns) for column in self.columns]


Problems = list[tuple[tuple[str | int, ...], str]]


def check_reports(
    reports: list[ReportConfig], template: TemplateConfig | None, accounts: Iterable[str]
) -> tuple[list[ReportConfig], Problems]:
    """Check a client's reports against its template and accounts: the canonical reports, and the problems at key
    paths relative to the client."""
    problems: Problems = []
    checked: list[ReportConfig] = []
    stems: dict[str, int] = {}
    accounts = list(accounts)
    for index, report in enumerate(reports):
        where: tuple[str | int, ...] = ("reports", index)
        stem = report.file_stem.casefold()
        if stem in stems:
            other = reports[stems[stem]].name
            same = "the same name" if other == report.name else f"a name that makes the same file names as {other!r}"
            problems.append(((*where, "name"), f"report {report.name!r}: report {stems[stem]} has {same}"))
        stems.setdefault(stem, index)
        for position, env in enumerate(report.environments):
            if env not in accounts:
                problems.append(
                    (
                        (*where, "environments", position),
                        f"report {report.name!r}: the client has no {env!r} account to deliver it to "
                        f"(accounts: {', '.join(accounts)})",
                    )
                )
        report_problems, canonical = _ReportCheck(report, template).run()
        problems.extend(((*where, *path), f"report {report.name!r}: {message}") for path, message in report_problems)
        checked.append(canonical)
    return checked, problems


class _ReportCheck:
    """The columns and filters of one report, against one template."""

    def __init__(self, report: ReportConfig, template: TemplateConfig | None) -> None:
        self.report = report
        self.columns = REPORT_COLUMNS[report.source]
        self.group_types = {name.casefold(): name for name in (template.group_types if template else [])}
        self.custom_fields = {name.casefold(): name for name in (template.custom_fields if template else [])}
        self.problems: Problems = []

    def run(self) -> tuple[Problems, ReportConfig]:
        columns: list[str] = []
        for index, column in enumerate(self.report.columns):
            canonical = self.resolve(column, ("columns", index), "column")
            if canonical is not None and canonical in columns:
                self.problems.append((("columns", index), f"column {column!r} is listed twice"))
            columns.append(canonical or column)
        filters = [self.check_filter(index, item) for index, item in enumerate(self.report.filters)]
        return self.problems, self.report.model_copy(update={"columns": columns, "filters": filters})

    def known(self) -> str:
        parts = [", ".join(self.columns)]
        if self.group_types:
            parts.append("group:" + " | group:".join(self.group_types.values()))
        if self.custom_fields:
            parts.append("custom:" + " | custom:".join(self.custom_fields.values()))
        return "; ".join(parts)

    def resolve(self, name: str, path: tuple[str | int, ...], what: str) -> str | None:
        """The canonical name of a column (None, with a problem recorded, when there is no such column)."""
        if name in self.columns:
            return name
        prefix, sep, rest = name.partition(":")
        if sep and prefix.strip().lower() == "group":
            found = self.group_types.get(rest.strip().casefold())
            if found is None:
                declared = ", ".join(self.group_types.values()) or "none"
                self.problems.append(
                    (path, f"unknown group type {rest!r} in {what} {name!r} (the template's: {declared})")
                )
                return None
            return GROUP_PREFIX + found
        if sep and prefix.strip().lower() == "custom":
            found = self.custom_fields.get(rest.strip().casefold())
            if found is None:
                declared = ", ".join(self.custom_fields.values()) or "none"
                self.problems.append(
                    (path, f"unknown custom field {rest!r} in {what} {name!r} (the template's: {declared})")
                )
                return None
            return CUSTOM_PREFIX + found
        if name.strip().casefold() in self.custom_fields:
            return CUSTOM_PREFIX + self.custom_fields[name.strip().casefold()]
        if name in COMPLETION_REPORT_COLUMNS:
            self.problems.append((path, f"{what} {name!r} exists only in reports of source completions"))
        else:
            self.problems.append(
                (path, f"unknown {what} {name!r} for source {self.report.source} (known: {self.known()})")
            )
        return None

    def check_filter(self, index: int, item: ReportFilter) -> ReportFilter:
        path: tuple[str | int, ...] = ("filters", index)
        field = self.resolve(item.field, (*path, "field"), "filter field")
        if item.op not in FILTER_OPS:
            self.problems.append(
                ((*path, "op"), f"unknown filter operator {item.op!r} (known: {', '.join(FILTER_OPS)})")
            )
            return item
        if field is None:
            return item
        kind = column_kind(self.report.source, field)
        assert kind is not None
        if kind not in FILTER_OPS[item.op]:
            fitting = ", ".join(op for op, kinds in FILTER_OPS.items() if kind in kinds)
            self.problems.append(
                ((*path, "op"), f"{item.op} does not apply to {item.field!r}, a {kind} field (use {fitting})")
            )
            return item
        try:
            value = self.filter_value(item.op, kind, item.value)
        except ValueError as exc:
            self.problems.append(((*path, "value"), f"filter on {item.field!r} ({item.op}): {exc}"))
            return item
        return ReportFilter(field=field, op=item.op, value=value)

    def filter_value(self, op: str, kind: ColumnKind, value: Any) -> Any:
        if op in ("is_empty", "is_not_empty"):
            if value is not None:
                raise ValueError(f"{op} takes no value (remove 'value: {value}')")
            return None
        if value is None:
            hint = " (use is_empty to find empty values)" if kind in _EMPTY_KINDS else ""
            raise ValueError(f"a value is required{hint}")
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{op} takes a list of values, e.g. [a, b]; got {value!r}")
            return [_scalar(kind, element) for element in value]
        if isinstance(value, list | dict):
            raise ValueError(f"{op} takes one value, not {value!r}" + (" (use in for a list)" if op == "eq" else ""))
        if op == "within_days":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"within_days takes a positive whole number of days; got {value!r}")
            return int(value)
        if op == "contains":
            if not isinstance(value, str) or not value:
                raise ValueError(f"contains takes some text; got {value!r}")
            return str(value)
        if op in ("before", "after") and isinstance(value, str):
            text = value.strip()
            if text.lower() == "today":
                return "today"
            if self.columns.get(text) == ColumnKind.DATE:
                return text
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                dates = ", ".join(name for name, kind in self.columns.items() if kind == ColumnKind.DATE)
                raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD), 'today' or a date field ({dates})")
        return _scalar(kind, value)


def _scalar(kind: ColumnKind, value: Any) -> Any:
    """One filter value, typed for a column of ``kind``; ValueError says what was expected."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise ValueError(f"{value!r} is not a {kind} value")
    if kind == ColumnKind.DATE:
        if isinstance(value, datetime):
            raise ValueError(f"{value!r}: give a date without a time (YYYY-MM-DD)")
        if isinstance(value, date):
            return date(value.year, value.month, value.day)
        try:
            return date.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None
    if kind == ColumnKind.NUMBER:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a number")
        return number
    if kind in (ColumnKind.USER_STATUS, ColumnKind.COMPLETION_STATUS):
        allowed = USER_STATUS_VALUES if kind == ColumnKind.USER_STATUS else COMPLETION_STATUS_VALUES
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"{value!r} is not a {kind.replace('_', ' ')} (one of {', '.join(allowed)})")
        return text
    if isinstance(value, int | float | Decimal):
        return str(value)  # employee_id: 12345 (quote values with leading zeros: YAML reads 007 as 7)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
