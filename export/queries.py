"""The rows of a saved report, streamed from one environment's database.

``report_rows`` turns a validated ``core.config.ReportConfig`` into one SQLAlchemy Core statement over the user store
(core.models) and the training records (core.training), and returns the header and an iterator of row tuples:

    header, rows = report_rows(connection, "acme", report, today=date.today())
    for row in rows:       # ("000123", "Ada", "Sales", "FIRE-101", date(2026, 11, 3), Decimal("92.50"), ...)
        ...

- One statement, whatever the columns: every group type and custom field the report names (as a column or in a
  filter) is one LEFT JOIN onto its link table, keyed by the id looked up beforehand, never a query per row.
- Rows stream: on PostgreSQL through a server-side cursor (``yield_per``), on SQLite as the engine steps through the
  result. Nothing holds more than one batch of rows, however large the report.
- Values are ``str``, ``datetime.date`` (so that writers can make real date cells), ``decimal.Decimal`` (score) or
  None. ``status`` / ``user_status`` is "active" or "suspended"; ``manager_id`` is the manager's employee_id.
- Order is deterministic: by employee_id (then course code for source completions), ties broken by row id.

Filter semantics (the vocabulary is core.config's): ``eq``/``in`` compare exactly; ``ne``/``not_in`` keep rows whose
value is empty too ("not in Sales" includes people with no Department); ``contains`` is case-insensitive;
``before``/``after`` are strict and compare with an ISO date, ``today`` or another date field; ``within_days: N``
keeps dates from N days before ``today`` to N days after it; ``is_empty`` matches NULL and, for text, ''.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Select, and_, func, null, or_, select
from sqlalchemy.orm import Session

from core.config import (
    CUSTOM_PREFIX,
    GROUP_PREFIX,
    ColumnKind,
    ReportConfig,
    ReportFilter,
    column_kind,
)
from core.models import CustomField, CustomValue, Group, GroupType, Membership, User
from core.training import Completion, Course

BATCH = 5000
"""Rows fetched per round trip (and held at most) while streaming."""

_USERS = User.__table__
_USER_FIELDS = {
    "employee_id", "username", "first_name", "last_name", "email", "status", "start_date", "end_date", "phone",
    "job_title",
}  # fmt: skip
_COMPLETION_FIELDS = {"completion_status", "completed_at", "expires_at", "score"}
_COURSE_FIELDS = {"course_code": "code", "course_name": "name"}


def report_rows(
    connection_or_session: Connection | Session, client: str, report: ReportConfig, *, today: date
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """The header and the rows of ``report`` for ``client``; ``today`` is the day ``within_days`` and ``today``
    count from (the local date of generation). The statement runs at once; the rows stream as they are consumed, on
    the caller's connection (and within its transaction), so consume or close the iterator before that ends."""
    connection = (
        connection_or_session.connection() if isinstance(connection_or_session, Session) else connection_or_session
    )
    statement = report_statement(connection, client, report, today=today)
    result = connection.execute(statement, execution_options={"yield_per": BATCH})
    return report.header, _stream(result)


def _stream(result: Any) -> Iterator[tuple[Any, ...]]:
    try:
        for batch in result.partitions():
            yield from map(tuple, batch)
    finally:
        result.close()


def report_statement(connection: Connection, client: str, report: ReportConfig, *, today: date) -> Select[Any]:
    """The SELECT of ``report`` (the ids of its group types and custom fields are looked up on ``connection``)."""
    return _Query(connection, client, report, today).build()


class _Query:
    """The joins one report needs, made once each, and the expressions of its columns and filters."""

    def __init__(self, connection: Connection, client: str, report: ReportConfig, today: date) -> None:
        self.client = client
        self.report = report
        self.today = today
        self.user = _USERS.alias("u")
        names = [*report.columns, *(item.field for item in report.filters)]
        self.group_ids = _ids(connection, GroupType, client, _suffixes(names, GROUP_PREFIX))
        self.field_ids = _ids(connection, CustomField, client, _suffixes(names, CUSTOM_PREFIX))
        self.from_: FromClause = self.user
        if report.source == "completions":
            self.completion = Completion.__table__.alias("c")
            self.course = Course.__table__.alias("co")
            # From the users, in employee_id order (the index on (client, employee_id)), to each user's completions
            # (the unique index on (user_id, course_id)): SQLite then sorts only each user's few courses, not the
            # whole report, and reads the completions of one user together.
            self.from_ = self.user.join(self.completion, self.completion.c.user_id == self.user.c.id).join(
                self.course, self.course.c.id == self.completion.c.course_id
            )
        self.joined: dict[str, ColumnElement[Any]] = {}

    def build(self) -> Select[Any]:
        columns = [self.column(name).label(f"c{index}") for index, name in enumerate(self.report.columns)]
        conditions = [self.condition(item) for item in self.report.filters]
        # (client, employee_id) is unique, and so is (user, course) and (client, course code): the order is total.
        order = [self.user.c.employee_id]
        if self.report.source == "completions":
            order.append(self.course.c.code)
        statement = select(*columns).select_from(self.from_).where(self.user.c.client == self.client, *conditions)
        return statement.order_by(*order)

    def column(self, name: str) -> ColumnElement[Any]:
        """The expression of one canonical column, joining what it needs the first time."""
        if name in self.joined:
            return self.joined[name]
        expression: ColumnElement[Any]
        if name in ("status", "user_status"):
            expression = self.user.c.status
        elif name in _USER_FIELDS:
            expression = self.user.c[name]
        elif name == "manager_id":
            manager = _USERS.alias("m")
            self.from_ = self.from_.outerjoin(manager, manager.c.id == self.user.c.manager_id)
            expression = manager.c.employee_id
        elif name.startswith(GROUP_PREFIX):
            expression = self._group(name.removeprefix(GROUP_PREFIX))
        elif name.startswith(CUSTOM_PREFIX):
            expression = self._custom(name.removeprefix(CUSTOM_PREFIX))
        elif self.report.source == "completions" and name in _COURSE_FIELDS:
            expression = self.course.c[_COURSE_FIELDS[name]]
        elif self.report.source == "completions" and name in _COMPLETION_FIELDS:
            expression = self.completion.c[name]
        else:
            raise ValueError(
                f"report {self.report.name!r}: no column {name!r} for source {self.report.source} (load reports "
                "with core.config, which checks them and names custom fields custom:<Name>)"
            )
        self.joined[name] = expression
        return expression

    def _group(self, group_type: str) -> ColumnElement[Any]:
        type_id = self.group_ids.get(group_type)
        if type_id is None:  # nothing imported of this type yet: every user has none
            return null()
        index = len(self.joined)
        membership = Membership.__table__.alias(f"ms{index}")
        group = Group.__table__.alias(f"g{index}")
        self.from_ = self.from_.outerjoin(
            membership, and_(membership.c.user_id == self.user.c.id, membership.c.group_type_id == type_id)
        ).outerjoin(group, group.c.id == membership.c.group_id)
        return group.c.name

    def _custom(self, field: str) -> ColumnElement[Any]:
        field_id = self.field_ids.get(field)
        if field_id is None:
            return null()
        value = CustomValue.__table__.alias(f"cv{len(self.joined)}")
        self.from_ = self.from_.outerjoin(value, and_(value.c.user_id == self.user.c.id, value.c.field_id == field_id))
        return value.c.value

    def condition(self, item: ReportFilter) -> ColumnElement[bool]:
        """The WHERE condition of one filter (its value already typed by core.config)."""
        column = self.column(item.field)
        kind = column_kind(self.report.source, item.field)
        value = item.value
        match item.op:
            case "eq":
                return column == value
            case "ne":
                return column.is_distinct_from(value)
            case "in":
                return column.in_(value)
            case "not_in":
                return or_(column.is_(None), column.not_in(value))
            case "contains":
                return func.lower(column).contains(str(value).lower(), autoescape=True)
            case "before":
                return column < self._date(value)
            case "after":
                return column > self._date(value)
            case "within_days":
                days = timedelta(days=int(value))
                return column.between(self.today - days, self.today + days)
            case "is_empty":
                return or_(column.is_(None), column == "") if kind == ColumnKind.TEXT else column.is_(None)
            case "is_not_empty":
                return and_(column.is_not(None), column != "") if kind == ColumnKind.TEXT else column.is_not(None)
        raise ValueError(f"report {self.report.name!r}: unknown filter operator {item.op!r}")

    def _date(self, value: Any) -> Any:
        """A before/after operand: a date, ``today``, or another date column."""
        if isinstance(value, date):
            return value
        if value == "today":
            return self.today
        return self.column(str(value))


def _suffixes(names: list[str], prefix: str) -> set[str]:
    return {name.removeprefix(prefix) for name in names if name.startswith(prefix)}


def _ids(
    connection: Connection, model: type[GroupType] | type[CustomField], client: str, names: set[str]
) -> dict[str, int]:
    """Name -> id of the client's group types or custom fields among ``names`` (absent: none imported yet)."""
    if not names:
        return {}
    table = model.__table__
    rows = connection.execute(
        select(table.c.name, table.c.id).where(table.c.client == client, table.c.name.in_(sorted(names)))
    )
    return {name: identifier for name, identifier in rows}
