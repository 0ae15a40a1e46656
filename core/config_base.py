"""The building blocks of the configuration model: strict models, value types, and the import template.

Split from core.config so that core.reports can use them; import everything from core.config.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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
