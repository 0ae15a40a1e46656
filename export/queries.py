"""The rows of a saved report, streamed from one environment's database.

``report_rows`` turns a validated ``core.config.ReportConfig`` into one SQLAlchemy Core statement over the user store
(core.models) and the training records (core.training), and returns the header and an iterator of row tuples:

    header, rows = report_rows(connection, "acme", report, today=date.today())
    for row in rows:       # ("000123", "Ada", "Sales", "FIRE-101", date(2026, 11, 3), Decimal("92.50"), ...)
        ...

- One statement, whatever the columns: every group type and custom field the report names (as a column or in a
  filter) is one LEFT JOIN onto its link table, keyed by the id looked up beforehand, never a query per row.
- Rows stream: on PostgreSQL through a server-side cursor (``stream_results``), on SQLite as the engine steps through
  the result. Nothing holds more than one batch of rows, however large the report.
- Values are ``str``, ``datetime.date`` (so that writers can make real date cells), ``decimal.Decimal`` (score) or
  None. ``status`` / ``user_status`` is "active" or "suspended"; ``manager_id`` is the manager's employee_id.
- The statement runs through SQLAlchemy (binds, caching, errors), but rows are read from its DBAPI cursor a batch at a
  time and only the columns whose type needs it (dates on SQLite, which stores ISO text) go through SQLAlchemy's own
  result processor, column by column: the values are exactly SQLAlchemy's, without building a ``Row`` per row.
  ``ReportRows.column_batches()`` hands the same values over a batch at a time, column by column (the csv writer's
  fast path).
- Order is deterministic: by employee_id (then course code for source completions), ties broken by row id.

Filter semantics (the vocabulary is core.config's): ``eq``/``in`` compare exactly; ``ne``/``not_in`` keep rows whose
value is empty too ("not in Sales" includes people with no Department); ``contains`` is case-insensitive;
``before``/``after`` are strict and compare with an ISO date, ``today`` or another date field; ``within_days: N``
keeps dates from N days before ``today`` to N days after it; ``is_empty`` matches NULL and, for text, ''.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import date, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Select, and_, func, null, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

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

BATCH = 500
"""Rows fetched per round trip (and held at most) while streaming. Kept under the garbage collector's first
threshold (700 new container objects): a batch's row tuples are then freed before a collection can start, instead of
being walked by collections while alive (5,000-row batches spent about a second per million rows in the collector)."""

_USERS = User.__table__
_USER_FIELDS = {
    "employee_id", "username", "first_name", "last_name", "email", "status", "start_date", "end_date", "phone",
    "job_title",
}  # fmt: skip
_COMPLETION_FIELDS = {"completion_status", "completed_at", "expires_at", "score"}
_COURSE_FIELDS = {"course_code": "code", "course_name": "name"}


def report_rows(
    connection_or_session: Connection | Session, client: str, report: ReportConfig, *, today: date
) -> tuple[list[str], ReportRows]:
    """The header and the rows of ``report`` for ``client``; ``today`` is the day ``within_days`` and ``today``
    count from (the local date of generation). The statement runs at once; the rows stream as they are consumed, on
    the caller's connection (and within its transaction), so consume or close the iterator before that ends."""
    connection = (
        connection_or_session.connection() if isinstance(connection_or_session, Session) else connection_or_session
    )
    statement = report_statement(connection, client, report, today=today)
    return report.header, ReportRows(connection, statement)


class ReportRows(Iterator[tuple[Any, ...]]):
    """The rows of one report as tuples, streamed from the cursor a batch (``BATCH`` rows) at a time.

    Iterate it for rows, or call ``column_batches()`` once, before taking any row, for the same values a batch at a
    time as one sequence per column. ``column_types`` gives the Python type of each column's values (``str``,
    ``date``, ``Decimal``; None for a column that is always empty), a hint that lets a writer plan each column once.
    The cursor is closed when the rows run out or on ``close()``.
    """

    def __init__(self, connection: Connection, statement: Select[Any]) -> None:
        dialect = connection.dialect
        # PostgreSQL: a server-side cursor, or the driver would fetch the whole report into memory first.
        options = {"stream_results": True, "yield_per": BATCH} if dialect.supports_server_side_cursors else {}
        result = connection.execute(statement, execution_options=options)
        columns = list(statement.selected_columns)
        description = result.cursor.description or []
        # Exactly the processors SQLAlchemy would apply (the DBAPI type code decides some, e.g. psycopg numerics).
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, entry[1])
            for column, entry in zip(columns, description, strict=True)
        ]
        self._converters: list[tuple[int, Callable[[Any], Any]]] = [
            (index, processor) for index, processor in enumerate(processors) if processor is not None
        ]
        self.column_types: tuple[type | None, ...] = tuple(_python_type(column.type) for column in columns)
        self._result = result
        self._batches = self._fetch()
        self._rows: Iterator[tuple[Any, ...]] | None = None

    def _fetch(self) -> Generator[list[Any], None, None]:
        """The cursor's rows, ``BATCH`` at a time, as the driver gives them (tuples)."""
        result = self._result
        # Through the result's fetch strategy, as Result.fetchmany() does, not the cursor itself: on PostgreSQL
        # SQLAlchemy has already buffered the first row, the strategy turns driver errors into SQLAlchemy's
        # (OperationalError, ...), and it is replaced by an empty one once the cursor runs out (hence read each time).
        try:
            while batch := result.cursor_strategy.fetchmany(result, result.cursor, BATCH):
                yield batch
        finally:
            result.close()

    def column_batches(self) -> Iterator[list[Sequence[Any]]]:
        """The rows a batch at a time, as one sequence of values per column (the values converted as rows are)."""
        if self._rows is not None:
            raise RuntimeError("column_batches() after rows were taken: use one or the other")
        self._rows = iter(())
        return self._columns()

    def _columns(self) -> Iterator[list[Sequence[Any]]]:
        converters = self._converters
        for batch in self._batches:
            columns: list[Sequence[Any]] = list(zip(*batch, strict=True))
            for index, convert in converters:
                columns[index] = list(map(convert, columns[index]))
            yield columns

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        if self._rows is None:
            # The driver's tuples as they are when no column needs converting; otherwise rebuilt from the columns.
            self._rows = (
                chain.from_iterable(zip(*columns, strict=True) for columns in self._columns())
                if self._converters
                else chain.from_iterable(self._batches)
            )
        return self._rows

    def __next__(self) -> tuple[Any, ...]:
        return next(iter(self))

    def close(self) -> None:
        """Close the cursor (rows not taken yet are dropped)."""
        self._batches.close()


def _python_type(type_: Any) -> type | None:
    """The Python type of a column's values; None for null() (a column that is always NULL) or an unknown type."""
    if isinstance(type_, NullType):
        return None
    try:
        python_type: type = type_.python_type
    except NotImplementedError:
        return None
    return python_type


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
