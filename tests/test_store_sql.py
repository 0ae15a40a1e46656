"""The user store's bulk statements (ingest.store_sql) on SQLite and PostgreSQL: values round-trip, batches cross the
statement edges, and SQLite's writer thread surfaces its errors and never lets half a transaction commit."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, select, text

from core.db import Database
from core.models import Membership, User
from ingest.store_sql import (
    LADDER_FLOOR,
    USER_INSERT_COLUMNS,
    SqliteConnection,
    StoreConnection,
    _pieces,
    copy_text,
    store_connection,
)

INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)
AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "ends with a backslash\\",
    "\\N",
    "\\.",
    "\\x00ff",
    "ünïcödé 漢字 🎉",
    "quotes ' and \"",
    "",
    "  spaces  ",
]
NOW = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def conn(database: Database) -> Iterator[StoreConnection]:
    connection = store_connection(database.engine, background=True)
    try:
        yield connection
    finally:
        connection.close()


def user_row(conn: StoreConnection, ident: int, **values: Any) -> tuple[Any, ...]:
    """A users row in USER_INSERT_COLUMNS order; dates as ISO text on SQLite (what ingest.apply sends)."""
    row: dict[str, Any] = dict.fromkeys(USER_INSERT_COLUMNS)
    row.update(
        id=ident,
        client="acme",
        employee_id=f"E{ident:06d}",
        status="active",
        row_hash=ident.to_bytes(8, "big"),
        created_at=conn.time_param(NOW),
        updated_at=conn.time_param(NOW),
    )
    row.update(values)
    for column in ("start_date", "end_date"):
        if isinstance(row[column], date) and isinstance(conn, SqliteConnection):
            row[column] = row[column].isoformat()
    return tuple(row[c] for c in USER_INSERT_COLUMNS)


def stored_users(database: Database) -> dict[int, Any]:
    with database.engine.connect() as connection:
        return {row.id: row for row in connection.execute(select(User.__table__))}


def count(database: Database, table: str) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "store-sql-writer"]


# --- values --------------------------------------------------------------------------------------------------------


def test_awkward_text_none_bytes_and_dates_round_trip(conn: StoreConnection, database: Database) -> None:
    hashes = [b"\t\n\\\r\x00\xff\x10N", b"", b"\\N"]
    rows = [
        user_row(conn, i + 1, first_name=value, last_name=None, job_title=value[::-1], row_hash=hashes[i % 3])
        for i, value in enumerate(AWKWARD)
    ]
    rows.append(user_row(conn, 100, start_date=date(1999, 12, 31), end_date=date(2030, 1, 2), phone=None))
    conn.begin()
    conn.insert("users", USER_INSERT_COLUMNS, rows)
    conn.commit()

    stored = stored_users(database)
    for i, value in enumerate(AWKWARD):
        user = stored[i + 1]
        assert (user.first_name, user.last_name, user.job_title) == (value, None, value[::-1])
        assert user.row_hash == hashes[i % 3]
        assert user.created_at.replace(tzinfo=UTC) == NOW
        assert user.start_date is None
    assert (stored[100].start_date, stored[100].end_date, stored[100].phone) == (
        date(1999, 12, 31),
        date(2030, 1, 2),
        None,
    )


def test_copy_text_escapes_what_copy_reads_as_special() -> None:
    rows = [
        (1, "a\tb", None, b"\x01\xab", date(2020, 2, 29), NOW, True),
        (2, "c\\d\ne\rf", "ok", b"", date(2021, 1, 1), datetime(2021, 1, 1, 12, 0), False),
    ]
    assert copy_text(rows) == (
        "1\ta\\tb\t\\N\t\\\\x01ab\t2020-02-29\t2026-11-28 09:30:15.123456+00:00\tTrue\n"
        "2\tc\\\\d\\ne\\rf\tok\t\\\\x\t2021-01-01\t2021-01-01 12:00:00\tFalse\n"
    )
    # A column mixing types goes value by value.
    assert copy_text([(None,), ("x\ty",), (b"\x00",), (3,)]) == "\\N\nx\\ty\n\\\\x00\n3\n"


# --- batches -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [0, 1, 31, 32, 33, 100, 999, 1000, 1001, 4567])
def test_pieces_cover_every_row_once_within_the_limit_with_few_statement_texts(total: int) -> None:
    pieces = list(_pieces(total, 1000))
    assert [start for start, _ in pieces] == [sum(n for _, n in pieces[:i]) for i in range(len(pieces))]
    assert sum(n for _, n in pieces) == total
    assert all(0 < n <= 1000 for _, n in pieces)
    odd_sizes = {n for _, n in pieces} - {1000 >> k for k in range(5)}  # 1000 ... 62
    assert len(odd_sizes) <= 1 and all(n < 2 * LADDER_FLOOR for n in odd_sizes)


@pytest.mark.parametrize("max_params", [None, 100])
def test_more_rows_than_one_statement_holds(conn: StoreConnection, database: Database, max_params: int | None) -> None:
    if max_params is not None:
        if not isinstance(conn, SqliteConnection):
            pytest.skip("the parameter limit is SQLite's")
        conn.max_params = max_params  # many statements from few rows
    total = 2 * (32_000 // len(USER_INSERT_COLUMNS)) + 777  # two full statements, then the halving sizes
    users = [user_row(conn, i, first_name=f"n{i}\t") for i in range(1, total + 1)]
    memberships = [(i, t, i % 7 + 1) for i in range(1, total + 1) for t in (1, 2)]
    conn.begin()
    conn.insert("group_types", ("id", "client", "name"), [(1, "acme", "Department"), (2, "acme", "Location")])
    conn.insert("user_groups", ("id", "group_type_id", "name"), [(g, 1 + g % 2, f"g{g}") for g in range(1, 8)])
    conn.insert("users", USER_INSERT_COLUMNS, users)
    conn.insert("memberships", ("user_id", "group_type_id", "group_id"), memberships)
    conn.commit()

    stored = stored_users(database)
    assert sorted(stored) == list(range(1, total + 1))
    assert all(stored[i].first_name == f"n{i}\t" for i in (1, total // 2, total))
    with database.engine.connect() as connection:
        assert sorted(map(tuple, connection.execute(select(Membership.__table__)))) == memberships


def test_upsert_and_delete_pairs_keep_the_last_value(conn: StoreConnection, database: Database) -> None:
    conn.begin()
    conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 1), user_row(conn, 2)])
    conn.insert("custom_fields", ("id", "client", "name"), [(1, "acme", "Cost"), (2, "acme", "Desk")])
    conn.upsert_pairs("custom_values", ("user_id", "field_id", "value"), [(1, 1, "a"), (1, 2, "b"), (2, 1, "c")])
    conn.upsert_pairs("custom_values", ("user_id", "field_id", "value"), [(1, 1, "x\ty"), (2, 1, "z")])
    conn.delete_pairs("custom_values", ("user_id", "field_id"), [(1, 2)])
    assert sorted(conn.fetchall("SELECT user_id, field_id, value FROM custom_values")) == [(1, 1, "x\ty"), (2, 1, "z")]
    conn.commit()


# --- the writer thread and reads -----------------------------------------------------------------------------------


def test_reads_see_the_writes_queued_before_them(conn: StoreConnection) -> None:
    conn.begin()
    conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, i) for i in range(1, 5001)])
    assert conn.fetchall("SELECT count(*) FROM users") == [(5000,)]
    conn.executemany("UPDATE users SET last_name = ? WHERE id = ?", [("L", 7), ("M", 4999)])
    assert list(conn.rows_by_ids("SELECT id, last_name FROM users WHERE id IN ({ids})", [7, 4999])) in (
        [(7, "L"), (4999, "M")],
        [(4999, "M"), (7, "L")],
    )
    if isinstance(conn, SqliteConnection):
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 5001)])
        assert conn.new_ids("users", 2) == [5002, 5003]  # max(id) read after the queued insert ran
    conn.rollback()
    assert not store_threads()


def test_a_failed_write_surfaces_and_nothing_is_committed(conn: StoreConnection, database: Database) -> None:
    rows = [user_row(conn, i) for i in range(1, 4001)]
    conn.begin()
    with pytest.raises(INTEGRITY_ERRORS):
        conn.insert("users", USER_INSERT_COLUMNS, rows)
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 3999, employee_id="other")])  # a duplicate id
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 9999)])
        conn.commit()
    if isinstance(conn, SqliteConnection):  # the error stays until the rollback: no commit can follow it
        with pytest.raises(sqlite3.IntegrityError):
            conn.commit()
    conn.rollback()
    assert count(database, "users") == 0
    assert not store_threads()

    # The connection is usable again: a new transaction, a new writer.
    conn.begin()
    conn.insert("users", USER_INSERT_COLUMNS, rows[:10])
    conn.commit()
    assert count(database, "users") == 10


def test_close_without_commit_stops_the_writer_and_drops_the_writes(database: Database) -> None:
    conn = store_connection(database.engine, background=True)
    conn.begin()
    conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, i) for i in range(1, 3001)])
    conn.close()
    assert not store_threads()
    assert count(database, "users") == 0


def test_a_connection_bound_to_its_thread_writes_inline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bound.db'}"
    migrated = Database("test", url)
    migrated.upgrade()
    migrated.dispose()
    engine = create_engine(url, connect_args={"check_same_thread": True})
    conn = store_connection(engine, background=True)
    try:
        conn.begin()
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, i) for i in range(1, 101)])
        assert conn.fetchall("SELECT count(*) FROM users") == [(100,)]  # written (the short statement waited)
        assert isinstance(conn, SqliteConnection) and not conn.background
        conn.commit()
    finally:
        conn.close()
        engine.dispose()


def test_inserted_rows_short_of_a_statement_wait_for_more_and_are_written_before_anything_else(
    tmp_path: Path,
) -> None:
    """Batches of the applier rarely fill whole statements: the rest waits for the next batch of the same table,
    and is written before any read, update or commit, so nothing ever sees the table without it."""
    url = f"sqlite:///{tmp_path / 'short.db'}"
    database = Database("test", url)
    database.upgrade()
    conn = store_connection(database.engine)
    try:
        assert isinstance(conn, SqliteConnection)
        conn.max_params = 17 * 4  # four users a statement
        conn.begin()
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, i) for i in range(1, 7)])  # one statement, 2 wait
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, i) for i in range(7, 9)])  # 2 + 2: one statement
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 9)])  # waits
        conn.executemany("UPDATE users SET first_name = ? WHERE id = ?", [("Nine", 9)])  # ...not past this
        assert conn.fetchall("SELECT count(*), max(first_name) FROM users") == [(9, "Nine")]
        conn.insert("users", USER_INSERT_COLUMNS, [user_row(conn, 10)])
        conn.commit()
    finally:
        conn.close()
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 10
    database.dispose()


def test_constant_columns_are_bound_once_and_land_in_every_row(conn: StoreConnection, database: Database) -> None:
    """The applier sends each new user's own values and the batch's constants (client, job, times) apart."""
    columns = ("id", "employee_id", "first_name", "row_hash")
    constants = {
        "client": "acme",
        "status": "active",
        "created_job_id": 7,
        "created_at": conn.time_param(NOW),
        "updated_at": conn.time_param(NOW),
    }
    rows = [(i, f"E{i:06d}", AWKWARD[i % len(AWKWARD)], i.to_bytes(8, "big")) for i in range(1, 9001)]
    conn.begin()
    conn.insert("users", columns, rows[:5000], constants)  # statement edges, and rows left to wait for more
    conn.insert("users", columns, rows[5000:], constants)
    conn.commit()
    stored = stored_users(database)
    assert len(stored) == 9000
    for i in (1, 4999, 5000, 5001, 9000):
        user = stored[i]
        assert (user.employee_id, user.first_name, user.client, user.created_job_id) == (
            f"E{i:06d}",
            AWKWARD[i % len(AWKWARD)],
            "acme",
            7,
        )
        assert user.created_at.replace(tzinfo=UTC) == NOW and user.updated_at.replace(tzinfo=UTC) == NOW
        assert user.row_hash == i.to_bytes(8, "big") and user.status == "active"
