"""export.queries.report_rows against a seeded store (SQLite always, PostgreSQL when configured): every column kind,
every filter operator, the completions joins, order, and streaming."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from core.config import ReportConfig, ReportFilter, TemplateConfig, check_reports
from core.db import make_engine, upgrade
from core.models import CustomField, CustomValue, Group, GroupType, Membership, User
from core.training import Completion, Course
from export.queries import BATCH, report_rows, report_statement

TODAY = date(2026, 6, 1)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
TEMPLATE = TemplateConfig(
    key="employee_id",
    columns={"Employee ID": "employee_id"},
    group_types=["Department", "Location", "Position"],  # Position: declared, never imported
    custom_fields=["Cost Centre"],
    required=["employee_id"],
)


def make_report(source: str, columns: list[str], filters: list[dict[str, Any]] | None = None) -> ReportConfig:
    """A report as accounts.yaml would give it: checked against TEMPLATE, columns canonical, values typed."""
    raw = ReportConfig(
        name="test", source=source, columns=columns, filters=[ReportFilter(**item) for item in filters or []]
    )
    (report,), problems = check_reports([raw], TEMPLATE, ["production"])
    assert problems == []
    return report


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def user(id: int, client: str, employee_id: str, first: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": id, "client": client, "employee_id": employee_id, "first_name": first, "last_name": f"{first}son",
        "email": f"{first.lower()}@example.com", "status": "active", "manager_id": None, "start_date": None,
        "end_date": None, "phone": None, "job_title": None, "username": None, "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip
    values.update(fields)
    return values


@pytest.fixture
def store(engine: Engine) -> Engine:
    """acme: E001 Ada (Sales, Melbourne, CC-1), E002 Bob (Support, manager E001, no email), E003 Cy (suspended,
    Sales, Sydney, CC-2), E004 Di (no groups, job title '=cmd'); globex: G001 in a Sales of its own. Courses C1 Fire
    and C2 Privacy (acme), X1 (globex)."""
    with engine.begin() as connection:
        connection.execute(
            insert(User),
            [
                user(1, "acme", "E001", "Ada", start_date=date(2020, 1, 15), phone="0400 000 001"),
                user(2, "acme", "E002", "Bob", email=None, manager_id=1, start_date=date(2026, 5, 20)),
                user(3, "acme", "E003", "Cy", status="suspended", end_date=date(2026, 5, 1)),
                user(4, "acme", "E004", "Di", job_title="=cmd"),
                user(5, "globex", "G001", "Gus"),
            ],
        )
        connection.execute(
            insert(GroupType),
            [
                {"id": 1, "client": "acme", "name": "Department"},
                {"id": 2, "client": "acme", "name": "Location"},
                {"id": 3, "client": "globex", "name": "Department"},
            ],
        )
        connection.execute(
            insert(Group),
            [
                {"id": 1, "group_type_id": 1, "name": "Sales"},
                {"id": 2, "group_type_id": 1, "name": "Support"},
                {"id": 3, "group_type_id": 2, "name": "Melbourne"},
                {"id": 4, "group_type_id": 2, "name": "Sydney"},
                {"id": 5, "group_type_id": 3, "name": "Sales"},
            ],
        )
        connection.execute(
            insert(Membership),
            [
                {"user_id": 1, "group_type_id": 1, "group_id": 1},
                {"user_id": 1, "group_type_id": 2, "group_id": 3},
                {"user_id": 2, "group_type_id": 1, "group_id": 2},
                {"user_id": 3, "group_type_id": 1, "group_id": 1},
                {"user_id": 3, "group_type_id": 2, "group_id": 4},
                {"user_id": 5, "group_type_id": 3, "group_id": 5},
            ],
        )
        connection.execute(insert(CustomField), [{"id": 1, "client": "acme", "name": "Cost Centre"}])
        connection.execute(
            insert(CustomValue),
            [{"user_id": 1, "field_id": 1, "value": "CC-1"}, {"user_id": 3, "field_id": 1, "value": "CC-2"}],
        )
        connection.execute(
            insert(Course),
            [
                {"id": 1, "client": "acme", "code": "C2", "name": "Privacy"},
                {"id": 2, "client": "acme", "code": "C1", "name": "Fire"},
                {"id": 3, "client": "globex", "code": "X1", "name": "Globex course"},
            ],
        )
        completion = {"completed_at": None, "expires_at": None, "score": None, "updated_at": NOW}
        connection.execute(
            insert(Completion),
            [
                {**completion, "client": "acme", "user_id": 1, "course_id": 1, "completion_status": "in_progress"},
                {**completion, "client": "acme", "user_id": 1, "course_id": 2, "completion_status": "completed",
                 "completed_at": date(2026, 5, 20), "expires_at": date(2027, 5, 20), "score": Decimal("90.50")},
                {**completion, "client": "acme", "user_id": 2, "course_id": 2, "completion_status": "expired",
                 "completed_at": date(2025, 1, 1), "expires_at": date(2026, 1, 1), "score": Decimal("70")},
                {**completion, "client": "acme", "user_id": 3, "course_id": 1, "completion_status": "completed",
                 "completed_at": date(2026, 5, 30), "expires_at": date(2026, 6, 10)},
                {**completion, "client": "globex", "user_id": 5, "course_id": 3, "completion_status": "completed",
                 "completed_at": date(2026, 5, 1)},
            ],
        )  # fmt: skip
    return engine


def run(engine: Engine, report: ReportConfig, client: str = "acme") -> tuple[list[str], list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        header, rows = report_rows(connection, client, report, today=TODAY)
        return header, list(rows)


def keys(engine: Engine, report: ReportConfig) -> list[Any]:
    """The employee_id (users) or (employee_id, course_code) (completions) of every row."""
    _, rows = run(engine, report)
    return [row[0] if len(row) == 1 else tuple(row) for row in rows]


def test_users_source_gives_every_user_field_with_typed_values(store: Engine) -> None:
    columns = ["employee_id", "first_name", "email", "status", "user_status", "manager_id", "start_date", "phone",
               "job_title", "end_date"]  # fmt: skip
    header, rows = run(store, make_report("users", columns))
    assert header == columns
    assert rows == [
        ("E001", "Ada", "ada@example.com", "active", "active", None, date(2020, 1, 15), "0400 000 001", None, None),
        ("E002", "Bob", None, "active", "active", "E001", date(2026, 5, 20), None, None, None),
        ("E003", "Cy", "cy@example.com", "suspended", "suspended", None, None, None, None, date(2026, 5, 1)),
        ("E004", "Di", "di@example.com", "active", "active", None, None, None, "=cmd", None),
    ]
    assert all(type(row) is tuple for row in rows)


def test_group_and_custom_columns_join_once_each_and_unimported_types_are_empty(store: Engine) -> None:
    report = make_report(
        "users", ["employee_id", "group:Department", "group:Location", "group:Position", "Cost Centre"]
    )
    header, rows = run(store, report)
    assert header == ["employee_id", "Department", "Location", "Position", "Cost Centre"]
    assert rows == [
        ("E001", "Sales", "Melbourne", None, "CC-1"),
        ("E002", "Support", None, None, None),
        ("E003", "Sales", "Sydney", None, "CC-2"),
        ("E004", None, None, None, None),
    ]


def test_another_clients_users_and_groups_never_appear(store: Engine) -> None:
    _, rows = run(store, make_report("users", ["employee_id", "group:Department"]), client="globex")
    assert rows == [("G001", "Sales")]
    assert run(store, make_report("users", ["employee_id"]), client="nobody")[1] == []


def test_completions_source_joins_users_courses_and_groups_in_order(store: Engine) -> None:
    columns = ["employee_id", "group:Department", "course_code", "course_name", "completion_status",
               "completed_at", "expires_at", "score"]  # fmt: skip
    header, rows = run(store, make_report("completions", columns))
    assert header == ["employee_id", "Department", *columns[2:]]
    assert rows == [
        ("E001", "Sales", "C1", "Fire", "completed", date(2026, 5, 20), date(2027, 5, 20), Decimal("90.50")),
        ("E001", "Sales", "C2", "Privacy", "in_progress", None, None, None),
        ("E002", "Support", "C1", "Fire", "expired", date(2025, 1, 1), date(2026, 1, 1), Decimal("70.00")),
        ("E003", "Sales", "C2", "Privacy", "completed", date(2026, 5, 30), date(2026, 6, 10), None),
    ]


def test_a_session_works_as_well_as_a_connection(store: Engine) -> None:
    with Session(store) as session:
        _, rows = report_rows(session, "acme", make_report("users", ["employee_id"]), today=TODAY)
        assert [row[0] for row in rows] == ["E001", "E002", "E003", "E004"]


USERS_FILTERS = [
    ({"field": "user_status", "op": "eq", "value": "active"}, ["E001", "E002", "E004"]),
    ({"field": "status", "op": "ne", "value": "active"}, ["E003"]),
    ({"field": "first_name", "op": "eq", "value": "Ada"}, ["E001"]),
    ({"field": "email", "op": "ne", "value": "ada@example.com"}, ["E002", "E003", "E004"]),  # empty email kept
    ({"field": "employee_id", "op": "in", "value": ["E002", "E004", "E999"]}, ["E002", "E004"]),
    ({"field": "employee_id", "op": "not_in", "value": ["E002"]}, ["E001", "E003", "E004"]),
    ({"field": "email", "op": "contains", "value": "EXAMPLE.com"}, ["E001", "E003", "E004"]),
    ({"field": "job_title", "op": "contains", "value": "%"}, []),  # LIKE wildcards are literal
    ({"field": "job_title", "op": "contains", "value": "=c"}, ["E004"]),
    ({"field": "email", "op": "is_empty"}, ["E002"]),
    ({"field": "email", "op": "is_not_empty"}, ["E001", "E003", "E004"]),
    ({"field": "start_date", "op": "before", "value": "2021-01-01"}, ["E001"]),
    ({"field": "start_date", "op": "after", "value": "2020-01-15"}, ["E002"]),
    ({"field": "start_date", "op": "eq", "value": "2020-01-15"}, ["E001"]),
    ({"field": "start_date", "op": "within_days", "value": 30}, ["E002"]),
    ({"field": "end_date", "op": "before", "value": "today"}, ["E003"]),
    ({"field": "start_date", "op": "is_empty"}, ["E003", "E004"]),
    ({"field": "manager_id", "op": "eq", "value": "E001"}, ["E002"]),
    ({"field": "manager_id", "op": "is_empty"}, ["E001", "E003", "E004"]),
    ({"field": "group:Department", "op": "eq", "value": "Sales"}, ["E001", "E003"]),
    ({"field": "group:Department", "op": "ne", "value": "Sales"}, ["E002", "E004"]),  # no group counts as not Sales
    ({"field": "group:Department", "op": "in", "value": ["Sales", "Support"]}, ["E001", "E002", "E003"]),
    ({"field": "group:Department", "op": "not_in", "value": ["Sales"]}, ["E002", "E004"]),
    ({"field": "group:Location", "op": "contains", "value": "syd"}, ["E003"]),
    ({"field": "group:Location", "op": "is_empty"}, ["E002", "E004"]),
    ({"field": "group:Location", "op": "is_not_empty"}, ["E001", "E003"]),
    ({"field": "group:Position", "op": "is_empty"}, ["E001", "E002", "E003", "E004"]),
    ({"field": "group:Position", "op": "eq", "value": "Lead"}, []),
    ({"field": "custom:Cost Centre", "op": "eq", "value": "CC-2"}, ["E003"]),
    ({"field": "Cost Centre", "op": "is_empty"}, ["E002", "E004"]),
    ({"field": "custom:Cost Centre", "op": "not_in", "value": ["CC-1"]}, ["E002", "E003", "E004"]),
]


@pytest.mark.parametrize(("item", "expected"), USERS_FILTERS, ids=[f"{f['field']}-{f['op']}" for f, _ in USERS_FILTERS])
def test_users_filters(store: Engine, item: dict[str, Any], expected: list[str]) -> None:
    assert keys(store, make_report("users", ["employee_id"], [item])) == expected


COMPLETION_FILTERS = [
    ({"field": "completion_status", "op": "eq", "value": "completed"}, [("E001", "C1"), ("E003", "C2")]),
    ({"field": "completion_status", "op": "not_in", "value": ["completed", "expired"]}, [("E001", "C2")]),
    ({"field": "completed_at", "op": "within_days", "value": 30}, [("E001", "C1"), ("E003", "C2")]),
    ({"field": "completed_at", "op": "within_days", "value": 5}, [("E003", "C2")]),
    ({"field": "expires_at", "op": "after", "value": "today"}, [("E001", "C1"), ("E003", "C2")]),
    ({"field": "expires_at", "op": "before", "value": "2026-06-10"}, [("E002", "C1")]),
    (
        {"field": "completed_at", "op": "before", "value": "expires_at"},
        [("E001", "C1"), ("E002", "C1"), ("E003", "C2")],
    ),
    ({"field": "completed_at", "op": "is_empty"}, [("E001", "C2")]),
    ({"field": "score", "op": "eq", "value": "90.5"}, [("E001", "C1")]),
    ({"field": "score", "op": "in", "value": [70, 90.5]}, [("E001", "C1"), ("E002", "C1")]),
    ({"field": "score", "op": "ne", "value": 70}, [("E001", "C1"), ("E001", "C2"), ("E003", "C2")]),
    ({"field": "score", "op": "is_not_empty"}, [("E001", "C1"), ("E002", "C1")]),
    ({"field": "course_code", "op": "eq", "value": "C2"}, [("E001", "C2"), ("E003", "C2")]),
    ({"field": "course_name", "op": "contains", "value": "fir"}, [("E001", "C1"), ("E002", "C1")]),
    ({"field": "user_status", "op": "eq", "value": "suspended"}, [("E003", "C2")]),
    ({"field": "group:Department", "op": "eq", "value": "Support"}, [("E002", "C1")]),
]


@pytest.mark.parametrize(
    ("item", "expected"), COMPLETION_FILTERS, ids=[f"{f['field']}-{f['op']}" for f, _ in COMPLETION_FILTERS]
)
def test_completions_filters(store: Engine, item: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert keys(store, make_report("completions", ["employee_id", "course_code"], [item])) == expected


def test_filters_combine_with_and(store: Engine) -> None:
    report = make_report(
        "completions",
        ["employee_id", "course_code"],
        [
            {"field": "user_status", "op": "eq", "value": "active"},
            {"field": "group:Department", "op": "in", "value": ["Sales", "Support"]},
            {"field": "completed_at", "op": "within_days", "value": 30},
        ],
    )
    assert keys(store, report) == [("E001", "C1")]


def test_rows_stream_without_being_held_in_memory(engine: Engine) -> None:
    count = BATCH * 12
    with engine.begin() as connection:
        connection.execute(
            insert(User),
            [
                user(number, "acme", f"{number:06d}", f"Name{number}", job_title="x" * 200)
                for number in range(1, count + 1)
            ],
        )
    report = make_report("users", ["employee_id", "first_name", "job_title"])
    with engine.connect() as connection:
        _, rows = report_rows(connection, "acme", report, today=TODAY)
        assert not isinstance(rows, list | tuple)
        tracemalloc.start()
        seen, last = 0, ""
        for row in rows:
            assert row[0] > last  # in employee_id order
            seen, last = seen + 1, row[0]
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracemalloc.start()
        held = list(report_rows(connection, "acme", report, today=TODAY)[1])
        _, holding_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert seen == len(held) == count
    assert streaming_peak < holding_peak / 4, (streaming_peak, holding_peak)


def test_the_order_is_the_same_every_time(store: Engine) -> None:
    report = make_report("completions", ["employee_id", "course_code", "score"])
    first, second = run(store, report), run(store, report)
    assert first == second
    assert [row[:2] for row in first[1]] == sorted(row[:2] for row in first[1])


ALL_COMPLETION_COLUMNS = [
    "employee_id", "group:Department", "group:Position", "Cost Centre", "manager_id", "start_date", "end_date",
    "course_code", "completion_status", "completed_at", "score",
]  # fmt: skip


@pytest.mark.parametrize(
    "report",
    [
        make_report("completions", ALL_COMPLETION_COLUMNS),
        make_report("users", ["employee_id", "email", "status", "start_date", "end_date", "group:Location"]),
    ],
    ids=["completions", "users"],
)
def test_rows_are_exactly_what_sqlalchemy_returns_for_the_same_statement(store: Engine, report: ReportConfig) -> None:
    # The rows come from the DBAPI cursor with SQLAlchemy's own processors applied to the columns that need one:
    # values and types must be those of an ordinary execute().
    with store.connect() as connection:
        statement = report_statement(connection, "acme", report, today=TODAY)
        expected = [tuple(row) for row in connection.execute(statement)]
        _, rows = report_rows(connection, "acme", report, today=TODAY)
        got = list(rows)
    assert got == expected
    assert [[type(value) for value in row] for row in got] == [[type(value) for value in row] for row in expected]
    assert any(isinstance(value, date) for row in got for value in row)


def test_column_batches_give_the_rows_values_column_by_column(store: Engine) -> None:
    report = make_report("completions", ALL_COMPLETION_COLUMNS)
    _, expected = run(store, report)
    with store.connect() as connection:
        _, rows = report_rows(connection, "acme", report, today=TODAY)
        # group:Position was never imported: always empty (None)
        assert rows.column_types == (str, str, None, str, str, date, date, str, str, date, Decimal)
        batches = list(rows.column_batches())
        assert list(rows) == []  # the batches took every row
    got = [row for columns in batches for row in zip(*columns, strict=True)]
    assert got == expected


def test_column_batches_after_rows_were_taken_is_refused(store: Engine) -> None:
    with store.connect() as connection:
        _, rows = report_rows(connection, "acme", make_report("users", ["employee_id"]), today=TODAY)
        assert next(rows) == ("E001",)
        with pytest.raises(RuntimeError, match="column_batches"):
            rows.column_batches()
        rows.close()


def test_many_batches_of_converted_columns_arrive_whole_and_in_order(engine: Engine) -> None:
    # More than one batch, with a date column (converted on SQLite) and the rows read both ways: nothing is lost at
    # a batch boundary, including the row SQLAlchemy buffers ahead on PostgreSQL's server-side cursor.
    count = BATCH * 3 + 7
    with engine.begin() as connection:
        connection.execute(
            insert(User),
            [
                user(number, "acme", f"{number:06d}", f"Name{number}", start_date=date(2020, 1, 1 + number % 28))
                for number in range(1, count + 1)
            ],
        )
    report = make_report("users", ["employee_id", "start_date"])
    expected = [(f"{number:06d}", date(2020, 1, 1 + number % 28)) for number in range(1, count + 1)]
    with engine.connect() as connection:
        assert list(report_rows(connection, "acme", report, today=TODAY)[1]) == expected
        batches = list(report_rows(connection, "acme", report, today=TODAY)[1].column_batches())
    assert len(batches) == 4
    assert [row for columns in batches for row in zip(*columns, strict=True)] == expected
