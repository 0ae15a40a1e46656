"""The values that flow through the import pipeline: rows read from a User Data file, row errors, and outcomes.

    reader (pure)  ->  validate (pure)  ->  apply (the only writer)  ->  results (the client's result file)

See docs/design/import.md for how the stages fit together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

FieldValue = str | date | None


class Outcome(enum.StrEnum):
    """What happened to one input row (or, for SUSPENDED, to a user absent from a full file)."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REACTIVATED = "reactivated"
    ERROR = "error"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem with one row. ``line`` is the file line where the record starts (the header is line 1);
    ``column`` is the header as written in the file, or None when the problem is the row as a whole."""

    line: int
    column: str | None
    reason: str
    key: str | None = None


@dataclass(slots=True)
class UserRow:
    """One record of a User Data file, converted to LMS values.

    ``fields`` maps LMS field names (core.config.LMS_USER_FIELDS) to values: text stripped of surrounding spaces,
    ``start_date``/``end_date`` as ``date``, ``status`` as "active" or "suspended", and None for an empty cell.
    Only the fields the template maps are present. ``groups`` maps each of the template's group types to the group
    named in the row (None: no group of that type); ``custom`` maps each custom field to its value.
    """

    line: int
    key: str
    fields: dict[str, FieldValue]
    groups: dict[str, str | None] = field(default_factory=dict)
    custom: dict[str, str | None] = field(default_factory=dict)


class RowOutcome(NamedTuple):
    """The outcome of one applied row (or suspended user), as the result file reports it. A named tuple: the
    applier makes one per row, a million for a large file."""

    line: int | None  # None for a user suspended because it was absent from a full file
    key: str
    outcome: Outcome
    reason: str = ""
