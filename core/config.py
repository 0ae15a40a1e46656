"""The configuration model of accounts.yaml (SPEC section 2).

The file is read once, at the edge (``load_config``), validated in full, and handed down as a frozen ``Config``.
Every mistake is reported with the file, the line and the key path, e.g.::

    accounts.yaml:14: clients.acme.accounts.production.allowed_ips[1]: '300.1.2.3' is not an IP address or network
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from core.errors import ConfigError

DEFAULT_CONFIG = Path("accounts.yaml")
RESERVED_DIR_NAMES = frozenset({"spool", "archive", "outbox", "tls", "incoming", "state"})
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


# --- value types -------------------------------------------------------------------------------------------------


class _CrossCheckError(ValueError):
    """Several problems, each at a key path relative to where the validator runs (so each gets its own line)."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a client or an environment (they name folders), or None when it can."""
    if not _NAME.match(name):
        return "a name must be 1 to 63 lower-case letters, digits, '_' or '-' (it names folders)"
    if name in RESERVED_DIR_NAMES:
        return "this name is reserved for lcsync's internal folders"
    return None


def _parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = str(value).strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:203.0.113.10 means 203.0.113.10
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match or (match.group(2) is not None and match.group(2).lower() not in _SIZE_UNITS):
        raise ValueError(f"{value!r} is not a size (examples: 1GiB, 500MB, 1048576)")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 10m, 2h, 1d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _check_cron(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '5 0 * * *'): {exc}") from None
    return value


IPNetwork = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_parse_network)]
ByteSize = Annotated[int, BeforeValidator(_parse_size)]
Duration = Annotated[float, BeforeValidator(_parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- server ------------------------------------------------------------------------------------------------------


class TlsConfig(_Strict):
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key, or neither (a self-signed pair is then generated)")
        return self


class BanConfig(_Strict):
    failures: int = Field(default=5, ge=1)
    within: Duration = 600.0
    for_: Duration = Field(default=1800.0, alias="for")


class ListenAddress(_Strict):
    host: str
    port: int


def _parse_listen(value: Any) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    text = str(value).strip()
    match = re.match(r"^\[(?P<h6>[0-9a-fA-F:.]+)\]:(?P<p6>\d+)$|^(?P<h4>[^:\[\]]+):(?P<p4>\d+)$", text)
    if not match:
        raise ValueError(f"{value!r} is not host:port (examples: 127.0.0.1:2121, [::]:21)")
    host = match.group("h6") or match.group("h4")
    port = int(match.group("p6") or match.group("p4"))
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    return ListenAddress(host=host, port=port)


def _parse_port_range(value: Any) -> tuple[int, int]:
    match = re.match(r"^\s*(\d+)\s*-\s*(\d+)\s*$", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a port range (example: 60000-60099)")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: ports must satisfy 1024 <= first <= last <= 65535")
    return low, high


class ServerConfig(_Strict):
    listen: list[Annotated[ListenAddress, BeforeValidator(_parse_listen)]] = Field(
        default_factory=lambda: [ListenAddress(host="127.0.0.1", port=2121)], min_length=1
    )
    passive_ports: Annotated[tuple[int, int], BeforeValidator(_parse_port_range)] = (60000, 60099)
    masquerade_address: str | None = None
    tls: TlsConfig = TlsConfig()
    max_connections: int = Field(default=256, ge=1)
    max_connections_per_ip: int = Field(default=16, ge=1)
    ban: BanConfig = BanConfig()
    max_upload_size: ByteSize = 1024**3
    http: str | None = "127.0.0.1:9121"
    idle_timeout: Duration = 300.0
    data_timeout: Duration = 300.0

    @field_validator("masquerade_address")
    @classmethod
    def _masquerade_is_ipv4(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address (PASV replies carry IPv4 only)") from None
        return value

    @field_validator("http")
    @classmethod
    def _http_listen(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_listen(value)
        return value


# --- environments and clients --------------------------------------------------------------------------------


class EnvironmentConfig(_Strict):
    database: str
    require_tls: bool = False
    import_schedule: str = "on_arrival"

    @field_validator("import_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return value if value == "on_arrival" else _check_cron(value)

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.replace("{data_dir}", "/data"))
        except ArgumentError:
            raise ValueError(
                "not a database URL (examples: sqlite:///{data_dir}/sandbox.db, postgresql+psycopg://user@host/db)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"{url.get_backend_name()!r} is not supported: use sqlite or postgresql+psycopg")
        return value


def _default_environments() -> dict[str, EnvironmentConfig]:
    return {
        "sandbox": EnvironmentConfig(database="sqlite:///{data_dir}/sandbox.db"),
        "production": EnvironmentConfig(
            database="sqlite:///{data_dir}/production.db", require_tls=True, import_schedule="0 0 * * *"
        ),
    }


class AccountConfig(_Strict):
    username: str = Field(min_length=1, max_length=64)
    password_hash: str
    allowed_ips: list[IPNetwork] | None = None

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._@-]+", value):
            raise ValueError(f"{value!r}: a username may hold letters, digits and . _ @ - only")
        return value

    @field_validator("password_hash")
    @classmethod
    def _argon2id(cls, value: str) -> str:
        if value.startswith("$argon2id$"):
            return value
        if value.startswith("$"):
            raise ValueError("not an argon2id hash; make one with `lcsync hash-password`")
        raise ValueError(
            "looks like a plaintext password, which must never be stored; "
            "put the argon2id hash from `lcsync hash-password` here"
        )


LMS_USER_FIELDS = (
    "employee_id", "username", "first_name", "last_name", "email", "status",
    "manager_id", "start_date", "end_date", "phone", "job_title",
)  # fmt: skip


class TemplateConfig(_Strict):
    key: str
    columns: dict[str, str]
    group_types: list[str] = []
    custom_fields: list[str] = []
    required: list[str]
    date_format: str = "%d/%m/%Y"
    delimiter: str | None = None
    mode: Literal["full", "delta"] = "full"
    max_suspend_percent: float = Field(default=10.0, ge=0, le=100)
    on_row_error: Literal["skip", "reject"] = "skip"

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        known = ", ".join(LMS_USER_FIELDS)
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((header,), f"column {header!r} maps to unknown LMS field {field!r} (known: {known})")
            for header, field in value.items()
            if field not in LMS_USER_FIELDS
        ]
        if problems:
            raise _CrossCheckError(problems)
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and value not in (",", ";", "\t", "|"):
            raise ValueError(f"{value!r} is not a supported delimiter (one of , ; | or a tab)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TemplateConfig:
        mapped = set(self.columns.values())
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.key not in mapped:
            problems.append((("key",), f"{self.key!r} is not one of the LMS fields mapped in columns"))
        for index, name in enumerate(self.required):
            if name not in mapped:
                problems.append((("required", index), f"required field {name!r} is not mapped by any column"))
        if problems:
            raise _CrossCheckError(problems)
        return self


class ImportConfig(_Strict):
    file_pattern: str = Field(min_length=1)
    template: TemplateConfig

    @field_validator("file_pattern")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith("."):
            raise ValueError(f"{value!r}: a file pattern names files in upload/, without folders or a leading dot")
        if value.lower().endswith(TEMPORARY_SUFFIXES):
            raise ValueError(
                f"{value!r}: names ending {', '.join(TEMPORARY_SUFFIXES)} are reserved for temporary files"
            )
        return value


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


class ClientConfig(_Strict):
    name: str | None = None
    allowed_ips: list[IPNetwork] = []
    accounts: dict[str, AccountConfig] = Field(min_length=1)
    import_: ImportConfig | None = Field(None, alias="import")
    reports: list[ReportConfig] = []

    @model_validator(mode="after")
    def _reports_fit(self) -> ClientConfig:
        """Report columns and filters must exist in the client's template; names unique; environments accounts."""
        if self.reports:
            template = self.import_.template if self.import_ is not None else None
            reports, problems = check_reports(self.reports, template, self.accounts)
            if problems:
                raise _CrossCheckError(problems)
            object.__setattr__(self, "reports", reports)  # the canonical columns and typed filter values
        return self

    def is_import_name(self, filename: str) -> bool:
        """Whether ``filename`` is an intended User Data file name (file_pattern, case-insensitively)."""
        if self.import_ is None or is_temporary_name(filename):
            return False
        return fnmatch.fnmatchcase(filename.lower(), self.import_.file_pattern.lower())


def is_temporary_name(filename: str) -> bool:
    """Names that clients give a file while it is being uploaded (WinSCP .filepart, rclone/lftp .part, .tmp)."""
    return filename.lower().endswith(TEMPORARY_SUFFIXES)


class Config(_Strict):
    timezone: str = "Australia/Melbourne"
    data_dir: Path = Path("./var")
    server: ServerConfig = ServerConfig()
    delivery_schedule: str = "5 0 * * *"
    retention_days: int = Field(default=30, ge=1)
    archive_days: int = Field(default=90, ge=1)
    environments: dict[str, EnvironmentConfig] = Field(default_factory=_default_environments, min_length=1)
    clients: dict[str, ClientConfig]
    source: Path | None = Field(None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name (example: Australia/Melbourne)") from None
        return value

    @field_validator("delivery_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)

    @field_validator("environments", "clients")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((name,), problem) for name in value if (problem := name_problem(str(name)))
        ]
        if problems:
            raise _CrossCheckError(problems)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, tuple[str, str]] = {}
        for client_id, client in self.clients.items():
            for env, account in client.accounts.items():
                where: tuple[str | int, ...] = ("clients", client_id, "accounts", env)
                if env not in self.environments:
                    known = ", ".join(self.environments)
                    problems.append((where, f"unknown environment {env!r} (known: {known})"))
                other = seen.get(account.username.lower())
                if other:
                    problems.append(
                        (
                            (*where, "username"),
                            f"{account.username!r} is already the username of {other[0]}/{other[1]}",
                        )
                    )
                seen[account.username.lower()] = (client_id, env)
            for index, report in enumerate(client.reports):
                for env in report.environments:
                    if env not in self.environments:
                        problems.append(
                            (
                                ("clients", client_id, "reports", index, "environments"),
                                f"unknown environment {env!r}",
                            )
                        )
        if problems:
            raise _CrossCheckError(problems)
        return self

    # --- derived values --------------------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def database_url(self, env: str) -> str:
        return self.environments[env].database.replace("{data_dir}", str(self.data_dir))

    def accounts(self) -> Iterator[tuple[str, str, AccountConfig]]:
        """Every (client id, environment, account)."""
        for client_id, client in self.clients.items():
            for env, account in client.accounts.items():
                yield client_id, env, account

    def allowed_networks(self, client_id: str, env: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        client = self.clients[client_id]
        account = client.accounts[env]
        return list(account.allowed_ips if account.allowed_ips is not None else client.allowed_ips)


# --- loading -----------------------------------------------------------------------------------------------------


def config_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The configuration file: --config, else $LCSYNC_CONFIG, else ./accounts.yaml."""
    if explicit:
        return Path(explicit)
    return Path(environ.get("LCSYNC_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate one accounts.yaml. Raises ConfigError listing every mistake with its line and key path.

    A relative ``data_dir`` is taken relative to the configuration file's folder; ``LCSYNC_DATA_DIR`` overrides it
    (a relative one is taken relative to the current folder, as any path given on a command line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set --config or LCSYNC_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return parse_config(text, path, environ)


class _TextDates(RoundTripConstructor):
    """Reads 2026-01-31 as text, not a date: the report checks then say which line holds an impossible date
    (ruamel would raise a bare ValueError for 2026-13-01) and parse the possible ones themselves."""


_TextDates.add_constructor("tag:yaml.org,2002:timestamp", _TextDates.construct_yaml_str)


def parse_config(text: str, path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    yaml = YAML(typ="rt")
    yaml.Constructor = _TextDates
    try:
        document = yaml.load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        found = re.match(r'found duplicate key "(.*?)" with value', exc.problem or "")
        key = f" {found.group(1)!r}" if found else ""
        raise ConfigError(f"{path}{line}: duplicate key{key}: a key may appear only once in a mapping") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"{path}:1: the file must be a mapping with at least a 'clients' key")
    data: dict[str, Any] = dict(document)
    if environ.get("LCSYNC_DATA_DIR"):
        data["data_dir"] = environ["LCSYNC_DATA_DIR"]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, document, path)) from None
    base = Path.cwd() if environ.get("LCSYNC_DATA_DIR") else path.parent
    data_dir = config.data_dir if config.data_dir.is_absolute() else (base / config.data_dir)
    return config.model_copy(update={"data_dir": Path(os.path.normpath(data_dir.absolute())), "source": path})


def _describe(exc: ValidationError, document: Any, path: Path) -> list[str]:
    """One line per problem, in file order."""
    problems: list[tuple[int, str]] = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not isinstance(part, str) or not part.startswith("function-"))
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossCheckError):
            for where, message in ctx_error.problems:
                problems.append(_line(path, document, (*loc, *where), message))
            continue
        if loc and loc[-1] == "password_hash" and error["type"] != "value_error":
            message = "must be the argon2id hash (a string) from `lcsync hash-password`"
        else:
            message = _message(error)
        problems.append(_line(path, document, loc, message))
    return [text for _, text in sorted(problems, key=lambda problem: problem[0])]


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        return f"{error['input']!r}: {message[0].lower()}{message[1:]}"
    return message


def _line(path: Path, document: Any, loc: tuple[Any, ...], message: str) -> tuple[int, str]:
    """The line number (0 when unknown) and the text of one problem."""
    key_path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    line = _find_line(document, loc)
    where = f"{path}:{line}" if line else str(path)
    return line or 0, f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}"


def _find_line(document: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest key of ``loc`` that exists in the YAML document."""
    node, line = document, None
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, Mapping) and part in node:
                if lc is not None:
                    line = lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                if lc is not None:
                    line = lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and getattr(document, "lc", None) is not None:
        return int(document.lc.line) + 1
    return line
